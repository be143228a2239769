"""Performance harness: the machine's floor, training step times and MFU per recipe, STS
evaluation speed and peak memory, printed as one report.

* Floor: the measured fp32 matmul throughput (GFLOP/s) with the torch thread count in use, and
  the model FLOPs of one training step, ``6 x non-embedding parameters x tokens`` (both views),
  with tokens counted padded (what the step computes) and unpadded (the useful part), averaged
  over the batches the timing runs see; and of one seven-task evaluation (``2 x params x tokens``).
* Training: alternating short runs (``--rounds`` x ``--round-steps``) of sentence-transformers'
  MultipleNegativesRankingLoss on (s, s) pairs (the named baseline: the same model, batch,
  sentences and optimiser) and hardcse's SimCSE, ClusterNS and HSimCSE (``cpu`` preset
  settings; HSimCSE's bank is built before its run and its cost is shown amortised over a
  250-step run). Per contender: median step time, sentences/s, MFU against the measured floor,
  ratio to the baseline.
* Contender modifiers: ``simcse+chunks4`` (``length_chunks: 4``), ``simcse+bf16`` / ``st-mnrl+bf16``
  (bfloat16 autocast, the trainer's mixed precision; MFU then against the measured bf16 peak;
  skipped with one line, like the bf16 peak, where bf16 is not native: an AVX2-only CPU
  multiplies bfloat16 ~50x slower than float32),
  ``simcse+stockdrop`` (``fast_dropout: false``: torch's dropout and SDPA, as sentence-transformers),
  ``simcse+cached64`` (``mini_batch_size: 64``, cached steps), ``+batch512`` (the batch; ``--cached`` only)
  and ``simcse+prompt`` / ``clusterns+prompt`` (``prompt: true``: template views, ``[MASK]`` state,
  template denoising; the step-time target is ``simcse+prompt`` <= 1.15 x ``simcse``; the
  floor's token counts are of the bare sentences, so MFU understates a prompt step's work).
  Each timing run is a fresh child process, so no contender inherits another's allocator state
  or caches.
* Cached steps, ``--cached 512:64``: only the recipe at batch 512 in cached mini-batches of
  64 against batch 64 uncached, each child's own peak RSS and time per sentence, and their ratios.
* Evaluation: ``benchmarks/eval_speed.py`` (hardcse vs EmbeddingSimilarityEvaluator) is run as is.
* Memory: peak resident set size of ``hardcse train --preset cpu`` (``--memory-steps`` steps,
  evaluations included) in a child process.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf.py --rounds 3 --round-steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, StepTimer, cpu_description, data_dir

from hardcse.models.precision import bf16_support, cpu_bf16_support

RECIPES = ("st-mnrl", "simcse", "clusterns", "hsimcse")
STARTED = time.perf_counter()  # the wall time printed at the end counts from here (torch imported)


def matmul_gflops(n: int = 2048, seconds: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-three ``n x n`` matmul throughput (GFLOP/s) in ``dtype`` with the current thread count.

    Each of the three trials repeats the product for at least ``seconds`` (at least once), so the
    floor takes a few seconds on any machine instead of a fixed count of products.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up (allocator, kernel choice)
    best = 0.0
    for _ in range(3):
        products = 0
        t0 = time.perf_counter()
        while True:
            torch.mm(a, b)
            products += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        best = max(best, 2 * n**3 * products / elapsed / 1e9)
    return best


def non_embedding_params(model) -> int:
    backbone = model[0].auto_model
    embed = sum(p.numel() for n, p in backbone.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in backbone.parameters()) - embed


def batch_tokens(model, sentences: list[str], batch: int, batches: int, seed: int) -> tuple[float, float]:
    """Mean padded and unpadded tokens of one view over ``batches`` random batches."""
    rng = np.random.default_rng(seed)
    padded, real = [], []
    for _ in range(batches):
        rows = rng.choice(len(sentences), size=batch, replace=False)
        mask = model.preprocess([sentences[i] for i in rows])["attention_mask"]
        padded.append(mask.numel())
        real.append(int(mask.sum()))
    return float(np.mean(padded)), float(np.mean(real))


def eval_token_count(model) -> int:
    """Tokens of every distinct sentence of the seven test sets (no truncation, as evaluated)."""
    from hardcse.data.sts import TASKS, load_tasks

    distinct = {
        s
        for subsets in load_tasks(list(TASKS), data_dir()).values()
        for p in subsets.values()
        for s in (*p.sentences1, *p.sentences2)
    }
    tokenizer = model[0].tokenizer
    return sum(len(ids) for ids in tokenizer(sorted(distinct), truncation=False)["input_ids"])


def parse_contender(name: str) -> tuple[str, dict]:
    """``'simcse+chunks4+bf16'`` -> (``simcse``, ``{"length_chunks": 4, "bf16": True}``)."""
    base, *mods = name.split("+")
    options: dict = {}
    for mod in mods:
        if mod == "bf16":
            options["bf16"] = True
        elif mod.startswith("chunks") and mod[6:].isdigit():
            options["length_chunks"] = int(mod[6:])
        elif mod == "stockdrop":
            options["fast_dropout"] = False
        elif mod.startswith("cached") and mod[6:].isdigit():
            options["mini_batch_size"] = int(mod[6:])
        elif mod.startswith("batch") and mod[5:].isdigit():
            options["batch_size"] = int(mod[5:])
        elif mod == "prompt":
            options["prompt"] = True
        elif mod in ("rows1", "rows2"):  # a cached pass: mini_batch_size rows, or both views of as many sentences
            options["rows_per_sentence"] = int(mod[4:])
        elif mod.startswith("keep") and mod[4:].isdigit():  # cached passes whose first-pass graph is kept
            options["kept_passes"] = int(mod[4:])
        elif mod in ("trimstep", "trimeach", "trimfirst", "notrim"):  # when a cached step returns freed heap pages
            policies = {"trimstep": "step", "trimeach": "mini_batch", "trimfirst": "before_replay", "notrim": "off"}
            options["release_policy"] = policies[mod]
        else:
            raise SystemExit(
                f"unknown contender modifier '{mod}' in '{name}' "
                "(use bf16, chunksN, stockdrop, cachedN, batchN, prompt, rows1, rows2, keepN, "
                "trimstep, trimeach, trimfirst or notrim)"
            )
    return base, options


def _args(out: Path, steps: int, seed: int, bf16: bool = False):
    from simcse_vs_st import plain_args  # the cpu preset's optimisation, no evaluation or saving

    args = plain_args(out, steps, seed, bf16=bf16)
    args.remove_unused_columns = False  # hardcse's dataset carries the corpus row as `label`
    return args


def time_recipe(
    name: str, sentences: list[str], steps: int, seed: int, out: Path, timer: StepTimer | None = None
) -> tuple[float, float]:
    """(median step s, bank build s) of one short run of ``name``; ``timer`` (default a new one)
    records its step times."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    import hardcse
    from hardcse.data.corpus import corpus_dataset
    from hardcse.models.dropout import enable_fast_dropout
    from hardcse.models.representation import Pooled, Prompted
    from hardcse.objectives.base import HardCSELoss
    from hardcse.training.run import build_objective

    recipe, options = parse_contender(name)
    # Settings of the cached step (+rows2, +keep0, +trim...): the loss below gets a CachedStep with them.
    step_settings = {k: options.pop(k) for k in ("release_policy", "rows_per_sentence", "kept_passes") if k in options}
    torch.manual_seed(seed)
    representation = Prompted() if options.get("prompt", False) else Pooled("cls")
    model = representation.build("default", max_seq_length=32, mlp_head=recipe != "st-mnrl")
    callbacks: list = []
    build_s = 0.0
    if recipe == "st-mnrl":
        if set(options) - {"bf16", "batch_size"}:  # (+prompt too: MNRL has no template views)
            raise SystemExit("st-mnrl takes only +bf16 (it has no length chunks and uses torch's dropout)")
        dataset = Dataset.from_dict({"anchor": sentences, "positive": sentences})
        loss = MultipleNegativesRankingLoss(model, scale=20.0)
    else:
        config = hardcse.make_config(preset="cpu", recipe=recipe, seed=seed, steps=steps, **options)
        dataset = corpus_dataset(sentences)
        t0 = time.perf_counter()
        loss, callbacks = build_objective(config, model, sentences, show_progress=False)
        build_s = time.perf_counter() - t0
        if step_settings:
            if loss.cached_step is None:
                raise SystemExit(f"{name}: the cached-step settings need a cached step (+cachedN)")
            step = dataclasses.replace(loss.cached_step, **step_settings)
            loss = HardCSELoss(model, loss.parts, loss.temperature, loss.head, encoder=loss.encoder, cached_step=step)
        if config.fast_dropout:
            enable_fast_dropout(model)
    timer = timer if timer is not None else StepTimer()
    args = _args(out, steps, seed, bf16=options.get("bf16", False))
    args.per_device_train_batch_size = options.get("batch_size", 64)  # +batchN
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        callbacks=[*callbacks, timer],
        data_collator=representation.collator(model),  # +prompt: sentences tokenised alone, wrapped per view
    )
    trainer.train()
    return timer.median(), build_s


