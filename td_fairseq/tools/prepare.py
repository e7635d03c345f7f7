"""Raw parallel text -> cleaned text -> joint sentencepiece -> fairseq data-bin.

Each stage writes into a temporary directory renamed into place when complete, and is
skipped when its output exists, so an interrupted run resumes where it stopped.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from ..files import UserError

SPLITS = ("train", "valid", "test")


def check_raw(raw_dir, src, tgt):
    for split in SPLITS:
        paths = [os.path.join(raw_dir, f"{split}.{lang}") for lang in (src, tgt)]
        for path in paths:
            if not os.path.isfile(path):
                raise UserError(f"missing raw file {path} (need train, valid, test in .{src} and .{tgt})")
        counts = [_count_lines(p) for p in paths]
        if counts[0] != counts[1]:
            raise UserError(f"misaligned {split}: {paths[0]} has {counts[0]} lines, {paths[1]} has {counts[1]}")
        if counts[0] == 0:
            raise UserError(f"empty {split} set in {raw_dir}")


def check_dest(dest):
    """``dest`` is a directory or does not exist yet (then each of its parents that exists is one)."""
    path = os.path.abspath(dest)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if path == os.path.abspath(dest) and not os.path.isdir(path):
        raise UserError(f"--dest {dest} exists and is not a directory")
    if not os.path.isdir(path):
        raise UserError(f"--dest {dest}: its parent {path} exists and is not a directory")


def _read(path):
    """Lines split on LF only (as ``check_raw`` counts them); a stray CR becomes a space and
    a missing final newline keeps its last line."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 (byte {error.start})")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r").replace("\r", " ") for line in lines]


def _count_lines(path):
    return len(_read(path))


def clean_pairs(src_lines, tgt_lines, max_words=250, max_ratio=2.5):
    """Drop pairs with an empty side, too many words, or too unequal lengths (train only)."""
    kept = []
    for s, t in zip(src_lines, tgt_lines):
        s, t = s.strip(), t.strip()
        ns, nt = len(s.split()), len(t.split())
        if ns == 0 or nt == 0 or ns > max_words or nt > max_words or max(ns, nt) > max_ratio * min(ns, nt):
            continue
        kept.append((s, t))
    return kept


class _Stage:
    """Context: build into a temporary directory, rename to ``dest`` on success."""

    def __init__(self, dest):
        self.dest = dest
        self.tmp = None

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(dir=os.path.dirname(self.dest), prefix=".tmp-")
        return self.tmp

    def __exit__(self, kind, *_):
        if kind is None:
            os.replace(self.tmp, self.dest)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def prepare(raw_dir, dest, vocab_size=32000, src="en", tgt="de", workers=1, log=print):
    """Build ``dest/bin`` (data-bin) and ``dest/spm.model``; returns the data-bin path."""
    check_dest(dest)
    check_raw(raw_dir, src, tgt)
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --dest {dest}: {error.strerror}")
    clean, pieces, data_bin = (os.path.join(dest, d) for d in ("clean", "spm", "bin"))
    model = os.path.join(dest, "spm.model")
    if not os.path.isdir(clean):
        log("clean: dropping empty, long and unbalanced training pairs")
        with _Stage(clean) as tmp:
            for split in SPLITS:
                lines = [_read(os.path.join(raw_dir, f"{split}.{lang}")) for lang in (src, tgt)]
                # valid and test stay whole so that they match their raw references
                pairs = clean_pairs(*lines) if split == "train" else list(zip(*lines))
                for index, lang in enumerate((src, tgt)):
                    with open(os.path.join(tmp, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                        f.writelines(pair[index] + "\n" for pair in pairs)
    if not os.path.isfile(model):
        log(f"sentencepiece: joint unigram model, vocabulary {vocab_size}")
        import sentencepiece
        with _Stage(os.path.join(dest, "spm.tmpdir")) as tmp:
            try:
                sentencepiece.SentencePieceTrainer.train(
                    input=",".join(os.path.join(clean, f"train.{lang}") for lang in (src, tgt)),
                    model_prefix=os.path.join(tmp, "spm"), vocab_size=vocab_size, character_coverage=1.0,
                    model_type="unigram", input_sentence_size=2_000_000, shuffle_input_sentence=True,
                    num_threads=max(1, workers), minloglevel=2)
            except RuntimeError as error:
                raise UserError(f"sentencepiece training failed: {str(error).splitlines()[-1]}")
            os.replace(os.path.join(tmp, "spm.model"), model)
            os.replace(os.path.join(tmp, "spm.vocab"), os.path.join(dest, "spm.vocab"))
        shutil.rmtree(os.path.join(dest, "spm.tmpdir"), ignore_errors=True)
    if not os.path.isdir(pieces):
        log("encode: sentencepiece pieces")
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=model)
        with _Stage(pieces) as tmp:
            for split in SPLITS:
                for lang in (src, tgt):
                    lines = _read(os.path.join(clean, f"{split}.{lang}"))
                    with open(os.path.join(tmp, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                        for start in range(0, len(lines), 100_000):  # bounded memory at WMT scale
                            chunk = sp.encode(lines[start:start + 100_000], out_type=str)
                            f.writelines(" ".join(p) + "\n" for p in chunk)
    if not os.path.isdir(data_bin):
        log("fairseq-preprocess: binarize with a joined dictionary")
        with _Stage(data_bin) as tmp:
            command = [os.path.join(os.path.dirname(sys.executable), "fairseq-preprocess"),
                       "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
                       "--trainpref", os.path.join(pieces, "train"), "--validpref", os.path.join(pieces, "valid"),
                       "--testpref", os.path.join(pieces, "test"), "--destdir", tmp, "--workers", str(workers)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise UserError(f"fairseq-preprocess failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return data_bin
