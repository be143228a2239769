"""The GPU path, checked: every recipe trained on CUDA in fp32, fp16 and bf16, in one run.

Run it through ``benchmarks/gpu_check.sh`` (which puts ``src/`` on the path and, offline, installs
wheels waiting in ``.whl/``); ``docs/gpu.md`` says how to run it on a CUDA machine and read its
report. With ``--cpu`` the same code runs on the CPU at a test's size
(``tests/test_gpu_check.py``), so the script cannot rot between GPU runs.

What it checks (each check is PASS, FAIL or SKIP with a reason; the exit status is 1 if any
check fails):

* ``environment``, ``dependencies``: versions, the device, the packages hardcse imports.
* ``same-loss/<recipe>``: one fixed batch of 16 sentences through the recipe's real objective
  (:func:`hardcse.training.run.build_objective`) on the CPU and on the device, dropout off (so
  both views are deterministic), two training-mode forward/backward passes (ClusterNS starts
  clustering on the first and uses its centroids on the second), with ``length_chunks`` 1 and 4
  (4 only in the dry run): every loss component within ``1e-5 + 1e-4 |x|``, the gradient norm
  within 1e-3 relative, the ClusterNS centroids and the HSimCSE bank within 1e-4 of the CPU's,
  the centroids kept on the device and the bank encoded there.
* ``same-loss-cached/<recipe>`` (where ``mini_batch_size`` exists): on the device, the
  cached step with mini-batches of 4 against the one-graph step, dropout off, same tolerances.
* ``train/<recipe>/<precision>``: a 4-step run of :func:`hardcse.training.run.train` (batch 16,
  STS-B dev and a checkpoint every 2 steps) on a small random BERT: finite losses and dev scores,
  the method's diagnostics (ClusterNS started and its centroid hard negatives used; HSimCSE's
  corpus searched), the objective's state (centroids, bank buffers) on the device afterwards.
* ``resume/<recipe>/<precision>``: the run cut after its step-2 checkpoint and resumed
  reproduces steps 3-4 (losses within 1e-6 relative on the CPU, 1e-3 in fp32 on CUDA, 2e-2 in
  fp16/bf16, where atomics reorder sums).
* ``export/<recipe>/<precision>``: the exported model loads with plain ``SentenceTransformer`` on
  the device and on the CPU, without the train-only head, and both give the same embeddings
  (within 1e-4).
* ``options/...``: 2-step runs of the ClusterNS variants, HSimCSE refresh/IVF and HNSW banks,
  ``length_chunks: 4`` (fp16 on CUDA) and, where this checkout has them, ``mini_batch_size``
  and the ``clusterns+hsimcse`` composition (then trained like the others);
  absent ones are SKIPs that say so.
* ``eval/stsb``: :func:`hardcse.evaluation.sts.evaluate_model` on a generated STS-B test set on the
  device and on the CPU: the same cosines (within 1e-4) and Spearman (within 0.5).
* ``timing/...``: a bert-base-shaped SimCSE step (109.5M parameters, max length 32, every
  sentence 32 tokens) through the real trainer in fp16 at batch 64 and 512, and 512 with
  ``mini_batch_size`` 64 where it exists: median step time, sentences/s, model TFLOP/s
  (``6 x non-embedding parameters x tokens``, both views) and peak GPU memory
  (``torch.cuda.max_memory_allocated``, weights and optimiser state included).

Nothing is fetched: models (random weights, generated WordPiece vocabulary), corpus and STS data
are built in a temporary folder (``benchmarks/gpu_fixtures.py``). A time budget (``--budget``,
480 s on CUDA) turns the checks still to run into SKIPs once it is spent, so the run stays under
about ten minutes; the report is rewritten after every check, so a run killed early still
leaves what it found. Report: ``gpu_check.json`` and ``gpu_check.md`` in ``--out`` (default
``$OUT``, else ``benchmarks/out/gpu_check``).

    bash benchmarks/gpu_check.sh            # on a CUDA machine
    bash benchmarks/gpu_check.sh --cpu      # dry run on the CPU (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_fixtures import BERT_BASE, SMALL, TINY, BertShape  # noqa: E402

# Importing transformers imports torch but starts no CUDA context, so --cpu can still hide the GPUs.
# If it cannot be imported, the `dependencies` check reports why (a crash here would leave no report).
try:
    from transformers import TrainerCallback
except Exception:  # noqa: BLE001
    TrainerCallback = object  # type: ignore[assignment,misc]

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
BASE_RECIPES = ("simcse", "clusterns", "hsimcse")
COMPOSITION = "clusterns+hsimcse"  # composed recipes
PRECISIONS = ("fp32", "fp16", "bf16")
TEST_TASKS = ["STSBenchmark"]
MAX_LEN = 32
#: ClusterNS at batch 16: K = 4 clusters, theta = 1 so clustering starts at the first step.
CLUSTERNS_SMALL = {"k": 4, "theta": 1.0}
#: HSimCSE over the whole small corpus (the ``cpu`` preset samples 4,096 sentences).
HSIMCSE_SMALL = {"bank_size": None}


@dataclass
class Plan:
    """Sizes of one run: the CUDA check, or the CPU dry run of the same code at a test's size."""

    device: str
    budget_s: float
    train_shape: BertShape
    time_shape: BertShape
    batch: int = 16
    steps: int = 4
    save_every: int = 2
    corpus_lines: int = 600
    time_batches: tuple[int, ...] = (64, 512)
    time_precision: str = "fp16"
    time_warmup: int = 3
    time_steps: int = 10
    time_mini_batch: int = 64
    precisions: tuple[str, ...] = PRECISIONS
    same_loss_chunks: tuple[int, ...] = (1, 4)
    mini_batch_recipes: tuple[str, ...] = BASE_RECIPES
    skipped_precisions: dict[str, str] = field(default_factory=dict)

    @property
    def dry(self) -> bool:
        return self.device == "cpu"