def time_in_child(name: str, steps: int, seed: int, out: Path, threads: int | None) -> tuple[float, float]:
    """:func:`time_recipe` in a fresh process, so no contender inherits another's allocator state
    or caches."""
    cmd = [sys.executable, __file__, "--time-one", name, "--round-steps", str(steps), "--seed", str(seed)]
    cmd += ["--out", str(out)] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["step"], result["build_s"]


def cached_memory(
    recipe: str,
    batch: int,
    mini: int,
    steps: int,
    rounds: int,
    seed: int,
    threads: int | None,
    extra: tuple[str, ...] = (),
) -> None:
    """``recipe`` at ``batch`` in cached mini-batches of ``mini`` sentences against the
    uncached step at batch 64, each a ``steps``-step run in a fresh child (alternating, ``rounds``
    times): the child's own peak RSS and the median step time per sentence, and their ratios.
    ``extra`` modifiers add cached contenders (``rows2``: passes of both views of ``mini`` sentences;
    ``trimeach``, ``trimfirst``, ``notrim``: other memory-release policies)."""
    cached = f"{recipe}+batch{batch}+cached{mini}"
    names = [recipe, cached, *(f"{cached}+{mod}" for mod in extra)]
    sizes = {name: batch for name in names}
    sizes[recipe] = 64
    rows: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-cached-") as tmp:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                cmd = [sys.executable, __file__, "--time-one", name, "--round-steps", str(steps), "--seed", str(seed)]
                cmd += ["--out", str(Path(tmp) / f"{name}{r}")] + (["--threads", str(threads)] if threads else [])
                done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rows[name].append((result["rss_mb"], result["step"] / sizes[name]))
                rss, step = result["rss_mb"], result["step"]
                print(f"round {r + 1} {name:<28} {rss:.0f} MB peak RSS, {step:.3f} s/step", flush=True)
    print("\n| run | batch | peak RSS MB (rounds) | ms per sentence (median step / batch) | RSS ratio | time ratio |")
    print("|:--|--:|:--|--:|--:|--:|")
    base_rss = statistics.median(m for m, _ in rows[names[0]])
    base_t = statistics.median(t for _, t in rows[names[0]])
    for name in names:
        rss = statistics.median(m for m, _ in rows[name])
        per = statistics.median(t for _, t in rows[name])
        runs = ", ".join(f"{m:.0f}" for m, _ in rows[name])
        ratios = f"{rss / base_rss:.3f} | {per / base_t:.3f}"
        print(f"| {name} | {sizes[name]} | {rss:.0f} ({runs}) | {1000 * per:.2f} | {ratios} |")


