"""The few facts about the process group hardcse needs (rank, world size, a barrier), in one place.

hardcse has no distribution layer of its own: ``torchrun`` / ``accelerate launch`` start the
processes and the Hugging Face trainer (through accelerate) creates the process group (gloo on
CPUs, nccl on GPUs) when its :class:`~transformers.TrainingArguments` set up their device. These
helpers only read that group, so the same code runs unchanged in a single process, where they
report rank 0 of 1 and the barrier does nothing. Every layer reads the group through them (the
loss's gather, the corpus bank's sharded encoding, the run directory's barriers).
"""

from __future__ import annotations

import os

import torch


def is_initialized() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of processes of the run (1 without a process group)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def rank_and_size() -> tuple[int, int]:
    """``(rank, world size)`` of the process group, ``(0, 1)`` without one."""
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if is_initialized() else (0, 1)


def launched_world_size() -> int:
    """Processes of the run, also before the process group exists: the group's size, else the
    launcher's ``WORLD_SIZE`` (set by ``torchrun`` and ``accelerate launch`` for every process), else 1.

    Configuration checks (the global batch a method sees) and the trainer's set-up run before the
    trainer creates the group, so they read the launcher's count through this.
    """
    if is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main_process() -> bool:
    """True on the one process that writes the run's files (global rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process has reached this point (no-op in a single process).

    Used around the run directory's files: every process checks the inputs before rank 0
    creates anything, and the others read what rank 0 wrote only after it is complete.
    """
    if world_size() > 1:
        torch.distributed.barrier()