def make_plan(cpu: bool, budget: float | None) -> Plan:
    import torch

    if not cpu:
        plan = Plan(device="cuda", budget_s=budget or 480.0, train_shape=SMALL, time_shape=BERT_BASE)
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            plan.precisions = ("fp32", "fp16")
            plan.skipped_precisions["bf16"] = f"{torch.cuda.get_device_name(0)} has no bf16"
        return plan

    skipped = {"fp16": "fp16 needs a GPU (the trainer refuses it on the CPU); checked on CUDA only"}
    precisions: tuple[str, ...] = ("fp32",)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        precisions += ("bf16",)
    else:
        skipped["bf16"] = "this CPU has no native bf16 (oneDNN), so bf16 is checked on CUDA only"
    return Plan(
        device="cpu",
        budget_s=budget or 900.0,
        train_shape=TINY,
        time_shape=TINY,
        corpus_lines=300,
        time_batches=(8, 16),
        time_precision="fp32",
        time_warmup=1,
        time_steps=2,
        time_mini_batch=8,
        precisions=precisions,
        # Fewer variants of the same code than on CUDA, to stay a fast test on two shared cores:
        # the chunked encoding (the single pass is what every training run uses) and ClusterNS
        # (whose cluster state meets the cached step's mini-batches).
        same_loss_chunks=(4,),
        mini_batch_recipes=("clusterns",),
        skipped_precisions=skipped,
    )


# -- the report -------------------------------------------------------------------------------
class CheckFailed(Exception):
    """A check's expectation did not hold (the message is the report's detail)."""


