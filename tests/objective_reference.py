"""The losses, logged components, diagnostics and gradients of every built-in recipe on fixed
batches: what :mod:`test_objective_equivalence` compares the objective against.

The reference was recorded from the objective as it was before it was split into parts and
heads; it is kept in ``tests/fixtures/objective_reference.pt``. Regenerate it only on purpose
(a deliberate change of what a method computes), and say why in the commit message::

    python tests/objective_reference.py --write

Two levels are recorded for each case:

* **embeddings**: fixed random views ``z1``, ``z2`` (N = 16, d = 32, with corpus row ids) given to
  the loss for three training steps (ClusterNS starts at step 0 with ``theta = 1`` and uses its
  centroids from step 1 on): every component, every diagnostic, and the gradients of the summed
  components in ``z1`` and ``z2``;
* **model**: the tiny random BERT (two dropout views, ``torch.manual_seed`` before each step) for
  two steps, uncached and with a cached step / length chunks: every component and the gradient of
  every encoder parameter.

Everything goes through ``hardcse.training.run.build_objective``, the one way a run builds its
loss, so the cases follow the registry, the configuration and the methods' build steps.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "objective_reference.pt"

N, DIM, STEPS_EMB, STEPS_MODEL = 16, 32, 3, 2

#: (case name, recipe, method settings, config extras, prompt)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], bool]] = [
    ("simcse", "simcse", {}, {}, False),
    ("clusterns", "clusterns", {"clusterns": {"k": 4, "theta": 1.0, "bml_weight": 0.1}}, {}, False),
    (
        "clusterns-mask-weighted",
        "clusterns",
        {"clusterns": {"k": 4, "theta": 1.0, "false_negatives": "both", "hard_negative_weight": 0.5}},
        {},
        False,
    ),
    ("hsimcse", "hsimcse", {"hsimcse": {"k": 3, "margin": 0.5}}, {}, False),
    (
        "clusterns+hsimcse",
        "clusterns+hsimcse",
        {"clusterns": {"k": 4, "theta": 1.0, "bml_weight": 0.1}, "hsimcse": {"k": 3, "margin": 0.5}},
        {},
        False,
    ),
    (
        "clusterns+hsimcse-cached-chunked",
        "clusterns+hsimcse",
        {"clusterns": {"k": 4, "theta": 1.0, "bml_weight": 0.1}, "hsimcse": {"k": 3, "margin": 0.5}},
        {"mini_batch_size": 5, "length_chunks": 2},
        False,
    ),
    ("simcse-prompt", "simcse", {}, {}, True),
    ("clusterns-prompt", "clusterns", {"clusterns": {"k": 4, "theta": 1.0, "bml_weight": 0.1}}, {}, True),
]


def corpus() -> list[str]:
    """64 fixed sentences of the tiny BERT's words (row ``i`` is dataset label ``i``)."""
    sys.path.insert(0, str(HERE))
    from helpers import WORDS

    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(64):
        n = int(torch.randint(3, 11, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(0, 60, (n,), generator=g).tolist()))
    return out


def make_model(root: Path, prompt: bool):
    """The tiny random BERT (2 layers, 32 dims) as a training model, seeded, in train mode."""
    sys.path.insert(0, str(HERE))
    from helpers import make_tiny_bert

    from hardcse.models.representation import Pooled, Prompted

    path = root / "bert"
    if not (path / "config.json").is_file():
        make_tiny_bert(path)
    torch.manual_seed(1)
    representation = Prompted() if prompt else Pooled("cls")
    model = representation.build(str(path), max_seq_length=32, mlp_head=True)
    model.train()
    return model


def build_loss(recipe: str, methods: dict[str, Any], extra: dict[str, Any], model, sentences: list[str]):
    from hardcse.training.config import TrainConfig
    from hardcse.training.run import build_objective

    config = TrainConfig.from_dict({"recipe": recipe, "batch_size": N, "seed": 3, **extra, **methods})
    config.validate()
    loss, callbacks = build_objective(config, model, sentences, show_progress=False)
    # Step hooks (HSimCSE's refresh mode) are not used by these cases: official mode builds the bank here.
    assert not callbacks, callbacks
    return loss


