"""The repository speaks of the project only: no numbered work sessions, no numbered issues of a
private tracker, no absolute paths of the machine a file was written on.

Every text file git tracks is scanned (documentation, code, tests, configurations, committed
results). An issue of a public upstream project stays when it names the project
("SimCSE issue #218", "mteb issues #2804, #1176"); what a reader cannot look up does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Public projects whose trackers a text may cite ("<project> issue #N").
UPSTREAM = (
    "SimCSE",
    "ClusterNS",
    "HSimCSE",
    "PromptBERT",
    "mteb",
    "transformers",
    "sentence-transformers",
    "accelerate",
    "datasets",
    "tokenizers",
    "torch",
    "pytorch",
    "faiss",
    "typer",
    "click",
    "rich",
    "tensorboard",
    "wandb",
    "mlflow",
    "trackio",
)

_UPSTREAM_NAME = "|".join(re.escape(name) for name in UPSTREAM)

#: (what it is, pattern) for each kind of text that must not appear.
FORBIDDEN: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a numbered session", re.compile(r"\bsessions?[ _-]?\d+", re.IGNORECASE)),
    # An issue number with a space, hyphen or underscore ("issue N"): a tracker the reader cannot see.
    ("an issue number without its project", re.compile(r"\bissues?[ _-]\d+", re.IGNORECASE)),
    ("an absolute path of the build machine", re.compile(r"(?<![\w.~])/(?:work|root)/|(?<![\w.~])/home/[\w.-]+")),
    # Notes kept beside the repository, not in it: a reader of the repository cannot open them.
    ("a file outside the repository", re.compile(r"\b(?:METHODS|DESIGN|ECOSYSTEM|SOURCES)\.md\b")),
)

#: An issue number with "#" is only allowed right after the public project (or owner/project) it
#: belongs to, as in the examples below.
NUMBERED_ISSUE = re.compile(r"\bissues? #\d+", re.IGNORECASE)
PROJECT_BEFORE = re.compile(rf"(?:\b(?:{_UPSTREAM_NAME})|\b[\w.-]+/[\w.-]+)\s+$", re.IGNORECASE)


def violations(text: str) -> list[tuple[int, str, str]]:
    """``(line number, kind, the offending text)`` for every forbidden text in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in FORBIDDEN:
            for match in pattern.finditer(line):
                found.append((number, kind, match.group(0)))
        for match in NUMBERED_ISSUE.finditer(line):
            if not PROJECT_BEFORE.search(line[: match.start()]):
                found.append((number, "an issue number without its project", match.group(0)))
    return found


def _tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode(
        "utf-8", "surrogateescape"
    )
    files = []
    for name in filter(None, listing.split("\0")):
        path = REPO / name
        if path.is_file():
            files.append(path)
    return files


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (images, numpy archives)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# The examples are assembled from pieces so this file does not hold what it forbids.
_S, _I, _W = "Ses" + "sion", "is" + "sue", "/" + "work"


@pytest.mark.parametrize(
    "bad",
    [
        f"## {_S} 11: what the methods do",
        f"the {_S.lower()}-3 fp32 figure",
        f"({_I} 15's target)",
        f"{_I.capitalize()} 21: an AVX2-only CPU",
        f"the {_I}-7 table",
        f"{_I}s 15 and 17",
        f"see {_I} #15 for details",
        f"cp -r runs {_W}/compare/cpu",
        "python perf.py --out /" + "root/perf",
        "data in /" + "home/alice/data",
        "(spec/METHODS" + ".md section 6)",
        "the layers of DESIGN" + ".md",
        "(shared/data/SOURCES" + ".md)",
    ],
)
def test_the_patterns_catch_internal_references(bad):
    assert violations(bad), bad


@pytest.mark.parametrize(
    "good",
    [
        f"SimCSE {_I} #218 reports 75.6",
        f"SimCSE {_I}s #53 and #258",
        f"mteb {_I}s #2804, #1176",
        f"transformers {_I} #123",
        f"huggingface/transformers {_I} #43744",
        "https://github.com/princeton-nlp/SimCSE/" + _I + "s/218",
        "runs/compare/cpu/simcse-s42",
        "~/.cache/hardcse" + _W + "/x",
        "a 2-core CPU in one session of training",
        "/sys/hardcse-test-run",
    ],
)
def test_the_patterns_leave_public_references_alone(good):
    assert not violations(good), violations(good)


def test_the_repository_speaks_of_itself_only():
    problems = []
    for path in _tracked_text_files():
        text = _text(path)
        if text is None:
            continue
        for number, kind, found in violations(text):
            problems.append(f"{path.relative_to(REPO)}:{number}: {kind}: {found!r}")
    assert not problems, "\n".join(problems)
