"""Multi-process training through the trainer's own DDP: 2 CPU processes (gloo) x 16 sentences
reproduce 1 process x 32 sentences, step by step, for SimCSE, ClusterNS and HSimCSE.

The test launches this file with ``python -m torch.distributed.run --nproc_per_node 2`` (the
``__main__`` block below is the worker); each process calls :func:`hardcse.training.run.train`,
so the run goes through ``SentenceTransformerTrainer`` -> accelerate -> DDP exactly as a user's
``torchrun ... hardcse train`` does. Dropout is switched off, so both runs are deterministic and
the only differences are float summation orders (per-step losses agree to 1e-5). The accelerate
data loader gives rank r the per-device batches r, r+2, ... of the same seeded order, so global
step s sees exactly the 32 sentences of the single process's step s, in the same order after
gathering. Each worker also records, per step, the ClusterNS centroids and the HSimCSE bank
fingerprint, which must be bit-identical on both ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RECIPES = ("simcse", "clusterns", "hsimcse")
STEPS = 3
GLOBAL_BATCH = 32

# Every test here shares the two-process DDP runs (about 40 s on 2 cores).
pytestmark = pytest.mark.slow


def prepare(root: Path) -> None:
    """The tiny BERT, corpus and STS fixture shared by both runs."""
    from helpers import make_tiny_bert, write_all, write_corpus

    make_tiny_bert(root / "bert")
    write_corpus(root / "corpus.txt")
    write_all(root / "data", pairs=8)


def run_recipes(root: Path, out_name: str, batch_size: int) -> dict:
    """Train each recipe for a few steps; return per-step losses and objective state (this rank).

    The loss object is captured by wrapping ``build_objective`` (test instrumentation only):
    its ``compute_loss_from_embeddings`` records the exact total loss of every training step,
    and a callback records the objective's buffers after every step.
    """
    from transformers import TrainerCallback

    import hardcse
    import hardcse.training.run as run
    from hardcse import process_group as dist

    record: dict = {"rank": 0, "world": 0, "recipes": {}}
    original = run.build_objective
    for recipe in RECIPES:
        entry: dict = {"losses": [], "centroids": [], "bank": []}
        record["recipes"][recipe] = entry

        def capturing(config, model, sentences, show_progress=True, entry=entry):
            loss, callbacks = original(config, model, sentences, show_progress=show_progress)
            inner = loss.compute_loss_from_embeddings

            def recorded(z1, z2, ids=None):
                parts = inner(z1, z2, ids)
                if loss.training:
                    entry["losses"].append(float(sum(v.detach().double() for v in parts.values())))
                return parts

            loss.compute_loss_from_embeddings = recorded

            class StateRecorder(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    for name, value in loss.state_dict().items():
                        if name.endswith("cluster.centroids"):
                            entry["centroids"].append(value.tolist())
                        elif name.endswith("bank_fingerprint"):
                            entry["bank"].append(value.tolist())

            callbacks = [*callbacks, StateRecorder()]
            return loss, callbacks

        cfg = hardcse.make_config(
            recipe=recipe,
            model=str(root / "bert"),
            corpus=[str(root / "corpus.txt")],
            data_dir=str(root / "data"),
            output=str(root / out_name / recipe),
            steps=STEPS,
            eval_steps=STEPS,
            batch_size=batch_size,
            # A large step so the loss moves by much more than the tolerance between steps.
            lr=3e-3,
            dropout=0.0,
            eval_batch_size=64,
            test_tasks=["STSBenchmark"],
            # theta 1.0 starts the clustering at step 0, so steps 1+ use centroids.
            clusterns={"k": 4, "theta": 1.0},
        )
        run.build_objective = capturing
        try:
            results = run.train(cfg, show_progress=False)
        finally:
            run.build_objective = original
        entry["best_step"] = results["best_step"]
        # The trainer creates the process group, so rank and world are known only now.
        record["rank"], record["world"] = dist.rank(), dist.world_size()
    return record


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory) -> tuple[list[dict], dict]:
    root = tmp_path_factory.mktemp("ddp")
    prepare(root)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        str(root),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1)
    single = run_recipes(root, "single", GLOBAL_BATCH)
    return ranks, single


def test_two_processes_ran_ddp(both_runs):
    ranks, single = both_runs
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert single["world"] == 1


@pytest.mark.parametrize("recipe", RECIPES)
def test_two_by_16_reproduces_one_by_32(both_runs, recipe):
    ranks, single = both_runs
    reference = single["recipes"][recipe]["losses"]
    assert len(reference) == STEPS
    assert abs(reference[-1] - reference[0]) > 1e-3  # training moves the loss far beyond the tolerance
    for r in ranks:
        losses = r["recipes"][recipe]["losses"]
        assert len(losses) == STEPS
        for step, (a, b) in enumerate(zip(losses, reference, strict=True)):
            assert abs(a - b) <= 1e-5, (recipe, r["rank"], step, a, b)
    assert ranks[0]["recipes"][recipe]["best_step"] == single["recipes"][recipe]["best_step"]


def test_clusterns_state_is_identical_on_every_process(both_runs):
    ranks, single = both_runs
    states = [r["recipes"]["clusterns"]["centroids"] for r in ranks]
    assert len(states[0]) == STEPS and any(any(any(row) for row in c) for c in states[0])
    assert states[0] == states[1]  # bit-identical: both ranks cluster the same gathered batch
    ref = torch.tensor(single["recipes"]["clusterns"]["centroids"])
    assert torch.allclose(torch.tensor(states[0]), ref, atol=1e-5)
    # The centroid negatives are in play: from step 1 on the loss is no longer SimCSE's.
    clusterns, simcse = (single["recipes"][r]["losses"] for r in ("clusterns", "simcse"))
    assert abs(clusterns[1] - simcse[1]) > 1e-4


def test_hsimcse_index_is_the_same_on_every_process(both_runs):
    ranks, single = both_runs
    banks = [r["recipes"]["hsimcse"]["bank"] for r in ranks]
    assert banks[0] and banks[0] == banks[1]
    # Sharded encoding covers the whole corpus: same rows and dimension as one process's bank.
    assert banks[0][0][:2] == single["recipes"]["hsimcse"]["bank"][0][:2]
    assert abs(banks[0][0][2] - single["recipes"]["hsimcse"]["bank"][0][2]) < 1e-3


if __name__ == "__main__":
    # The worker: one process of `torch.distributed.run --nproc_per_node 2 test_distributed.py ROOT`.
    work = Path(sys.argv[1])
    result = run_recipes(work, "ddp", GLOBAL_BATCH // int(os.environ["WORLD_SIZE"]))
    (work / f"rank{result['rank']}.json").write_text(json.dumps(result), encoding="utf-8")
