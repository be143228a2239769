"""Download the official STS/SICK releases and the SimCSE training corpus into the data directory.

The archives are the ones SentEval's ``get_transfer_data.bash`` fetches
and SimCSE's ``wiki1m_for_simcse.txt`` (its ``data/download_wiki.sh``). They are arranged in SentEval's
layout, which the loaders in :mod:`hardcse.data.sts` read::

    senteval/STS/STS12-en-test/   from STS2012-en-test.zip (folder test-gold)
    senteval/STS/STS13-en-test/   from STS2013-en-test.zip (test-gs)
    senteval/STS/STS14-en-test/   from STS2014-en-test.zip (sts-en-test-gs-2014)
    senteval/STS/STS15-en-test/   from STS2015-en-test.zip (test_evaluation_task2a)
    senteval/STS/STS16-en-test/   from STS2016-en-test.zip (sts2016-english-with-gs-v1.0);
                                  STS2016.gs.X.txt -> STS.gs.X.txt, STS2016.input.X.txt ->
                                  STS.input.X.txt reduced to its two sentence columns (the
                                  original is kept in upstream/ for its attribution columns)
    senteval/STS/STSBenchmark/    from Stsbenchmark.tar.gz (folder stsbenchmark)
    senteval/SICK/                from sick_{train,trial,test_annotated}.zip
    corpus/wiki1m_for_simcse.txt  SimCSE's 10^6 Wikipedia sentences

Unlike SentEval's script, the sentences are **not** Moses-tokenised or lower-cased: the files
stay as the organisers released them (the same as the project's shared data). Each download is
written under a temporary name and renamed when complete; each folder is assembled next to its
final place and swapped in at the end, so an interrupted run leaves no half-written folder.
Folders that are already complete are skipped unless ``force`` is set.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from hardcse.data.paths import resolve_data_dir
from hardcse.data.sts import STS_SUBSETS, load_task, task_files
from hardcse.errors import DataError

try:  # the installed distribution's version (not the package root: data sits below it)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _dist_version

    __version__ = _dist_version("hardcse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "unknown"

logger = logging.getLogger(__name__)

_STSWIKI = "http://ixa2.si.ehu.es/stswiki/images"
_SICK = "http://alt.qcri.org/semeval2014/task1/data/uploads"

#: Official archive per STS year.
STS_URLS: dict[str, str] = {
    "STS12": f"{_STSWIKI}/4/40/STS2012-en-test.zip",
    "STS13": f"{_STSWIKI}/2/2f/STS2013-en-test.zip",
    "STS14": f"{_STSWIKI}/8/8c/STS2014-en-test.zip",
    "STS15": f"{_STSWIKI}/d/da/STS2015-en-test.zip",
    "STS16": f"{_STSWIKI}/9/98/STS2016-en-test.zip",
}
STSB_URL = f"{_STSWIKI}/4/48/Stsbenchmark.tar.gz"
SICK_URLS: dict[str, str] = {
    "SICK_train.txt": f"{_SICK}/sick_train.zip",
    "SICK_trial.txt": f"{_SICK}/sick_trial.zip",
    "SICK_test_annotated.txt": f"{_SICK}/sick_test_annotated.zip",
}
CORPUS_URL = "https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/wiki1m_for_simcse.txt"
CORPUS_FILE = Path("corpus") / "wiki1m_for_simcse.txt"

#: Seconds without data before a download is given up.
TIMEOUT = 60

_CHUNK = 1 << 16

# Scripts and nested archives of the STS releases are not data: left out (as in shared/data).
_SKIPPED_SUFFIXES = (".pl", ".py", ".sh", ".zip", ".tgz", ".gz")


# --------------------------------------------------------------------------------------------
# Fetching


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def fetch(url: str, dest: Path, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (via ``dest.part``, renamed when complete), with a progress bar.

    Raises:
        DataError: the host cannot be reached, the server answers with an error, or the transfer
            breaks off; the sentence names the host and suggests ``--data-dir``.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": f"hardcse/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise DataError(
                f"the download of {url} stopped after {part.stat().st_size} of {total} bytes; "
                "run `hardcse download` again or point --data-dir to an existing copy."
            )
        os.replace(part, dest)
    except urllib.error.HTTPError as err:
        raise DataError(
            f"{_host(url)} answered HTTP {err.code} ({err.reason}) for {url}; try again later "
            "or point --data-dir to an existing copy."
        ) from None
    except urllib.error.URLError as err:
        raise DataError(
            f"could not reach {_host(url)} ({err.reason}); check your connection or point --data-dir "
            "to an existing copy."
        ) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise DataError(
            f"could not reach {_host(url)} ({err or type(err).__name__}); check your connection or "
            "point --data-dir to an existing copy."
        ) from None
    finally:
        part.unlink(missing_ok=True)
    return dest


# --------------------------------------------------------------------------------------------
# Reading archives (members are read by name and written by base name: nothing is extracted
# to a path chosen by the archive, so a malicious member name cannot escape the target)


def _archive_files(archive: Path) -> dict[str, bytes]:
    """``{member path: content}`` for the regular files of a (small) zip or tar archive."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}
        with tarfile.open(archive) as tf:
            return {
                m.name: tf.extractfile(m).read()  # type: ignore[union-attr]
                for m in tf.getmembers()
                if m.isfile()
            }
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError):
        raise DataError(
            f"{archive.name} is not a readable zip or tar archive (an error page or a broken transfer?); "
            "run `hardcse download --force` or point --data-dir to an existing copy."
        ) from None