def peak_memory_mb(steps: int, out: Path) -> tuple[float, float]:
    """(peak RSS MB, wall s) of ``hardcse train --preset cpu`` in a child process."""
    cmd = [
        str(Path(sys.executable).parent / "hardcse"),
        "train",
        "--preset",
        "cpu",
        "--steps",
        str(steps),
        "--eval-steps",
        str(max(1, steps // 2)),
        "--output",
        str(out),
        "--overwrite",
        "--data-dir",
        str(data_dir()),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--round-steps", type=int, default=20, help="steps per contender and round")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-rounds", type=int, default=1, help="eval_speed.py rounds (0: skip)")
    parser.add_argument("--memory-steps", type=int, default=20, help="steps of the memory run (0: skip)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--cached",
        default=None,
        metavar="BATCH:MINI",
        help="only compare each of --recipes at BATCH in cached mini-batches of MINI with batch 64 uncached "
        "(peak RSS, time per sentence), e.g. --cached 512:64 --recipes simcse",
    )
    parser.add_argument(
        "--cached-extra",
        default="",
        help="with --cached: more cached contenders with these modifiers, e.g. rows2,trimeach,notrim "
        "(rows2: passes of both views of MINI sentences instead of MINI rows; trimeach / trimfirst / notrim: "
        "release freed heap pages after every replayed pass / before the replay / never, instead of after it)",
    )
    parser.add_argument("--time-one", default=None, help=argparse.SUPPRESS)  # the child of time_in_child
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from hardcse.data.corpus import read_corpus
    from hardcse.models.representation import Pooled

    sentences = read_corpus(["corpus/wikipedia_vital_articles_en.sentences.txt"], data_dir())
    if args.time_one:
        step, build_s = time_recipe(args.time_one, sentences, args.round_steps, args.seed, args.out)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this child's own peak
        print(json.dumps({"step": step, "build_s": build_s, "rss_mb": rss_mb}))
        return
    if args.cached:
        batch, mini = (int(v) for v in args.cached.split(":"))
        for recipe in args.recipes.split(","):
            extra = tuple(m for m in args.cached_extra.split(",") if m)
            cached_memory(recipe, batch, mini, args.round_steps, args.rounds, args.seed, args.threads, extra)
        return
    names = args.recipes.split(",")
    for name in names:
        if "batch_size" in parse_contender(name)[1]:  # a typo fails here, not rounds later
            raise SystemExit(f"'{name}': +batchN is for --cached (the table's FLOPs and MFU are for batch 64)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    print(cpu_description(), flush=True)
    # bf16 figures only where bf16 is native: emulated, one 2048^3 bf16 product takes ~20 s and a
    # training step tens of times longer than in float32.
    cpu_native = cpu_bf16_support().native
    support = bf16_support()  # the device the contenders train on (the CPU here, unless a GPU is visible)
    if not support.native:
        skipped = [n for n in names if parse_contender(n)[1].get("bf16")]
        names = [n for n in names if n not in skipped]
        dropped = f"; contenders skipped: {', '.join(skipped)}" if skipped else ""
        print(f"bf16: not native on this {support.device} ({support.detail}): bf16 peak not measured{dropped}")
        if not names:
            raise SystemExit("every contender asked for was a +bf16 one; nothing left to time")
    elif not cpu_native:
        print("bf16: not native on this CPU: bf16 peak not measured (MFU of +bf16 contenders not shown)")
    probe = Pooled("cls").build("default", max_seq_length=32, mlp_head=False)
    params = non_embedding_params(probe)
    padded, real = batch_tokens(probe, sentences, 64, 50, args.seed)
    step_flops = 6 * params * 2 * padded  # two views of each sentence
    useful_flops = 6 * params * 2 * real
    eval_tokens = eval_token_count(probe)
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(dtype=torch.bfloat16) if cpu_native else None
    bf16_floor = f", bf16 {peak_bf16:.1f} GFLOP/s" if peak_bf16 else ""
    print(f"floor: fp32 matmul {peak:.1f} GFLOP/s{bf16_floor} (2048^3, best of 3)", flush=True)
    print(
        f"model: {params / 1e6:.2f} M non-embedding parameters; a batch of 64 x 2 views = {2 * padded:.0f} padded "
        f"tokens ({2 * real:.0f} real); training step {step_flops / 1e9:.1f} GFLOP padded, "
        f"{useful_flops / 1e9:.1f} GFLOP real; floor step time {step_flops / peak / 1e9:.3f} s"
    )
    print(
        f"evaluation: {eval_tokens} tokens (distinct sentences of the seven test sets, untruncated): "
        f"{2 * params * eval_tokens / 1e12:.2f} TFLOP, floor {2 * params * eval_tokens / peak / 1e9:.0f} s"
    )

    medians: dict[str, list[float]] = {n: [] for n in names}
    builds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                step, build_s = time_in_child(name, args.round_steps, args.seed, Path(tmp) / f"{name}{r}", args.threads)
                medians[name].append(step)
                builds[name] = max(builds.get(name, 0.0), build_s)
                print(f"round {r + 1} {name:<10} {step:.3f} s/step", flush=True)
        memory = peak_memory_mb(args.memory_steps, Path(tmp) / "memory") if args.memory_steps else None

    base = statistics.median(medians[names[0]])
    print()
    print(
        "| contender | median step s | rounds (s) | sentences/s | MFU padded | MFU real (vs fp32 / bf16 peak) "
        "| bank build s (per step over 250) | vs " + names[0] + " |"
    )
    print("|:--|--:|:--|--:|--:|--:|--:|--:|")
    for name in names:
        step = statistics.median(medians[name])
        amort = builds[name] / 250
        rounds = ", ".join(f"{m:.3f}" for m in medians[name])
        top = peak_bf16 if parse_contender(name)[1].get("bf16") else peak
        mfu = f"{step_flops / step / top / 1e9:.1%} | {useful_flops / step / top / 1e9:.1%}" if top else "n/a | n/a"
        print(
            f"| {name} | {step:.3f} | {rounds} | {64 / step:.1f} | {mfu} | {builds[name]:.1f} ({amort:.3f}) "
            f"| {(step + amort) / base:.3f} |"
        )
    if memory is not None:
        print(f"\npeak RSS of `hardcse train --preset cpu --steps {args.memory_steps}`: {memory[0]:.0f} MB")
    if args.eval_rounds:
        print("\nevaluation (benchmarks/eval_speed.py):", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "eval_speed.py"), "--rounds", str(args.eval_rounds)],
            check=True,
        )
    print(f"\nwall time of perf.py: {time.perf_counter() - STARTED:.0f} s")


if __name__ == "__main__":
    main()