def _diagnostics(loss) -> dict[str, float]:
    """The last step's diagnostics by their plain names (a ``diag/`` namespace is taken off),
    without the timings (``*_ms``, ``*_s``), which are not reproducible."""
    out = {}
    for key, value in dict(getattr(loss, "last_diagnostics", {})).items():
        name = key[len("diag/") :] if key.startswith("diag/") else key
        if not name.endswith(("_ms", "_s")):
            out[name] = float(value)
    return out


def embedding_case(loss) -> list[dict[str, Any]]:
    """Three training steps of the loss on fixed views; per step the components, diagnostics and
    the gradients of their sum in ``z1`` and ``z2``."""
    g = torch.Generator().manual_seed(11)
    steps = []
    for _ in range(STEPS_EMB):
        base = torch.randn(N, DIM, generator=g)
        z1 = base.clone().requires_grad_(True)
        z2 = (base + 1.5 * torch.randn(N, DIM, generator=g)).requires_grad_(True)
        ids = torch.randperm(64, generator=g)[:N]
        out = loss.compute_loss_from_embeddings(z1, z2, ids)
        total = torch.stack([v.float() for v in out.values()]).sum()
        total.backward()
        steps.append(
            {
                "components": {k: float(v.detach()) for k, v in out.items()},
                "diagnostics": _diagnostics(loss),
                "grad_z1": z1.grad.detach().clone(),
                "grad_z2": z2.grad.detach().clone(),
            }
        )
    return steps


#: Parameters whose whole gradient is kept; every parameter also has its gradient's norm and its
#: inner product with a fixed random vector (so the committed reference stays small).
FULL_GRADS = ("2.linear.weight", "2.linear.bias")


def grad_summary(model) -> dict[str, Any]:
    """``names``: the parameters with a gradient; ``summary``: per parameter ``[norm, <grad, r>]``
    (float64; ``r`` fixed per parameter name and size); ``full``: the gradients of :data:`FULL_GRADS`."""
    names, rows, full = [], [], {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        grad = p.grad.detach().double().flatten()
        seed = sum(ord(c) for c in name) * 1009 + grad.numel()
        r = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        names.append(name)
        rows.append(torch.stack([grad.norm(), grad @ r]))
        if name in FULL_GRADS:
            full[name] = p.grad.detach().clone()
    return {"names": names, "summary": torch.stack(rows), "full": full}


def model_case(loss, model, sentences: list[str], prompt: bool) -> list[dict[str, Any]]:
    """Two training steps through the encoder; per step the components and every parameter's
    gradient of their sum (parameters are not updated between the steps)."""
    steps = []
    for step in range(STEPS_MODEL):
        rows = list(range(step * N, (step + 1) * N))
        texts = [sentences[i] for i in rows]
        features = model[0].preprocess_sentences(texts) if prompt else model.preprocess(texts)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(100 + step)
        out = loss([features], torch.tensor(rows))
        total = torch.stack([v.float() for v in out.values()]).sum()
        total.backward()
        steps.append(
            {
                "components": {k: float(v.detach()) for k, v in out.items()},
                "grads": grad_summary(model),
            }
        )
    return steps


def compute(root: Path) -> dict[str, Any]:
    """Every case at both levels (``root``: a scratch directory for the tiny BERT)."""
    torch.set_num_threads(1)
    sentences = corpus()
    out: dict[str, Any] = {}
    for name, recipe, methods, extra, prompt in CASES:
        if not extra and not prompt:  # the embedding level does not depend on the encoding
            model = make_model(root, prompt)
            out[f"{name}/embeddings"] = embedding_case(build_loss(recipe, methods, extra, model, sentences))
        model = make_model(root, prompt)
        loss = build_loss(recipe, methods, extra, model, sentences)
        out[f"{name}/model"] = model_case(loss, model, sentences, prompt)
    return out


if __name__ == "__main__":
    import tempfile

    if "--write" not in sys.argv:
        sys.exit("usage: python tests/objective_reference.py --write  (overwrites the committed reference)")
    sys.path.insert(0, str(HERE.parent / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        reference = compute(Path(tmp))
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(reference, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,} bytes, {len(reference)} cases)")