def _folder_with(files: Iterable[str], predicate: Callable[[str], bool], archive: Path, what: str) -> str:
    """The archive folder holding the files whose base name satisfies ``predicate``."""
    folders = {str(PurePosixPath(f).parent) for f in files if predicate(PurePosixPath(f).name)}
    folders = {f for f in folders if "__MACOSX" not in f}
    if not folders:
        raise DataError(
            f"{archive.name} does not contain {what}; the release may have changed, so point "
            "--data-dir to an existing copy."
        )
    return sorted(folders, key=len)[0]


def _swap_in_complete(staged: Path, target: Path, archive: Path, expected: list[str]) -> None:
    """Swap ``staged`` in for ``target`` if it holds every ``expected`` file, else one DataError."""
    missing = [n for n in expected if not (staged / n).is_file()]
    if missing:
        raise DataError(
            f"{archive.name} lacks {', '.join(missing)}; the release may have changed, so point "
            "--data-dir to an existing copy."
        )
    _swap_in(staged, target)


def _swap_in(staged: Path, target: Path) -> None:
    """Replace ``target`` by the fully written folder ``staged``."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    if old.exists():
        shutil.rmtree(old)


def _staging(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


# --------------------------------------------------------------------------------------------
# Arranging


def arrange_sts_year(task: str, archive: Path, root: Path) -> Path:
    """Put the STS12-16 ``archive`` in ``root/senteval/STS/<task>-en-test`` (SentEval naming)."""
    members = _archive_files(archive)
    is_input = lambda name: name.startswith(("STS.input.", "STS2016.input.")) and name.endswith(".txt")  # noqa: E731
    folder = _folder_with(members, is_input, archive, "STS.input.*.txt files")
    target = root / "senteval" / "STS" / f"{task}-en-test"
    staged = _staging(target)
    try:
        for path, data in members.items():
            pure = PurePosixPath(path)
            if str(pure.parent) != folder or pure.suffix in _SKIPPED_SUFFIXES:
                continue
            name = pure.name
            if task == "STS16" and name.startswith("STS2016.input."):
                (staged / "upstream").mkdir(exist_ok=True)
                (staged / "upstream" / name).write_bytes(data)
                name = "STS." + name[len("STS2016.") :]
                data = _first_two_columns(data)
            elif task == "STS16" and name.startswith("STS2016.gs."):
                name = "STS." + name[len("STS2016.") :]
            (staged / name).write_bytes(data)
        expected = [n for s in STS_SUBSETS[task] for n in (f"STS.input.{s}.txt", f"STS.gs.{s}.txt")]
        _swap_in_complete(staged, target, archive, expected)
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    return target


def _first_two_columns(data: bytes) -> bytes:
    """``cut -f1,2``: keep the two sentence columns of every line (line endings preserved)."""
    lines = data.split(b"\n")
    out = []
    for line in lines:
        ending = b"\r" if line.endswith(b"\r") else b""
        fields = line.rstrip(b"\r").split(b"\t")
        out.append(b"\t".join(fields[:2]) + ending)
    return b"\n".join(out)


def arrange_stsb(archive: Path, root: Path) -> Path:
    """Put ``Stsbenchmark.tar.gz`` in ``root/senteval/STS/STSBenchmark``."""
    members = _archive_files(archive)
    folder = _folder_with(members, lambda n: n == "sts-test.csv", archive, "sts-test.csv")
    target = root / "senteval" / "STS" / "STSBenchmark"
    staged = _staging(target)
    try:
        for path, data in members.items():
            pure = PurePosixPath(path)
            if str(pure.parent) == folder and pure.suffix in (".csv", ".txt"):
                (staged / pure.name).write_bytes(data)
        _swap_in_complete(staged, target, archive, ["sts-train.csv", "sts-dev.csv", "sts-test.csv"])
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    return target


def arrange_sick(archives: dict[str, Path], root: Path) -> Path:
    """Put the three SICK zips (``{expected file name: archive}``) in ``root/senteval/SICK``."""
    target = root / "senteval" / "SICK"
    staged = _staging(target)
    try:
        for filename, archive in archives.items():
            members = _archive_files(archive)
            found = [p for p in members if PurePosixPath(p).name == filename and "__MACOSX" not in p]
            if not found:
                raise DataError(
                    f"{archive.name} does not contain {filename}; the release may have changed, so point "
                    "--data-dir to an existing copy."
                )
            (staged / filename).write_bytes(members[found[0]])
        _swap_in(staged, target)
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    return target


# --------------------------------------------------------------------------------------------
# The whole download


@dataclass
class Step:
    """One item ``download_data`` handled: its name, ``downloaded`` or ``present``, and a summary."""

    name: str
    status: str
    detail: str = ""


def _complete(root: Path, task: str) -> bool:
    splits = ("train", "dev", "test") if task in ("STSBenchmark", "SICKRelatedness") else ("test",)
    return all((root / "senteval" / rel).is_file() for split in splits for rel in task_files(task, split))


def _summary(task: str, root: Path) -> str:
    if task in STS_SUBSETS:
        return f"{sum(len(p) for p in load_task(task, root).values())} pairs"
    sizes = {split: len(load_task(task, root, split)[split]) for split in ("train", "dev", "test")}
    return " / ".join(f"{k} {v}" for k, v in sizes.items()) + " pairs"


def download_data(
    data_dir: str | Path | None = None,
    corpus: bool = True,
    force: bool = False,
    progress: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """Fetch and arrange everything (see the module docstring); return what was done.

    Args:
        data_dir: target directory (default ``$HARDCSE_DATA`` or ``~/.cache/hardcse/data``).
        corpus: also fetch ``wiki1m_for_simcse.txt`` (about 120 MB).
        force: download again even what is already complete.
        progress: show download progress bars.
        on_step: called after each item, e.g. to print it.

    Raises:
        DataError: a host cannot be reached or an archive is not what was expected (one sentence).
    """
    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    downloads = root / ".downloads"
    steps: list[Step] = []

    def done(step: Step) -> None:
        steps.append(step)
        logger.info("%s: %s %s", step.name, step.status, step.detail)
        if on_step is not None:
            on_step(step)

    def get(url: str) -> Path:
        return fetch(url, downloads / PurePosixPath(urlparse(url).path).name, progress=progress)

    try:
        for task, url in STS_URLS.items():
            if not force and _complete(root, task):
                done(Step(task, "present", _summary(task, root)))
                continue
            arrange_sts_year(task, get(url), root)
            done(Step(task, "downloaded", _summary(task, root)))
        if force or not _complete(root, "STSBenchmark"):
            arrange_stsb(get(STSB_URL), root)
            done(Step("STSBenchmark", "downloaded", _summary("STSBenchmark", root)))
        else:
            done(Step("STSBenchmark", "present", _summary("STSBenchmark", root)))
        if force or not _complete(root, "SICKRelatedness"):
            arrange_sick({name: get(url) for name, url in SICK_URLS.items()}, root)
            done(Step("SICKRelatedness", "downloaded", _summary("SICKRelatedness", root)))
        else:
            done(Step("SICKRelatedness", "present", _summary("SICKRelatedness", root)))
        if corpus:
            target = root / CORPUS_FILE
            status = "present"
            if force or not target.is_file():
                fetch(CORPUS_URL, target, progress=progress)
                status = "downloaded"
            with open(target, "rb") as f:
                lines = sum(1 for _ in f)
            done(Step("corpus", status, f"{lines} lines in {CORPUS_FILE}"))
    finally:
        if downloads.exists():
            shutil.rmtree(downloads, ignore_errors=True)
    return steps
