"""Two more starting-encoder constructions for a papers-like regime, built in seconds.

Both start from the bundled all-MiniLM-L6-v2 and are seeded (``--seed``, 42):

* ``noise A``: every weight matrix of the transformer layers becomes
  ``sqrt(1 - A^2) W + A std(W) eps`` with ``eps ~ N(0, 1)`` (embeddings, biases and LayerNorms
  kept): every layer keeps part of its pre-training, the parts of the features it loses are noise.
* ``rogue R,S,B``: "rogue dimensions" (Timkey and van Schijndel, EMNLP 2021; Kovaleva et al.,
  "BERT Busters", 2021: a few hidden dimensions whose LayerNorm scale and offset dwarf the rest
  dominate BERT's cosines): in the last layer's output LayerNorm, R seeded dimensions get their
  offset moved by ``B |gamma|`` (random sign) and their scale multiplied by S. The network's
  features are untouched; only the geometry of the output is distorted.

Each model is written as a plain Hugging Face directory ``OUT/noise-A`` or ``OUT/rogue-R-S-B``
(train on it with ``hardcse train --model DIR``; measure it with ``regime_candidates.py``).

Usage::

    python benchmarks/regime_constructions.py --out runs/regime noise 0.3 0.5 0.7
    python benchmarks/regime_constructions.py --out runs/regime rogue 4,40,40 2,60,60
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def _bundled():
    from sentence_transformers import SentenceTransformer

    from hardcse.models.defaults import resolve_model_name

    return SentenceTransformer(resolve_model_name("default"), device="cpu")


def _save(model, out: Path) -> None:
    model[0].auto_model.save_pretrained(out)
    model.tokenizer.save_pretrained(out)


def build_noise(amount: float, out: Path, seed: int) -> None:
    """Interpolate every encoder-layer matrix towards scaled Gaussian noise (norm-preserving mix)."""
    model = _bundled()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in model[0].auto_model.encoder.parameters():
            if weight.dim() == 2:
                noise = torch.randn(weight.shape, generator=generator)
                weight.copy_((1 - amount * amount) ** 0.5 * weight + amount * weight.std() * noise)
    _save(model, out)


def build_rogue(count: int, scale: float, offset: float, out: Path, seed: int) -> list[int]:
    """Give ``count`` seeded dimensions of the last output LayerNorm a large offset and scale."""
    model = _bundled()
    norm = model[0].auto_model.encoder.layer[-1].output.LayerNorm
    generator = torch.Generator().manual_seed(seed)
    dims = torch.randperm(norm.weight.numel(), generator=generator)[:count]
    signs = torch.randint(0, 2, (count,), generator=generator) * 2 - 1
    with torch.no_grad():
        norm.bias[dims] += offset * signs * norm.weight[dims].abs()
        norm.weight[dims] *= scale
    _save(model, out)
    return dims.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the built model directories")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("kind", choices=("noise", "rogue"))
    parser.add_argument("specs", nargs="+", help="noise: A per model; rogue: R,S,B per model")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for spec in args.specs:
        if args.kind == "noise":
            amount = float(spec)
            out = args.out / f"noise-{amount:g}"
            build_noise(amount, out, args.seed)
            print(out)
        else:
            count, scale, offset = spec.split(",")
            out = args.out / f"rogue-{int(count)}-{float(scale):g}-{float(offset):g}"
            print(out, "dims", build_rogue(int(count), float(scale), float(offset), out, args.seed))


if __name__ == "__main__":
    main()
