"""hardcse SimCSE against sentence-transformers' own unsupervised SimCSE recipe, side by side.

Same model (all-MiniLM-L6-v2, CLS pooling), same sentences in the same order (same dataset
length and seed, so the trainer's sampler draws the same permutation), batch 64, lr 3e-5,
the same number of steps, no selection (the final model of each). sentence-transformers'
recipe is MultipleNegativesRankingLoss (scale 20 = tau 0.05) on (s, s) pairs: two forward
passes and two tokenisations per batch, no MLP head. Prints median step times, their ratio
and both seven-task tables.

    .venv/bin/python benchmarks/simcse_vs_st.py --steps 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import TABLE_HEAD, StepTimer, data_dir, table_row
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import hardcse
from hardcse.data.corpus import read_corpus
from hardcse.evaluation.sts import evaluate_model
from hardcse.models.representation import Pooled


def plain_args(out: Path, steps: int, seed: int, bf16: bool = False) -> SentenceTransformerTrainingArguments:
    """The cpu preset's optimisation (batch 64, lr 3e-5, linear decay, no warm-up, clip 1.0), no eval/save;
    ``bf16``: bfloat16 autocast (the trainer's mixed precision)."""
    return SentenceTransformerTrainingArguments(
        bf16=bf16,
        use_cpu=bf16 and not torch.cuda.is_available(),  # the trainer refuses CPU bf16 otherwise
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=64,
        learning_rate=3e-5,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
    )


def run_st(sentences: list[str], steps: int, seed: int, out: Path) -> tuple[StepTimer, SentenceTransformer]:
    torch.manual_seed(seed)
    model = Pooled("cls").build("default", max_seq_length=32, mlp_head=False)
    dataset = Dataset.from_dict({"anchor": sentences, "positive": sentences})
    timer = StepTimer()
    args = plain_args(out, steps, seed)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model, scale=20.0),
        callbacks=[timer],
    )
    trainer.train()
    return timer, model


def time_alternating(sentences: list[str], rounds: int, steps: int, seed: int, out: Path) -> tuple[list, list]:
    """Median step time of each side in alternating short runs (same batches, same settings).

    The machine is shared and noisy; alternating rounds expose both sides to the same load.
    """
    from hardcse.models.dropout import enable_fast_dropout
    from hardcse.objectives.base import HardCSELoss
    from hardcse.objectives.encoding import TwoViewEncoder

    preset = hardcse.make_config(preset="cpu")  # hardcse's side as `hardcse train --preset cpu` runs it
    st_medians, hc_medians = [], []
    for r in range(rounds):
        for side in ("st", "hardcse"):
            torch.manual_seed(seed)
            model = Pooled("cls").build("default", max_seq_length=32, mlp_head=side == "hardcse")
            if side == "st":
                dataset = Dataset.from_dict({"anchor": sentences, "positive": sentences})
                loss = MultipleNegativesRankingLoss(model, scale=20.0)
            else:
                dataset = Dataset.from_dict({"text": sentences, "label": list(range(len(sentences)))})
                loss = HardCSELoss(model, temperature=0.05, encoder=TwoViewEncoder(length_chunks=preset.length_chunks))
                if preset.fast_dropout:
                    enable_fast_dropout(model)
            timer = StepTimer()
            args = plain_args(out / f"t{r}{side}", steps, seed)
            SentenceTransformerTrainer(
                model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[timer]
            ).train()
            (st_medians if side == "st" else hc_medians).append(timer.median())
    return st_medians, hc_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--round-steps", type=int, default=20, help="steps per side and round")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    data = data_dir()
    sentences = read_corpus(["corpus/wikipedia_vital_articles_en.sentences.txt"], data)
    work = Path(tempfile.mkdtemp(prefix="bench-simcse-"))
    try:
        t0 = time.perf_counter()
        st_timer, st_model = run_st(sentences, args.steps, args.seed, work / "st")
        st_model.eval()
        st_scores = evaluate_model(st_model, data_dir=data, show_progress=False, model_name="st-mnrl", pooling="cls")
        st_wall = time.perf_counter() - t0

        hc_timer = StepTimer()
        t0 = time.perf_counter()
        from hardcse.training.run import train

        cfg = hardcse.make_config(
            preset="cpu",
            recipe="simcse",
            steps=args.steps,
            eval_steps=args.steps,
            seed=args.seed,
            output=str(work / "hardcse"),
        )
        results = train(cfg, overwrite=True, show_progress=False, callbacks=[hc_timer])
        hc_wall = time.perf_counter() - t0
        st_rounds, hc_rounds = time_alternating(sentences, args.rounds, args.round_steps, args.seed, work / "timing")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    st_step, hc_step = st_timer.median(), hc_timer.median()
    print(f"steps: {args.steps}, batch 64, lr 3e-5, seed {args.seed}, torch threads {torch.get_num_threads()}")
    print(f"sentence-transformers MNRL (s, s): median step {st_step:.3f} s  (run incl. eval {st_wall:.0f} s)")
    print(f"hardcse simcse                   : median step {hc_step:.3f} s  (run incl. evals {hc_wall:.0f} s)")
    print(f"step-time ratio in the full runs (hardcse / ST): {hc_step / st_step:.3f}")
    print(f"alternating timing, {args.rounds} rounds x {args.round_steps} steps per side:")
    for i, (a, b) in enumerate(zip(st_rounds, hc_rounds, strict=True)):
        print(f"  round {i + 1}: ST {a:.3f} s/step, hardcse {b:.3f} s/step, ratio {b / a:.3f}")
    import statistics

    ratio = statistics.median(b / a for a, b in zip(st_rounds, hc_rounds, strict=True))
    print(f"step-time ratio hardcse / sentence-transformers (median of rounds): {ratio:.3f}")
    print()
    print(TABLE_HEAD)
    print(table_row("sentence-transformers MNRL", st_scores))
    print(table_row("hardcse simcse", results["test"]))
    print(f"\nseven-task average difference (hardcse - ST): {results['test']['avg'] - st_scores['avg']:+.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "st_step": st_step,
                    "hardcse_step": hc_step,
                    "st_rounds": st_rounds,
                    "hardcse_rounds": hc_rounds,
                    "st": st_scores,
                    "hardcse": results["test"],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
