"""What selecting on your own 1,500-pair dev file costs: the dev evaluations' share of a run.

Writes STS-B dev (1,500 pairs) as a TSV pair file, trains SimCSE with the ``cpu`` preset on it as
``--dev`` and prints, from the trainer's own timings, the seconds spent in dev evaluations against
the seconds spent in training steps (the loop without them):

    python benchmarks/dev_pairs_cost.py --steps 100 --eval-steps 50

The target is at most 10% added by the evaluations at the preset's evaluation interval. Run it on
an otherwise idle machine (it prints the CPU it ran on).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback


class Timer(TrainerCallback):
    """The training loop's wall time and each evaluation's runtime as the trainer reports it."""

    def __init__(self) -> None:
        self.begin = 0.0
        self.loop = 0.0
        self.evaluations: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.loop = time.perf_counter() - self.begin

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_runtime" in metrics:
            self.evaluations.append(float(metrics["eval_runtime"]))


def main() -> None:
    import hardcse
    from hardcse.data.sts import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-steps", type=int, default=50, help="the cpu preset's interval (default 50)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    pairs = next(iter(load_task("STSBenchmark", args.data_dir, "dev").values()))
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp) / "dev.tsv"
        rows = ["sentence1\tsentence2\tscore"]
        rows += [f"{a}\t{b}\t{s}" for a, b, s in zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True)]
        dev.write_text("\n".join(rows) + "\n", encoding="utf-8")
        timer = Timer()
        config = hardcse.make_config(
            steps=args.steps,
            eval_steps=args.eval_steps,
            dev=str(dev),
            test_tasks=["STSBenchmark"],
            output=str(Path(tmp) / "run"),
            data_dir=args.data_dir,
        )
        from hardcse.training.run import train

        train(config, show_progress=False, callbacks=[timer])
    evaluations = sum(timer.evaluations)
    steps_only = timer.loop - evaluations
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs")
    print(f"dev file: {len(pairs)} pairs; {args.steps} steps, evaluation every {args.eval_steps} steps")
    print(f"training loop {timer.loop:.1f} s: steps {steps_only:.1f} s, {len(timer.evaluations)} dev evaluations")
    print(f"  {evaluations:.1f} s ({', '.join(f'{e:.1f}' for e in timer.evaluations)})")
    print(f"dev evaluations add {100 * evaluations / steps_only:.1f}% to the training steps' time")


if __name__ == "__main__":
    main()