class Skipped(Exception):
    """A check that cannot run here (the message says why)."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


class Report:
    """Every check's outcome, written as JSON and Markdown after each check."""

    def __init__(self, out: Path, plan: Plan) -> None:
        self.out = out
        self.plan = plan
        self.started = time.perf_counter()
        self.started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.environment: dict[str, Any] = {}
        self.checks: list[Check] = []
        self.timing: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def status_of(self, name: str) -> str | None:
        return next((c.status for c in self.checks if c.name == name), None)

    def run(self, name: str, fn: Callable[[], tuple[str, dict[str, Any]] | str]) -> bool:
        """Run one check: PASS when ``fn`` returns, FAIL when it raises, SKIP past the budget."""
        if self.elapsed() > self.plan.budget_s:
            self.add(Check(name, SKIP, f"time budget of {self.plan.budget_s:.0f} s spent", 0.0))
            return False
        started = time.perf_counter()
        print(f"[gpu_check {self.elapsed():6.1f}s] {name} ...", flush=True)
        try:
            result = fn()
            detail, data = (result, {}) if isinstance(result, str) else result
            check = Check(name, PASS, detail, 0.0, data)
        except Skipped as err:
            check = Check(name, SKIP, str(err), 0.0)
        except CheckFailed as err:
            check = Check(name, FAIL, str(err), 0.0)
        except Exception as err:  # a crash on the device is a finding: record it and go on
            first = (str(err).strip().splitlines() or [""])[0][:300]
            tb = traceback.format_exc().strip().splitlines()[-12:]
            check = Check(name, FAIL, f"{type(err).__name__}: {first}", 0.0, {"traceback": tb})
        check.seconds = round(time.perf_counter() - started, 2)
        self.add(check)
        _free_memory()
        return check.status == PASS

    def add(self, check: Check) -> None:
        self.checks.append(check)
        print(f"[gpu_check {self.elapsed():6.1f}s] {check.status} {check.name}: {check.detail}", flush=True)
        self.write()

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "cpu dry run" if self.plan.dry else "cuda",
            "started": self.started_at,
            "seconds": round(self.elapsed(), 1),
            "budget_s": self.plan.budget_s,
            "summary": self.counts(),
            "environment": self.environment,
            "checks": [c.__dict__ for c in self.checks],
            "timing": self.timing,
        }

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = self.as_dict()
        _write_atomic(self.out / "gpu_check.json", json.dumps(data, indent=1, default=str) + "\n")
        _write_atomic(self.out / "gpu_check.md", markdown(data))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def markdown(data: dict[str, Any]) -> str:
    """The human-readable report: environment, summary, every check, the timing table."""
    env = data["environment"]
    counts = data["summary"]
    lines = [
        f"# hardcse GPU check ({data['mode']})",
        "",
        f"{data['started']}, {data['seconds']} s (budget {data['budget_s']:.0f} s). "
        f"{counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[SKIP]} SKIP.",
        "",
    ]
    for key in ("device", "torch", "cuda", "python", "packages", "recipes", "mini_batch_size"):
        if key in env:
            lines.append(f"- {key}: {env[key]}")
    lines += ["", "| status | check | s | detail |", "|:--|:--|--:|:--|"]
    for c in data["checks"]:
        detail = str(c["detail"]).replace("|", "/").replace("\n", " ")
        lines.append(f"| {c['status']} | {c['name']} | {c['seconds']:.1f} | {detail} |")
    if data["timing"]:
        lines += [
            "",
            "Training step of a SimCSE encoder through the trainer (two views, max length 32, AdamW):",
            "",
            "| model | precision | batch | mini-batch | step ms (median) | sentences/s | tokens/s | "
            "model TFLOP/s | peak GPU GiB |",
            "|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for t in data["timing"]:
            peak = "n/a" if t["peak_gib"] is None else f"{t['peak_gib']:.2f}"
            lines.append(
                f"| {t['model']} | {t['precision']} | {t['batch']} | {t['mini_batch'] or '-'} | "
                f"{t['step_ms']:.1f} | {t['sentences_per_s']:.0f} | {t['tokens_per_s']:.0f} | "
                f"{t['model_tflops']:.2f} | {peak} |"
            )
    return "\n".join(lines) + "\n"


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the checks -------------------------------------------------------------------------------
class GPUCheck:
    """Builds the inputs once and runs every check into a :class:`Report`."""

    def __init__(self, plan: Plan, report: Report, work: Path) -> None:
        self.plan = plan
        self.report = report
        self.work = work
        self.runs: dict[str, Path] = {}

    # inputs ----------------------------------------------------------------------------------
    def prepare(self) -> str:
        import gpu_fixtures as fx

        shape = self.plan.train_shape
        self.small = fx.make_bert(self.work / "small-bert", shape)
        vocab = fx.vocabulary(shape.vocab)
        self.corpus_lines = fx.sentences(vocab, self.plan.corpus_lines, 4, 14, seed=0)
        self.corpus = fx.write_corpus(self.work / "corpus.txt", self.corpus_lines)
        self.data_dir = fx.write_stsb(self.work / "data", vocab, pairs=40)
        self._check_tokenizer(self.small, shape.vocab)
        return f"small BERT ({shape.describe()}), {len(self.corpus_lines)} corpus sentences, STS-B dev/test 40 pairs"

    @staticmethod
    def _check_tokenizer(path: Path, size: int) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
        expect(len(tok) == size, f"the generated tokenizer has {len(tok)} tokens, not {size}")
        ids = tok("zaba beca")["input_ids"]
        expect(tok.unk_token_id not in ids, f"generated words are not in the tokenizer's vocabulary: {ids}")

    def config(self, recipe: str, precision: str, output: Path, **overrides: Any):
        import hardcse

        values: dict[str, Any] = dict(
            model=str(self.small),
            corpus=[str(self.corpus)],
            data_dir=str(self.data_dir),
            test_tasks=TEST_TASKS,
            batch_size=self.plan.batch,
            steps=self.plan.steps,
            eval_steps=self.plan.save_every,
            save_total_limit=10,
            lr=5e-4,
            max_seq_length=MAX_LEN,
            eval_batch_size=64,
            length_chunks=1,  # the paper presets' single pass; options/ checks the chunks
            fp16=precision == "fp16",
            bf16=precision == "bf16",
            clusterns=dict(CLUSTERNS_SMALL),
            hsimcse=dict(HSIMCSE_SMALL),
            output=str(output),
        )
        values.update(overrides)
        return hardcse.make_config(preset="cpu", recipe=recipe, **values)

    def recipes(self) -> list[str]:
        return [*BASE_RECIPES, *([COMPOSITION] if composition_available() else [])]

    # environment ---------------------------------------------------------------------------
    def environment(self) -> tuple[str, dict[str, Any]]:
        import torch

        self.report.environment = {"packages": package_versions()}  # first, in case what follows fails
        env: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": f"{torch.version.cuda} available={torch.cuda.is_available()}",
            "cpu_threads": torch.get_num_threads(),
        }
        if self.plan.dry:
            env["device"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores), dry run"
        else:
            expect(torch.cuda.is_available(), "no CUDA device is visible; run with --cpu for the dry run")
            props = torch.cuda.get_device_properties(0)
            env["device"] = (
                f"{props.name}, compute capability {props.major}.{props.minor}, "
                f"{props.total_memory / 2**30:.1f} GiB, {props.multi_processor_count} SMs"
            )
            env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["packages"] = package_versions()
        env["recipes"] = ", ".join(self.recipes())
        env["mini_batch_size"] = "present" if mini_batch_available() else "absent (not in this checkout)"
        self.report.environment = env
        return env["device"], {}

    def dependencies(self) -> str:
        missing = []
        modules = ("torch", "transformers", "sentence_transformers", "accelerate", "datasets", "faiss", "scipy", "yaml")
        for module in (*modules, "matplotlib"):
            try:
                __import__(module)
            except Exception as err:  # an ImportError, or a version check failing inside the import
                missing.append(f"{module} ({err})")
        expect(
            not missing,
            f"missing: {', '.join(missing)}; carry their wheels in .whl/ (docs/gpu.md) and rerun",
        )
        import hardcse.index.bank  # noqa: F401  (faiss)
        import hardcse.training.run  # noqa: F401

        return "datasets, faiss and hardcse import"

    # same loss on the CPU and the device ---------------------------------------------------
    def same_loss(self, recipe: str) -> tuple[str, dict[str, Any]]:
        import torch

        from hardcse.models.representation import Pooled
        from hardcse.training.run import build_objective

        dev = torch.device(self.plan.device)
        torch.manual_seed(0)
        cpu_model = Pooled().build(str(self.small), max_seq_length=MAX_LEN, dropout=0.0)
        dev_model = copy.deepcopy(cpu_model).to(dev)
        batch = self.corpus_lines[: self.plan.batch]
        ids = torch.arange(len(batch))
        worst: dict[str, float] = {"component": 0.0, "grad_norm": 0.0, "centroids": 0.0, "bank": 0.0}
        rows = []
        for chunks in self.plan.same_loss_chunks:
            cfg = self.config(recipe, "fp32", self.work / "unused", length_chunks=chunks)
            sides = {}
            for side, model in (("cpu", cpu_model), ("device", dev_model)):
                loss, _ = build_objective(cfg, model, self.corpus_lines, show_progress=False)
                loss.to(model.device)
                sides[side] = (loss, objective_steps(model, loss, batch, ids, passes=2))
            (cpu_loss, cpu_steps), (dev_loss, dev_steps) = sides["cpu"], sides["device"]
            component, grad = compare_steps(cpu_steps, dev_steps, f"on {dev.type}", f"on the CPU (chunks {chunks})")
            worst["component"] = max(worst["component"], component)
            worst["grad_norm"] = max(worst["grad_norm"], grad)
            worst.update(compare_objective_state(cpu_loss, dev_loss, dev, worst))
            rows.append({"length_chunks": chunks, "cpu": cpu_steps, "device": dev_steps})
        against = "a second CPU copy (dry run)" if self.plan.dry else dev.type
        detail = (
            f"CPU vs {against}: loss components within {worst['component']:.1e}, gradient norm "
            f"{worst['grad_norm']:.1e} relative"
        )
        parts = parts_of(dev_loss)
        if "CentroidNegatives" in parts:
            detail += f", centroids within {worst['centroids']:.1e} (on {dev.type})"
        if "CorpusIndexNegative" in parts:
            detail += f", bank within {worst['bank']:.1e} (encoded on {dev.type})"
        return detail, {"passes": rows, "worst": worst}

    def same_loss_cached(self, recipe: str) -> tuple[str, dict[str, Any]]:
        """The cached step (``mini_batch_size``) against the one-graph step on the device:
        dropout off, so the mini-batches' embeddings equal the single pass's and so must the loss
        components and the gradient (its replayed backward runs under the device's autocast/RNG)."""
        import torch

        from hardcse.models.representation import Pooled
        from hardcse.training.run import build_objective

        dev = torch.device(self.plan.device)
        torch.manual_seed(0)
        model = Pooled().build(str(self.small), max_seq_length=MAX_LEN, dropout=0.0).to(dev)
        batch = self.corpus_lines[: self.plan.batch]
        ids = torch.arange(len(batch))
        mini = self.plan.batch // 4
        steps = {}
        for name, size in (("one graph", None), (f"mini-batch {mini}", mini)):
            cfg = self.config(recipe, "fp32", self.work / "unused", mini_batch_size=size)
            loss, _ = build_objective(cfg, model, self.corpus_lines, show_progress=False)
            loss.to(dev)
            steps[name] = objective_steps(model, loss, batch, ids, passes=2)
        (ref_name, ref), (got_name, got) = steps.items()
        component, grad = compare_steps(ref, got, f"with {got_name}", f"with {ref_name}")
        return (
            f"{got_name} vs one graph on {dev.type}: loss components within {component:.1e}, gradient norm "
            f"{grad:.1e} relative",
            {"passes": steps},
        )

    # training, resume, export --------------------------------------------------------------
    def train_run(self, recipe: str, precision: str) -> tuple[str, dict[str, Any]]:
        from hardcse.training.run import train

        out = self.work / "runs" / f"{recipe}-{precision}".replace("+", "_")
        cfg = self.config(recipe, precision, out)
        with capture_objectives() as seen:
            results = train(cfg, show_progress=False)
        self.runs[f"{recipe}/{precision}"] = out
        losses = training_losses(results)
        expect(sorted(losses) == list(range(1, self.plan.steps + 1)), f"steps logged: {sorted(losses)}")
        bad = {s: v for s, v in losses.items() if not math.isfinite(v)}
        expect(not bad, f"non-finite losses {bad}")
        norms = [e.get("grad_norm") for e in results["history"] if "loss" in e]
        expect(any(_finite(v) and v > 0 for v in norms), f"no optimiser step had a finite gradient: {norms}")
        devs = [e for e in results["history"] if "stsb_dev" in e]
        expect(
            [e["step"] for e in devs] == list(range(0, self.plan.steps + 1, self.plan.save_every)),
            f"dev evaluations at steps {[e['step'] for e in devs]}",
        )
        expect(all(_finite(e["stsb_dev"]) for e in devs), f"dev scores {[e['stsb_dev'] for e in devs]}")
        test = results["test"]["tasks"]["STSBenchmark"]["spearman"]
        expect(_finite(test), f"test Spearman {test}")
        expect(len(seen) == 1, f"{len(seen)} objectives built")
        state = objective_state_on(seen[0], self.plan.device, results["history"])
        detail = (
            f"losses {losses[1]:.3f} -> {losses[self.plan.steps]:.3f}, dev "
            f"{', '.join(format(e['stsb_dev'], '.1f') for e in devs)}, test {test:.2f}"
        )
        if state:
            detail += "; " + state
        return detail, {"losses": losses, "best_step": results["best_step"], "seconds": results["seconds"]}

    def resume_run(self, recipe: str, precision: str) -> tuple[str, dict[str, Any]]:
        from hardcse.training.run import train

        full = self.runs.get(f"{recipe}/{precision}")
        if full is None:
            raise Skipped("its training run did not pass")
        reference = json.loads((full / "results.json").read_text(encoding="utf-8"))
        cut = full.with_name(full.name + "-cut")
        shutil.copytree(full, cut)
        last = self.plan.steps
        shutil.rmtree(cut / "checkpoints" / f"checkpoint-{last}")
        for name in ("model", "results.json", "results.md", "curves.png", "test_predictions.npz"):
            path = cut / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        cfg = self.config(recipe, precision, cut)
        with capture_objectives() as seen:
            resumed = train(cfg, resume=True, show_progress=False)
        want, got = training_losses(reference), training_losses(resumed)
        expect(sorted(got) == sorted(want), f"steps after resuming: {sorted(got)}")
        rtol = 1e-6 if self.plan.dry else (1e-3 if precision == "fp32" else 2e-2)
        after = [s for s in want if s > self.plan.save_every]
        diffs = {s: abs(got[s] - want[s]) / max(abs(want[s]), 1e-12) for s in after}
        expect(
            all(d <= rtol for d in diffs.values()),
            f"resumed losses {[round(got[s], 6) for s in after]} vs uninterrupted {[round(want[s], 6) for s in after]}",
        )
        objective_state_on(seen[0], self.plan.device, resumed["history"])
        shutil.rmtree(cut, ignore_errors=True)
        worst = max(diffs.values())
        return (
            f"resumed from checkpoint-{self.plan.save_every}: steps {after} within {worst:.1e} relative "
            f"(tolerance {rtol:g})",
            {"relative_diff": diffs},
        )

    def export_reload(self, recipe: str, precision: str) -> tuple[str, dict[str, Any]]:
        import torch
        from sentence_transformers import SentenceTransformer

        from hardcse.models.head import TrainOnlyHead

        run = self.runs.get(f"{recipe}/{precision}")
        if run is None:
            raise Skipped("its training run did not pass")
        sentences = self.corpus_lines[:8]
        emb = {}
        for device in dict.fromkeys(["cpu", self.plan.device]):
            model = SentenceTransformer(str(run / "model"), device=device)
            expect(not any(isinstance(m, TrainOnlyHead) for m in model), "the export holds the train-only head")
            emb[device] = model.encode(sentences, convert_to_tensor=True).float().cpu()
            del model
        dev = emb[self.plan.device]
        expect(tuple(dev.shape) == (8, self.plan.train_shape.hidden), f"embeddings of shape {tuple(dev.shape)}")
        expect(bool(torch.isfinite(dev).all()), "non-finite embeddings")
        diff = float((dev - emb["cpu"]).abs().max())
        scale = float(emb["cpu"].abs().max())
        expect(diff <= 1e-4 * max(1.0, scale), f"device and CPU embeddings differ by {diff:.2e}")
        return f"reloaded on {self.plan.device} and cpu: embeddings within {diff:.1e}", {"max_abs_diff": diff}

    # options -------------------------------------------------------------------------------
    def option_run(self, name: str, recipe: str, precision: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
        from hardcse.training.run import train

        out = self.work / "runs" / f"option-{name}"
        cfg = self.config(recipe, precision, out, steps=2, eval_steps=2, **overrides)
        with capture_objectives() as seen:
            results = train(cfg, show_progress=False)
        losses = training_losses(results)
        expect(len(losses) == 2 and all(math.isfinite(v) for v in losses.values()), f"losses {losses}")
        state = objective_state_on(seen[0], self.plan.device, results["history"])
        shutil.rmtree(out, ignore_errors=True)
        detail = f"{precision}, losses {', '.join(f'{v:.3f}' for v in losses.values())}"
        return (detail + (f"; {state}" if state else "")), {"overrides": overrides, "losses": losses}

    # evaluation ----------------------------------------------------------------------------
    def evaluation(self) -> tuple[str, dict[str, Any]]:
        import numpy as np
        from sentence_transformers import SentenceTransformer

        from hardcse.evaluation.sts import evaluate_model

        run = self.runs.get("simcse/fp32")
        if run is None:
            raise Skipped("the simcse fp32 run did not pass")
        scores, cosines = {}, {}
        for device in dict.fromkeys(["cpu", self.plan.device]):
            model = SentenceTransformer(str(run / "model"), device=device)
            result = evaluate_model(
                model, tasks=TEST_TASKS, data_dir=self.data_dir, show_progress=False, return_predictions=True
            )
            task = result["tasks"]["STSBenchmark"]
            expect(task["pairs"] == 40, f"{task['pairs']} pairs scored, not 40")
            scores[device] = task["spearman"]
            cosines[device] = np.concatenate([c for _, c in result["predictions"]["STSBenchmark"].values()])
        dev = self.plan.device
        expect(_finite(scores[dev]), f"Spearman {scores[dev]}")
        cos_diff = float(np.abs(cosines[dev] - cosines["cpu"]).max())
        expect(cos_diff <= 1e-4, f"cosines on {dev} and cpu differ by {cos_diff:.2e}")
        expect(abs(scores[dev] - scores["cpu"]) <= 0.5, f"Spearman {scores[dev]:.3f} on {dev} vs {scores['cpu']:.3f}")
        return (
            f"STS-B test (40 generated pairs) on {dev}: Spearman {scores[dev]:.2f} (cpu {scores['cpu']:.2f}), "
            f"cosines within {cos_diff:.1e}",
            {"spearman": scores, "max_cosine_diff": cos_diff},
        )

    # timing --------------------------------------------------------------------------------
    def prepare_timing(self) -> str:
        import gpu_fixtures as fx

        shape = self.plan.time_shape
        self.base = fx.make_bert(self.work / "base-bert", shape)
        vocab = fx.vocabulary(shape.vocab)
        self._check_tokenizer(self.base, shape.vocab)
        steps = self.plan.time_warmup + self.plan.time_steps
        # Every sentence has more words than the maximum length, so each view is MAX_LEN tokens.
        lines = fx.sentences(vocab, max(self.plan.time_batches) * steps + 64, MAX_LEN + 2, MAX_LEN + 16, seed=3)
        self.time_corpus = fx.write_corpus(self.work / "time-corpus.txt", lines)
        return f"{shape.describe()}; {len(lines)} sentences of {MAX_LEN} tokens"

    def timing(self, batch: int, mini_batch: int | None) -> tuple[str, dict[str, Any]]:
        from hardcse.training.run import train

        steps = self.plan.time_warmup + self.plan.time_steps
        out = self.work / "runs" / f"timing-{batch}-{mini_batch or 0}"
        extra = {"mini_batch_size": mini_batch} if mini_batch else {}
        cfg = self.config(
            "simcse",
            self.plan.time_precision,
            out,
            model=str(self.base),
            corpus=[str(self.time_corpus)],
            batch_size=batch,
            steps=steps,
            eval_steps=steps,
            save_total_limit=1,
            lr=3e-5,
            **extra,
        )
        clock = StepClock(self.plan.device)
        results = train(cfg, callbacks=[clock], show_progress=False)
        losses = training_losses(results)
        expect(all(math.isfinite(v) for v in losses.values()), f"non-finite losses {losses}")
        expect(len(clock.ends) == steps, f"{len(clock.ends)} steps timed, not {steps}")
        intervals = [b - a for a, b in zip(clock.ends[:-1], clock.ends[1:], strict=True)]
        timed = intervals[self.plan.time_warmup - 1 :] if self.plan.time_warmup else intervals
        step_s = statistics.median(timed)
        inner_s = statistics.median(clock.durations[self.plan.time_warmup :])
        params = non_embedding_parameters(self.base)
        tokens = 2 * batch * MAX_LEN  # two views, every sentence MAX_LEN tokens (prepare_timing)
        peak = clock.peak / 2**30 if clock.peak is not None else None
        row = {
            "model": "bert-base shape" if self.plan.time_shape == BERT_BASE else "tiny (dry run)",
            "precision": self.plan.time_precision,
            "batch": batch,
            "mini_batch": mini_batch,
            "steps_timed": len(timed),
            "step_ms": 1000 * step_s,
            "step_ms_inner": 1000 * inner_s,
            "sentences_per_s": batch / step_s,
            "tokens_per_s": tokens / step_s,
            "model_tflops": 6 * params * tokens / step_s / 1e12,
            "non_embedding_params": params,
            "peak_gib": peak,
            "peak_reserved_gib": clock.peak_reserved / 2**30 if clock.peak_reserved is not None else None,
        }
        self.report.timing.append(row)
        shutil.rmtree(out, ignore_errors=True)
        mem = f", peak {peak:.2f} GiB" if peak is not None else ""
        return (
            f"{row['step_ms']:.1f} ms/step (median of {len(timed)}), {row['sentences_per_s']:.0f} sentences/s, "
            f"{row['model_tflops']:.2f} model TFLOP/s{mem}",
            row,
        )

    # the whole run -------------------------------------------------------------------------
    def run_all(self) -> None:
        r = self.report
        r.run("environment", self.environment)
        if r.status_of("environment") != PASS or not r.run("dependencies", self.dependencies):
            return
        if not r.run("prepare", self.prepare):
            return
        recipes = self.recipes()
        if COMPOSITION not in recipes:
            r.add(Check(f"recipe/{COMPOSITION}", SKIP, "not a recipe of this hardcse (no composed recipes)", 0.0))
        for recipe in recipes:
            r.run(f"same-loss/{recipe}", lambda recipe=recipe: self.same_loss(recipe))
        for precision in PRECISIONS:
            if precision not in self.plan.precisions:
                r.add(Check(f"train/*/{precision}", SKIP, self.plan.skipped_precisions[precision], 0.0))
                continue
            for recipe in recipes:
                key = f"{recipe}/{precision}"
                r.run(f"train/{key}", lambda a=recipe, b=precision: self.train_run(a, b))
                r.run(f"resume/{key}", lambda a=recipe, b=precision: self.resume_run(a, b))
                r.run(f"export/{key}", lambda a=recipe, b=precision: self.export_reload(a, b))
        r.run("eval/stsb", self.evaluation)
        # The step timings before the options: they are what the README needs if the budget runs out.
        if r.run("timing/prepare", self.prepare_timing):
            self.run_timing()
        self.run_options()

    def run_timing(self) -> None:
        r = self.report
        for batch in self.plan.time_batches:
            r.run(f"timing/batch-{batch}", lambda b=batch: self.timing(b, None))
        big = max(self.plan.time_batches)
        if mini_batch_available():
            mini = self.plan.time_mini_batch
            r.run(f"timing/batch-{big}-mini-{mini}", lambda: self.timing(big, mini))
        else:
            r.add(Check(f"timing/batch-{big}-cached", SKIP, "TrainConfig has no mini_batch_size", 0.0))

    def run_options(self) -> None:
        r = self.report
        half = "fp16" if not self.plan.dry else "fp32"
        options: list[tuple[str, str, str, dict[str, Any]]] = [
            ("simcse-length-chunks-4", "simcse", half, {"length_chunks": 4}),
            (
                "clusterns-variants",
                "clusterns",
                "fp32",
                {
                    "clusterns": {
                        **CLUSTERNS_SMALL,
                        "false_negatives": "both",
                        "bml_normalize": "masked",
                        "centroid_update": "mean",
                        "update_rule": "kmeans",
                        "reinit_empty": True,
                        "reinit_patience": 1,
                        "hard_negative_weight": 0.5,
                    }
                },
            ),
            ("hsimcse-refresh-ivf", "hsimcse", half, {"hsimcse": {"index_mode": "refresh", "refresh_steps": 1,
                                                                  "index_kind": "ivf", "bank_size": 256}}),
            ("hsimcse-hnsw-gaussian", "hsimcse", "fp32", {"hsimcse": {"index_kind": "hnsw",
                                                                     "adv_init": "unit_gaussian", "adv_iters": 2}}),
        ]  # fmt: skip
        for name, recipe, precision, overrides in options:
            r.run(f"options/{name}", lambda a=name, b=recipe, c=precision, d=overrides: self.option_run(a, b, c, **d))
        if mini_batch_available():
            for recipe in self.plan.mini_batch_recipes:
                r.run(f"same-loss-cached/{recipe}", lambda a=recipe: self.same_loss_cached(a))
                r.run(
                    f"options/mini-batch-{recipe}",
                    lambda a=recipe: self.option_run(f"mini-{a}", a, half, mini_batch_size=self.plan.batch // 4),
                )
        else:
            r.add(Check("options/mini-batch", SKIP, "TrainConfig has no mini_batch_size", 0.0))


# -- helpers ----------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def package_versions() -> str:
    from importlib import metadata

    names = (
        *("transformers", "sentence-transformers", "accelerate", "huggingface-hub", "tokenizers"),
        *("datasets", "faiss-cpu", "numpy", "pyarrow"),
    )
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


def composition_available() -> bool:
    try:
        from hardcse.objectives.registry import recipe_names
    except ImportError:  # an older hardcse without the method registry
        return False
    try:
        recipe_names(COMPOSITION)
    except Exception:  # noqa: BLE001 - any refusal means the composition cannot run
        return False
    return True


def mini_batch_available() -> bool:
    from hardcse.training.config import TrainConfig

    return "mini_batch_size" in TrainConfig.field_names()


@contextlib.contextmanager
def capture_objectives() -> Iterator[list[Any]]:
    """Record the loss objects that :func:`hardcse.training.run.train` builds (to inspect their state).

    ``train`` looks ``build_objective`` up in its module when it runs, so wrapping the module
    attribute sees the very loss the trainer uses; the original is restored on exit.
    """
    import hardcse.training.run as run

    original = run.build_objective
    seen: list[Any] = []

    def recording(*args: Any, **kwargs: Any):
        loss, callbacks = original(*args, **kwargs)
        seen.append(loss)
        return loss, callbacks

    run.build_objective = recording
    try:
        yield seen
    finally:
        run.build_objective = original


@contextlib.contextmanager
def no_plots() -> Iterator[None]:
    """The dry run writes an empty ``curves.png``: matplotlib drew it in 4 of a tiny run's 7 s on
    a 2-core CPU (cProfile), and it draws on the CPU on a GPU machine too (the CUDA run keeps it)."""
    import hardcse.training.report as report

    original = report.plot_curves
    report.plot_curves = lambda results, path: Path(path).write_bytes(b"")
    try:
        yield
    finally:
        report.plot_curves = original


def parts_of(loss: Any) -> dict[str, Any]:
    return {type(p).__name__: p for p in loss.parts}


def objective_state_on(loss: Any, device: str, history: list[dict[str, Any]]) -> str:
    """Check the objective's state after training: on ``device``, finite, and used. Returns a summary."""
    import torch

    parts = parts_of(loss)
    notes = []
    steps = [e for e in history if "loss" in e]
    if "CentroidNegatives" in parts:
        cluster = parts["CentroidNegatives"].cluster
        expect(cluster.centroids.device.type == device, f"ClusterNS centroids on {cluster.centroids.device}")
        expect(bool(cluster.started), "ClusterNS clustering never started")
        expect(bool(torch.isfinite(cluster.centroids).all()), "non-finite ClusterNS centroids")
        used = [e.get("diagnostics/hard_negative_cos") for e in steps if e.get("diagnostics/cluster_started") == 1.0]
        expect(any(_finite(v) and v != 0.0 for v in used), f"no centroid hard negative used: {used}")
        notes.append(f"centroids {tuple(cluster.centroids.shape)} on {cluster.centroids.device}")
    if "CorpusIndexNegative" in parts:
        part = parts["CorpusIndexNegative"]
        expect(part.index.size > 0, "the HSimCSE bank is empty")
        expect(part.build_seconds.device.type == device, f"HSimCSE state buffers on {part.build_seconds.device}")
        expect(part.last_ids is not None, "the HSimCSE corpus was never searched")
        quads = [e.get("quad") for e in steps]
        expect(all(_finite(v) for v in quads), f"HSimCSE quad terms {quads}")
        probe = part.search(torch.zeros(2, part.index.dim, device=device), torch.zeros(2, dtype=torch.long))
        expect(probe.device.type == device, f"corpus negatives come back on {probe.device}")
        notes.append(f"bank {part.index.size}x{part.index.dim} (faiss {part.index.kind}, CPU), searched from {device}")
    return "; ".join(notes)


def objective_steps(model: Any, loss: Any, batch: list[str], ids: Any, passes: int) -> list[dict[str, float]]:
    """``passes`` training-mode forward/backward passes of ``loss`` on one batch (no optimiser step):
    each pass's loss components, their sum and the encoder's gradient norm."""
    import torch

    model.train()
    loss.train()
    features = model.preprocess(batch) if hasattr(model, "preprocess") else model.tokenize(batch)
    features = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in features.items()}
    out = []
    for _ in range(passes):
        model.zero_grad(set_to_none=True)
        parts = loss([dict(features)], ids.to(model.device))
        total = sum(parts.values())
        total.backward()
        grads = [p.grad.detach().float().pow(2).sum() for p in model.parameters() if p.grad is not None]
        values = {k: float(v.detach()) for k, v in parts.items()}
        values["total"] = float(total.detach())
        values["grad_norm"] = float(torch.stack(grads).sum().sqrt())
        out.append(values)
    model.zero_grad(set_to_none=True)
    return out


def compare_steps(ref: list[dict[str, float]], got: list[dict[str, float]], got_label: str, ref_label: str):
    """Check ``got`` against ``ref`` pass by pass: every loss component within ``1e-5 + 1e-4 |ref|``
    (fp32 rounding of a different kernel or summation order), the gradient norm within 1e-3
    relative. Returns the largest component difference and the largest relative gradient difference."""
    component = grad = 0.0
    for step, (a, b) in enumerate(zip(ref, got, strict=True)):
        expect(set(a) == set(b), f"loss components {sorted(b)} {got_label}, {sorted(a)} {ref_label}")
        for key, want in a.items():
            value = b[key]
            where = f"{key} {value:.7g} {got_label} vs {want:.7g} {ref_label} (pass {step + 1})"
            expect(math.isfinite(value), where)
            diff = abs(value - want)
            if key == "grad_norm":
                grad = max(grad, diff / max(abs(want), 1e-12))
                expect(diff <= 1e-3 * abs(want), where)
            else:
                component = max(component, diff)
                expect(diff <= 1e-5 + 1e-4 * abs(want), where)
    return component, grad


def compare_objective_state(cpu_loss: Any, dev_loss: Any, device: Any, worst: dict[str, float]) -> dict[str, float]:
    """ClusterNS centroids and the HSimCSE bank: on the device, and equal to the CPU's within 1e-4."""
    import numpy as np

    cpu_parts, dev_parts = parts_of(cpu_loss), parts_of(dev_loss)
    found = {}
    if "CentroidNegatives" in dev_parts:
        a, b = cpu_parts["CentroidNegatives"].cluster, dev_parts["CentroidNegatives"].cluster
        expect(b.centroids.device.type == device.type, f"ClusterNS centroids on {b.centroids.device}")
        expect(bool(a.started) and bool(b.started), "ClusterNS did not start on the fixed batch")
        diff = float((b.centroids.cpu() - a.centroids).abs().max())
        expect(diff <= 1e-4, f"ClusterNS centroids differ by {diff:.2e} between {device.type} and the CPU")
        found["centroids"] = max(worst["centroids"], diff)
    if "CorpusIndexNegative" in dev_parts:
        a, b = cpu_parts["CorpusIndexNegative"].index, dev_parts["CorpusIndexNegative"].index
        diff = float(np.abs(np.asarray(b.vectors) - np.asarray(a.vectors)).max())
        expect(diff <= 1e-4, f"HSimCSE bank vectors differ by {diff:.2e} between {device.type} and the CPU")
        found["bank"] = max(worst["bank"], diff)
    return found


def training_losses(results: dict[str, Any]) -> dict[int, float]:
    return {int(e["step"]): float(e["loss"]) for e in results["history"] if e.get("loss") is not None}


def non_embedding_parameters(path: Path) -> int:
    """Parameters of the encoder without its embedding tables (what ``6 P tokens`` counts)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(path))
    h, f, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    per_layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h  # attention, feed-forward, two LayerNorms
    return layers * per_layer + (h * h + h) * 2  # pooler + the train-only head


class StepClock(TrainerCallback):
    """Wall time of each optimisation step (device synchronised) and peak device memory.

    ``durations``: step begin to step end (forward, backward, optimiser); ``ends``: the time each
    step ended, so consecutive differences also hold data loading, collation and logging.
    ``peak``: ``torch.cuda.max_memory_allocated`` over the steps (evaluation excluded: the trainer
    evaluates after ``on_step_end``), reset when training begins; ``None`` on the CPU.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.durations: list[float] = []
        self.ends: list[float] = []
        self.peak: int | None = None
        self.peak_reserved: int | None = None
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, **kwargs):
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        now = time.perf_counter()
        self.durations.append(now - self._t0)
        self.ends.append(now)
        if self.cuda:
            import torch

            self.peak = max(self.peak or 0, torch.cuda.max_memory_allocated())
            self.peak_reserved = max(self.peak_reserved or 0, torch.cuda.max_memory_reserved())


# -- entry point ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU at a test's size (no CUDA)")
    parser.add_argument("--out", default=None, help="report folder (default $OUT, else benchmarks/out/gpu_check)")
    parser.add_argument("--budget", type=float, default=None, help="seconds after which checks are skipped")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the dry run stays on the CPU on a GPU machine too
    else:
        # One GPU: on a machine with several, the trainer would wrap the model in DataParallel.
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out or os.environ.get("OUT") or HERE / "out" / "gpu_check")
    plan = make_plan(args.cpu, args.budget)
    if args.cpu:
        import torch

        # Tiny models gain nothing from a second thread, and on a shared machine OpenMP threads
        # waiting for a busy core made a tiny step take 2.7 s instead of 0.1 s (measured here).
        torch.set_num_threads(1)
    report = Report(out, plan)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hardcse-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with no_plots() if plan.dry else contextlib.nullcontext():
            GPUCheck(plan, report, work).run_all()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        report.write()
    counts = report.counts()
    print(
        f"gpu_check: {counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[SKIP]} SKIP in {report.elapsed():.0f} s; "
        f"report {out / 'gpu_check.md'}",
        flush=True,
    )
    return 1 if counts[FAIL] else 0


if __name__ == "__main__":
    sys.exit(main())
