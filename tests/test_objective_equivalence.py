"""Every built-in recipe computes what it computed before the objective was split into parts:
the losses, each logged component, the diagnostics and the gradients on fixed batches, within 1e-6
of the committed reference (``tests/fixtures/objective_reference.pt``, written by
``tests/objective_reference.py``, which says what the cases are)."""

from __future__ import annotations

import pytest
import torch
from objective_reference import CASES, FIXTURE, compute

ATOL = 1e-6


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def current(tmp_path_factory) -> dict:
    threads = torch.get_num_threads()
    try:
        return compute(tmp_path_factory.mktemp("equivalence"))
    finally:
        torch.set_num_threads(threads)


def _close_numbers(got: dict[str, float], want: dict[str, float], where: str) -> None:
    assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=ATOL, rel=1e-6), f"{where}: {key}"


def test_the_reference_covers_every_builtin_recipe(reference):
    recipes = {recipe for _, recipe, _, _, _ in CASES}
    assert recipes == {"simcse", "clusterns", "hsimcse", "clusterns+hsimcse"}
    assert {name for name, *_ in CASES} == {key.split("/")[0] for key in reference}
    # The cases exercise what they are meant to: centroid columns and BML, the hinge, a cached step.
    assert reference["clusterns/embeddings"][1]["components"]["bml"] > 0
    assert reference["hsimcse/embeddings"][1]["diagnostics"]["hinge_active"] > 0
    assert reference["clusterns+hsimcse/embeddings"][1]["diagnostics"]["cluster_started"] == 1.0


@pytest.mark.parametrize("case", [name for name, *_ in CASES])
def test_losses_components_and_gradients_match_the_reference(case, reference, current):
    for level in ("embeddings", "model"):
        key = f"{case}/{level}"
        if key not in reference:
            continue
        assert key in current
        for step, (got, want) in enumerate(zip(current[key], reference[key], strict=True)):
            where = f"{key} step {step}"
            _close_numbers(got["components"], want["components"], where)
            if level == "embeddings":
                _close_numbers(got["diagnostics"], want["diagnostics"], where)
                torch.testing.assert_close(got["grad_z1"], want["grad_z1"], atol=ATOL, rtol=1e-6)
                torch.testing.assert_close(got["grad_z2"], want["grad_z2"], atol=ATOL, rtol=1e-6)
            else:
                g, w = got["grads"], want["grads"]
                assert g["names"] == w["names"], where
                torch.testing.assert_close(g["summary"], w["summary"], atol=ATOL, rtol=1e-6)
                for name, grad in w["full"].items():
                    torch.testing.assert_close(g["full"][name], grad, atol=ATOL, rtol=1e-6)
