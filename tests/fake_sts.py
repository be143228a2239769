"""Small hand-made STS/SICK data directories in SentEval's layout, for fast tests."""

from __future__ import annotations

from pathlib import Path

from hardcse.data.sts import STS_SUBSETS

_WORDS = (
    "a man is playing a guitar woman slices an onion the dog runs in park two children play "
    "football cat sleeps on sofa bird flies over lake"
).split()


def sentence(i: int, j: int) -> str:
    """A deterministic short sentence; different (i, j) give different sentences."""
    n = 3 + (i + j) % 4
    return " ".join(_WORDS[(i * 7 + j * 3 + k * 5) % len(_WORDS)] for k in range(n)) + f" {i}x{j}"


def write_sts_year(root: Path, task: str, pairs: int = 4, blank_every: int = 0) -> None:
    """STS12-16 files under ``root/senteval/STS/<task>-en-test``; ``blank_every`` inserts unscored lines."""
    folder = root / "senteval" / "STS" / f"{task}-en-test"
    folder.mkdir(parents=True, exist_ok=True)
    for s, subset in enumerate(STS_SUBSETS[task]):
        inputs, golds = [], []
        for i in range(pairs):
            if blank_every and i % blank_every == 0:
                inputs.append(f"unscored {s} {i}\tnot scored {i}")
                golds.append("")
            inputs.append(f"{sentence(s, i)}\t{sentence(s, i + 100)}")
            golds.append(f"{(i * 1.3 + s) % 5:.3f}")
        (folder / f"STS.input.{subset}.txt").write_text("\n".join(inputs) + "\n", encoding="utf-8")
        (folder / f"STS.gs.{subset}.txt").write_text("\n".join(golds) + "\n", encoding="utf-8")


def write_stsb(root: Path, pairs: int = 5) -> None:
    """sts-{train,dev,test}.csv with 7 columns, a 9-column row and a stray quote."""
    folder = root / "senteval" / "STS" / "STSBenchmark"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(pairs):
            cols = ["main-captions", "MSRvid", "2012test", f"{i:04d}", f"{(i * 0.9) % 5:.3f}"]
            cols += [sentence(7, i) + ' "quoted', sentence(8, i)]
            if i == 1:
                cols += ["source-a", "source-b"]
            rows.append("\t".join(cols))
        (folder / f"sts-{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_sick(root: Path, pairs: int = 5) -> None:
    """SICK_{train,trial,test_annotated}.txt with a header; the test file has CRLF endings."""
    folder = root / "senteval" / "SICK"
    folder.mkdir(parents=True, exist_ok=True)
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        rows = [header]
        for i in range(pairs):
            rows.append(f"{i + 1}\t{sentence(9, i)}\t{sentence(10, i)}\t{1 + (i * 0.7) % 4:.1f}\tNEUTRAL")
        newline = "\r\n" if "test" in name else "\n"
        (folder / name).write_bytes((newline.join(rows) + newline).encode("utf-8"))


def write_all(root: Path, pairs: int = 4) -> Path:
    """Every task, with a few pairs each (STS15/16 with blank gold lines as in the real files)."""
    for task in STS_SUBSETS:
        write_sts_year(root, task, pairs, blank_every=3 if task in ("STS15", "STS16") else 0)
    write_stsb(root, pairs + 1)
    write_sick(root, pairs + 1)
    return root
