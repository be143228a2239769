"""``hardcse download``: offline failure, fetching, and arranging small hand-built release archives."""

from __future__ import annotations

import io
import shutil
import socket
import tarfile
import urllib.error
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
from helpers import assert_one_sentence_error, run_cli, write_sick, write_sts_year, write_stsb

import hardcse.data.download as dl
from hardcse.data.sts import STS_SUBSETS, load_tasks
from hardcse.errors import DataError

RELEASE_FOLDERS = {
    "STS12": "test-gold",
    "STS13": "test-gs",
    "STS14": "sts-en-test-gs-2014",
    "STS15": "test_evaluation_task2a",
    "STS16": "sts2016-english-with-gs-v1.0",
}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def build_releases(tmp: Path, drop: str | None = None) -> dict[str, Path]:
    """Small archives shaped like the official releases, keyed by download file name."""
    src = tmp / "src"
    archives: dict[str, Path] = {}
    out = tmp / "archives"
    out.mkdir(parents=True)
    for task, folder in RELEASE_FOLDERS.items():
        write_sts_year(src, task, pairs=3, blank_every=2 if task == "STS16" else 0)
        files = src / "senteval" / "STS" / f"{task}-en-test"
        members = {f"{folder}/00-readme.txt": b"readme\n", f"{folder}/correlation.pl": b"print 1;\n"}
        for path in sorted(files.iterdir()):
            name, data = path.name, path.read_bytes()
            if drop and name == drop:
                continue
            if task == "STS16":  # official names, and 4 input columns (sentences + source notes)
                name = name.replace("STS.", "STS2016.", 1)
                if ".input." in name:
                    data = b"\n".join(line + b"\tsource-1\tsource-2" if line else line for line in data.split(b"\n"))
            members[f"{folder}/{name}"] = data
        members[f"{folder}/../../evil.txt"] = b"must not escape\n"  # a hostile member name
        url_name = PurePosixPath(urlparse(dl.STS_URLS[task]).path).name
        archives[url_name] = _zip(out / url_name, members)

    write_stsb(src)
    with tarfile.open(out / "Stsbenchmark.tar.gz", "w:gz") as tf:
        for path in sorted((src / "senteval" / "STS" / "STSBenchmark").iterdir()):
            tf.add(path, arcname=f"stsbenchmark/{path.name}")
        info = tarfile.TarInfo("stsbenchmark/correlation.pl")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"1;\n"))
    archives["Stsbenchmark.tar.gz"] = out / "Stsbenchmark.tar.gz"

    write_sick(src)
    for filename, url in dl.SICK_URLS.items():
        url_name = PurePosixPath(urlparse(url).path).name
        data = (src / "senteval" / "SICK" / filename).read_bytes()
        archives[url_name] = _zip(out / url_name, {filename: data, f"__MACOSX/._{filename}": b"junk"})

    (out / "wiki1m_for_simcse.txt").write_text("YMCA in South Australia\nsecond line\nthird line\n")
    archives["wiki1m_for_simcse.txt"] = out / "wiki1m_for_simcse.txt"
    return archives


@pytest.fixture
def releases(tmp_path, monkeypatch):
    """Replace the network by the hand-built archives; record the fetched URLs."""
    archives = build_releases(tmp_path)
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path, progress: bool = True) -> Path:
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archives[PurePosixPath(urlparse(url).path).name], dest)
        return dest

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    return fetched


def test_download_arranges_the_senteval_layout(tmp_path, releases):
    root = tmp_path / "data"
    steps = dl.download_data(root, corpus=True, progress=False)
    assert [s.name for s in steps] == ["STS12", "STS13", "STS14", "STS15", "STS16"] + [
        "STSBenchmark",
        "SICKRelatedness",
        "corpus",
    ]
    assert {s.status for s in steps} == {"downloaded"}
    assert steps[0].detail == "15 pairs" and steps[-1].detail.startswith("3 lines")
    assert len(releases) == 5 + 1 + 3 + 1

    data = load_tasks(data_dir=root)
    assert {task: list(subsets) for task, subsets in data.items() if task in STS_SUBSETS} == {
        task: list(subsets) for task, subsets in STS_SUBSETS.items()
    }
    sts16 = root / "senteval" / "STS" / "STS16-en-test"
    first = (sts16 / "STS.input.headlines.txt").read_text().splitlines()[0]
    assert first.count("\t") == 1  # reduced to the two sentence columns
    assert (sts16 / "upstream" / "STS2016.input.headlines.txt").read_text().count("source-1") > 0
    assert len(data["STS16"]["headlines"]) == 3  # blank gold lines still skipped
    assert not list(root.rglob("*.pl")) and not list(root.rglob("._*"))
    assert (root / "corpus" / "wiki1m_for_simcse.txt").read_text().startswith("YMCA")
    assert len(data["STSBenchmark"]["test"]) == 5 and len(data["SICKRelatedness"]["test"]) == 5
    assert not (root / ".downloads").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not [p for p in root.rglob(".*") if p.name != ".downloads"]  # no staging folders left


