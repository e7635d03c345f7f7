"""examples/wmt_en_de/prepare.sh: end to end on small corpora, the download path offline, bad input."""
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time

import pytest

from td_fairseq.synthetic import make_corpus, write_corpus

from ..conftest import REPO, SHARED_DATA

PREPARE = os.path.join(REPO, "examples", "wmt_en_de", "prepare.sh")
MULTI30K = os.path.join(SHARED_DATA, "multi30k")
STAGES = ("clean:", "sentencepiece:", "encode:", "fairseq-preprocess:", "download:", "extract:", "sacrebleu:")
# every proxy points at a closed local port: the download path fails at once, online or not
OFFLINE_ENV = {name: "http://127.0.0.1:9" for name in
               ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")}


def prepare(*args, cwd, env=None, timeout=180):
    """Run prepare.sh from ``cwd`` (not the repo root) with this test's interpreter."""
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", no_proxy="", NO_PROXY="", **(env or {}))
    full_env.pop("SACREBLEU", None)  # sacreBLEU's cache: prepare.sh's default, under DEST/downloads
    return subprocess.run(["bash", PREPARE, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def lines(path):
    """Lines split on newlines only (a carriage return stays visible)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read().split("\n")[:-1]


def sentences_in(idx_path):
    """Number of sentences in a fairseq mmap .idx file (magic, version, dtype, then the count)."""
    with open(idx_path, "rb") as f:
        header = f.read(26)
    assert header[:9] == b"MMIDIDX\x00\x00"
    return struct.unpack("<Q", header[18:26])[0]


def snapshot(dest):
    """Every file under dest with its modification time and size."""
    found = {}
    for root, _, files in os.walk(dest):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, dest)] = (os.stat(path).st_mtime_ns, os.path.getsize(path))
    return found


def check_output(dest, raw_test_de, n_test):
    """The data-bin, the sentencepiece model, and an uncleaned test split."""
    bin_dir = dest / "bin"
    for name in ("dict.en.txt", "dict.de.txt"):
        assert (bin_dir / name).is_file(), name
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            for ext in ("bin", "idx"):
                assert (bin_dir / f"{split}.en-de.{lang}.{ext}").is_file(), f"{split}.{lang}.{ext}"
    assert (dest / "spm.model").is_file()
    # the test split is never cleaned: the reference of sacreBLEU is the raw file, line for line
    assert lines(dest / "clean" / "test.de") == lines(raw_test_de)
    for lang in ("en", "de"):
        assert sentences_in(bin_dir / f"test.en-de.{lang}.idx") == n_test
    assert not [p for p in os.listdir(dest) if p.startswith(".tmp")], "temporary directories left behind"


def check_rerun_is_noop(dest, cwd, *args):
    before = snapshot(dest)
    time.sleep(0.01)
    again = prepare(*args, cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert not [s for s in STAGES if s in again.stdout], again.stdout
    assert snapshot(dest) == before


@pytest.fixture(scope="module")
def synthetic_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    for split, n, seed in (("train", 300, 1), ("valid", 30, 2), ("test", 30, 3)):
        write_corpus(str(raw / split), n, seed)
    # an unbalanced pair (1 word against 12): cleaning drops it from train, never from test
    for split in ("train", "test"):
        with open(raw / f"{split}.en", "a", encoding="utf-8") as f:
            f.write("yes\n")
        with open(raw / f"{split}.de", "a", encoding="utf-8") as f:
            f.write("ja, das ist es, was wir alle hier wirklich gemeint haben.\n")
    return raw


def test_prepare_synthetic_end_to_end_then_noop(synthetic_raw, tmp_path):
    dest = tmp_path / "data"
    args = ("--raw-dir", synthetic_raw, "--dest", dest, "--vocab-size", 100)
    result = prepare(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(stage in result.stdout for stage in STAGES[:4]), result.stdout
    check_output(dest, synthetic_raw / "test.de", 31)
    assert len(lines(dest / "clean" / "train.en")) == 300  # the unbalanced pair is gone
    assert sentences_in(dest / "bin" / "train.en-de.de.idx") == 300
    check_rerun_is_noop(dest, tmp_path, *args)


def test_prepare_multi30k_slice(tmp_path):
    if not os.path.isfile(os.path.join(MULTI30K, "train.en")):
        pytest.skip(f"no Multi30k at {MULTI30K}")
    raw = tmp_path / "raw"
    raw.mkdir()
    for split, source, n in (("train", "train", 500), ("valid", "val", 50), ("test", "test_2016_flickr", 50)):
        for lang in ("en", "de"):
            with open(os.path.join(MULTI30K, f"{source}.{lang}"), encoding="utf-8") as f:
                head = [next(f) for _ in range(n)]
            (raw / f"{split}.{lang}").write_text("".join(head), encoding="utf-8")
    dest = tmp_path / "data"
    result = prepare("--raw-dir", raw, "--dest", dest, "--vocab-size", 400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_output(dest, raw / "test.de", 50)
    assert sentences_in(dest / "bin" / "valid.en-de.en.idx") == 50


# --- the download path, offline: the training archives already in DEST/downloads and
# sacreBLEU's test sets already in its cache (DEST/downloads/sacrebleu), as after a download.
# The online path (curl and sacreBLEU fetching from statmt.org) cannot run here: no network.

def _tgz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _sgm(segments, kind):
    body = "".join(f'<seg id="{i + 1}">  {s.replace(" ", "   ", 1)} </seg>\n' for i, s in enumerate(segments))
    return f'<{kind}set setid="newstest2014" srclang="any">\n<doc sysid="ref" docid="1" origlang="en">\n' \
           f"<p>\n{body}</p>\n</doc>\n</{kind}set>\n"


def _sacrebleu_cache(cache, test_set, tarball, files):
    """sacreBLEU's cache after it downloaded and unpacked ``test_set``: it skips the download
    of a tarball that is there and reads the unpacked SGM files."""
    raw = cache.joinpath(*test_set.split("/"), "raw")
    raw.mkdir(parents=True)
    (raw / tarball).write_bytes(b"already unpacked")
    for name, text in files.items():
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_text(text, encoding="utf-8")


def fake_wmt14_downloads(downloads):
    """The three training archives with WMT'14's layout, and sacreBLEU's newstest2013 and
    newstest2014 (full), filled with the synthetic corpus."""
    downloads.mkdir(parents=True)
    pairs = make_corpus(360, seed=7)
    corpora, valid, test = (pairs[0:100], pairs[100:200], pairs[200:300]), pairs[300:330], pairs[330:360]

    def text(chunk, side, newline_at_end=True):
        body = "\n".join(pair[side] for pair in chunk)
        return body + "\n" if newline_at_end else body

    europarl, crawl, news = corpora
    crawl_en = text(crawl, 0).replace(".\n", ".\r extra words\n", 1)  # a stray carriage return
    _tgz(downloads / "training-parallel-europarl-v7.tgz", {
        "training/europarl-v7.de-en.en": text(europarl, 0), "training/europarl-v7.de-en.de": text(europarl, 1),
        "training/europarl-v7.fr-en.en": "not this one\n"})
    _tgz(downloads / "training-parallel-commoncrawl.tgz", {
        "commoncrawl.de-en.en": crawl_en, "commoncrawl.de-en.de": text(crawl, 1, newline_at_end=False)})
    _tgz(downloads / "training-parallel-nc-v9.tgz", {
        "training/news-commentary-v9.de-en.en": text(news, 0), "training/news-commentary-v9.de-en.de": text(news, 1)})
    cache = downloads / "sacrebleu"
    _sacrebleu_cache(cache, "wmt13", "wmt13.test.tgz", {
        "test/newstest2013-src.en.sgm": _sgm([p[0] for p in valid], "src"),
        "test/newstest2013-src.de.sgm": _sgm([p[1] for p in valid], "src"),
        "test/newstest2013-src.fr.sgm": "not this one\n"})
    _sacrebleu_cache(cache, "wmt14/full", "wmt14_full.test-full.tgz", {
        "test-full/newstest2014-deen-src.en.sgm": _sgm([p[0] for p in test], "src"),
        "test-full/newstest2014-deen-ref.de.sgm": _sgm([p[1] for p in test], "ref"),
        "test-full/newstest2014-deen-src.de.sgm": "not this one\n"})
    return valid, test


def test_prepare_assembles_wmt14_from_archives_and_sacrebleu(tmp_path):
    dest = tmp_path / "wmt14"
    valid_pairs, test_pairs = fake_wmt14_downloads(dest / "downloads")
    result = prepare("--dest", dest, "--vocab-size", 100, cwd=tmp_path, env=OFFLINE_ENV)
    assert result.returncode == 0, result.stderr
    assert "download:" not in result.stdout and "extract:" in result.stdout and "sacrebleu:" in result.stdout
    raw = dest / "raw"
    assert sorted(os.listdir(raw)) == sorted(f"{s}.{l}" for s in ("train", "valid", "test") for l in ("en", "de"))
    assert len(lines(raw / "train.en")) == len(lines(raw / "train.de")) == 300
    assert any("\r" not in line and "extra words" in line for line in lines(raw / "train.en"))
    # sacreBLEU's <seg> contents, whitespace collapsed
    assert lines(raw / "valid.en") == [p[0] for p in valid_pairs]
    assert lines(raw / "valid.de") == [p[1] for p in valid_pairs]
    assert lines(raw / "test.en") == [p[0] for p in test_pairs]
    assert lines(raw / "test.de") == [p[1] for p in test_pairs]
    check_output(dest, raw / "test.de", 30)
    check_rerun_is_noop(dest, tmp_path, "--dest", dest, "--vocab-size", 100)


def test_sacrebleu_offline_is_one_clear_line(tmp_path):
    """Training archives present, sacreBLEU's cache empty and no network: one line, no raw."""
    dest = tmp_path / "wmt14"
    fake_wmt14_downloads(dest / "downloads")
    shutil.rmtree(dest / "downloads" / "sacrebleu")
    result = prepare("--dest", dest, "--vocab-size", 100, cwd=tmp_path, env=OFFLINE_ENV, timeout=60)
    assert_one_error_line(result, "sacrebleu cannot give wmt13 en-de src (offline?")
    assert not (dest / "raw").exists() and not [p for p in os.listdir(dest) if p.startswith(".tmp")]


# --- bad input: one line, non-zero exit, no data-bin ---

def _mutate_misaligned(raw):
    (raw / "train.de").write_text("".join(open(raw / "train.de", encoding="utf-8").readlines()[:-1]), encoding="utf-8")


def _mutate_missing_valid(raw):
    (raw / "valid.de").unlink()


def _mutate_not_utf8(raw):
    for lang in ("en", "de"):
        with open(raw / f"train.{lang}", "ab") as f:
            f.write(b"caf\xe9 au lait\n")


BAD_RAW = [
    ("misaligned", _mutate_misaligned, (), "misaligned train"),
    ("missing valid", _mutate_missing_valid, (), "missing raw file"),
    ("not utf-8", _mutate_not_utf8, (), "is not UTF-8"),
    ("vocab too large", None, ("--vocab-size", 50000), "Vocabulary size too high"),
]


@pytest.mark.parametrize("name, mutate, extra, message", BAD_RAW, ids=[case[0] for case in BAD_RAW])
def test_bad_raw_input_is_one_clear_line(synthetic_raw, tmp_path, name, mutate, extra, message):
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_raw, raw)
    if mutate:
        mutate(raw)
    dest = tmp_path / "data"
    result = prepare("--raw-dir", raw, "--dest", dest, "--vocab-size", 100, *extra, cwd=tmp_path)
    assert_one_error_line(result, message)
    assert not (dest / "bin").exists() and not (dest / "spm.model").exists()


def test_dest_that_is_a_file_is_one_clear_line(synthetic_raw, tmp_path):
    dest = tmp_path / "data"
    dest.write_text("keep me\n")
    for tool in ("prepare.sh", "prepare_data.py"):
        if tool == "prepare.sh":
            result = prepare("--raw-dir", synthetic_raw, "--dest", dest, cwd=tmp_path)
        else:
            result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "prepare_data.py"), "--raw-dir",
                                     str(synthetic_raw), "--dest", str(dest)], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=120)
        assert_one_error_line(result, f"--dest {dest} exists and is not a directory")
        assert result.stderr.startswith(tool)
        assert dest.read_text() == "keep me\n" and sorted(os.listdir(tmp_path)) == ["data"]
    result = prepare("--raw-dir", synthetic_raw, "--dest", dest / "below", cwd=tmp_path)
    assert result.returncode != 0 and "not a directory" in result.stderr


BAD_ARGS = [
    ("unknown option", ["--dest", "{tmp}/data", "--frobnicate"], "unknown option --frobnicate"),
    ("no dest", ["--raw-dir", "{tmp}"], "--dest is required"),
    ("raw dir missing", ["--raw-dir", "{tmp}/nowhere", "--dest", "{tmp}/data"], "does not exist"),
    ("bad vocab", ["--raw-dir", "{tmp}", "--dest", "{tmp}/data", "--vocab-size", "lots"], "positive integer"),
    ("offline download", ["--dest", "{tmp}/data"],
     "cannot download WMT'14 (offline?); pass --raw-dir with local files" if shutil.which("curl") or shutil.which("wget")
     else "cannot download WMT'14 (no curl or wget); pass --raw-dir with local files"),
]


@pytest.mark.parametrize("name, args, message", BAD_ARGS, ids=[case[0] for case in BAD_ARGS])
def test_bad_arguments_fail_fast(tmp_path, name, args, message):
    start = time.monotonic()
    result = prepare(*[a.format(tmp=tmp_path) for a in args], cwd=tmp_path, env=OFFLINE_ENV, timeout=30)
    assert time.monotonic() - start < 10
    assert_one_error_line(result, message)
    assert not (tmp_path / "data").exists()  # nothing created, not even DEST


def assert_one_error_line(result, message):
    assert result.returncode != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].split(":")[0] in ("prepare.sh", "prepare_data.py") and ": error: " in err[0], err[0]
    assert message in err[0], err[0]