def test_download_skips_what_is_present_and_force_refetches(tmp_path, releases):
    root = tmp_path / "data"
    dl.download_data(root, corpus=False, progress=False)
    count = len(releases)
    steps = dl.download_data(root, corpus=False, progress=False)
    assert {s.status for s in steps} == {"present"} and len(releases) == count
    (root / "senteval" / "STS" / "STS14-en-test" / "STS.gs.images.txt").unlink()
    steps = dl.download_data(root, corpus=False, progress=False)
    assert [s.name for s in steps if s.status == "downloaded"] == ["STS14"]
    dl.download_data(root, corpus=False, force=True, progress=False)
    assert len(releases) == count + 1 + 9


def test_download_cli(tmp_path, releases, monkeypatch, capsys):
    code, stdout, err = run_cli(["download", "--data-dir", str(tmp_path / "d"), "--no-corpus"], monkeypatch, capsys)
    assert code == 0, err
    out = stdout.splitlines()
    assert out[0] == f"data directory: {tmp_path / 'd'}"
    assert out[1].split() == ["STS12", "downloaded", "15", "pairs"]
    assert out[6].split()[:2] == ["STSBenchmark", "downloaded"] and "train 5 / dev 5 / test 5" in out[6]
    assert out[-1] == f"done: the data is in {tmp_path / 'd'}"
    assert not any("wiki1m" in url for url in releases)


def test_archive_without_a_subset_is_refused(tmp_path, monkeypatch):
    archives = build_releases(tmp_path, drop="STS.gs.FNWN.txt")
    with pytest.raises(DataError, match="STS2013-en-test.zip lacks STS.gs.FNWN.txt; the release may have changed"):
        dl.arrange_sts_year("STS13", archives["STS2013-en-test.zip"], tmp_path / "data")
    assert not (tmp_path / "data" / "senteval" / "STS" / "STS13-en-test").exists()
    assert not list((tmp_path / "data" / "senteval" / "STS").iterdir())  # staging removed


def test_error_page_instead_of_an_archive(tmp_path):
    page = tmp_path / "STS2012-en-test.zip"
    page.write_text("<html>Service unavailable</html>")
    with pytest.raises(DataError, match="STS2012-en-test.zip is not a readable zip or tar archive"):
        dl.arrange_sts_year("STS12", page, tmp_path / "data")


# ---------------------------------------------------------------------------------------------
# Fetching


def _no_network(*args, **kwargs):
    raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))


def test_offline_download_fails_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DataError) as err:
        dl.download_data(tmp_path / "data", progress=False)
    assert str(err.value) == (
        "could not reach ixa2.si.ehu.es ([Errno -2] Name or service not known); check your connection "
        "or point --data-dir to an existing copy."
    )
    assert not list((tmp_path / "data").rglob("*.part"))


def test_offline_cli_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    code, _, err = run_cli(["download", "--data-dir", str(tmp_path), "--no-corpus"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "could not reach ixa2.si.ehu.es")
    assert err.strip().splitlines()[-1].startswith("error: could not reach ixa2.si.ehu.es")


def test_unresolvable_host_really_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "TIMEOUT", 5)
    with pytest.raises(DataError, match=r"^could not reach hardcse-test.invalid \("):
        dl.fetch("http://hardcse-test.invalid/STS2012-en-test.zip", tmp_path / "x.zip", progress=False)
    assert not list(tmp_path.glob("*.part"))


def test_http_error(tmp_path, monkeypatch):
    def not_found(*args, **kwargs):
        raise urllib.error.HTTPError("http://x/y.zip", 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(DataError, match=r"^alt.qcri.org answered HTTP 404 \(Not Found\) for http"):
        dl.fetch(dl.SICK_URLS["SICK_train.txt"], tmp_path / "sick_train.zip", progress=False)


def test_fetch_writes_via_a_temporary_name(tmp_path):
    source = tmp_path / "source.txt"
    source.write_bytes(b"x" * 100_000)
    dest = tmp_path / "out" / "copy.txt"
    assert dl.fetch(source.as_uri(), dest, progress=False) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert not list(dest.parent.glob("*.part"))


def test_truncated_transfer_is_reported(tmp_path, monkeypatch):
    class Short(io.BytesIO):
        headers = {"Content-Length": "1000"}

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Short(b"only ten b"))
    with pytest.raises(DataError, match="stopped after 10 of 1000 bytes"):
        dl.fetch(dl.STSB_URL, tmp_path / "Stsbenchmark.tar.gz", progress=False)
    assert not list(tmp_path.iterdir())
