"""Run every bad-input case (the existing tests' and tests/hardening's) and print the markdown
table of docs/hardening.md: the exact arguments, the exit code, the observed error line and
whether anything was written.

    OMP_NUM_THREADS=1 python -m tests.hardening.bad_input_table > /tmp/table.md

Builds its own fixtures (synthetic corpus, data-bin, a 30-update TD checkpoint) in a
temporary folder; paths in the table are shown as $CASE (the case's own folder), $BIN,
$CKPT, $OTHER_BIN and $CORPUS, and the shared fairseq-train arguments as $TRAIN_ARGS
(tests/conftest.py) and $TRAIN (tests/hardening/cases.py). Takes a minute or two on 2 cores.
"""
import re
import shutil
import tempfile
from pathlib import Path

from ..conftest import REPO, TRAIN_ARGS, run_cli
from .cases import FAIRSEQ_CASES, NEW_CASES, TRAIN
from .harness import Case, Inputs, run_case


def fixtures(root):
    """(corpus dir, data-bin, trained checkpoint, other data-bin) as tests/conftest.py makes them."""
    from td_fairseq.synthetic import write_corpus
    corpus = root / "corpus"
    corpus.mkdir()
    for split, n, seed in (("train", 800, 1), ("valid", 60, 2), ("test", 40, 3)):
        write_corpus(str(corpus / split), n, seed)
    data_bin = corpus / "bin"
    run_cli("fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", corpus / "train",
            "--validpref", corpus / "valid", "--testpref", corpus / "test", "--destdir", data_bin,
            "--joined-dictionary", "--workers", "1")
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--max-update", "30", "--save-dir", root / "ckpt")
    other = root / "other"
    other.mkdir()
    for split in ("train", "valid", "test"):  # as tests/tools/test_sweep.py's other_data_bin
        for lang in ("en", "de"):
            (other / f"{split}.{lang}").write_text("".join(f"x{i} y{i % 7} z\n" for i in range(30)))
    run_cli("fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", other / "train",
            "--validpref", other / "valid", "--testpref", other / "test", "--destdir", other / "bin",
            "--joined-dictionary", "--workers", "1")
    return corpus, data_bin, root / "ckpt" / "checkpoint_last.pt", other / "bin"


def param_values(test, index=0):
    """The values of a test's (first) pytest.mark.parametrize."""
    return [mark.args[1] for mark in test.pytestmark if mark.name == "parametrize"][index]


def existing_cases(other_bin):
    from tests.examples import test_prepare, test_train
    from tests.models import test_cli
    from tests.tools import test_checkpoint, test_sweep
    from tests.vision import test_scripts
    cases = []
    origin = "tests/tools/test_checkpoint.py"
    for name in param_values(test_checkpoint.test_bad_input):
        cases.append(Case(f"prune: {name}", "prune_checkpoint.py",
                          lambda i, n=name: test_checkpoint.bad_cases(Path(i.ckpt), Path(i.root))[n], "", origin))
    origin = "tests/tools/test_sweep.py"
    for name in param_values(test_sweep.test_bad_input):
        cases.append(Case(f"sweep: {name}", "bleu_vs_sparsity.py", lambda i, n=name: test_sweep.bad_argv(
            n, Path(i.ckpt), i.data_bin, other_bin, Path(i.root)), "", origin))
    origin = "tests/models/test_cli.py"
    for option, value in test_cli.BAD_OPTIONS:
        cases.append(Case(f"train: {option} {value}", "fairseq-train",
                          lambda i, o=option, v=value: [i.data_bin, *TRAIN_ARGS, o, v], "", origin))
    cases.append(Case("train: --td-gamma 1.5 (command line)", "fairseq-train", lambda i: [
        i.data_bin, *TRAIN_ARGS, "--td-gamma", "1.5", "--max-update", "1", "--save-dir", i.path("save")], "", origin,
        subprocess=True))
    origin = "tests/vision/test_scripts.py"
    for name, (script, _, _) in test_scripts.bad_inputs("/x").items():
        cases.append(Case(f"{script.PROG}: {name}", f"{script.PROG}.py",
                          lambda i, n=name: test_scripts.bad_inputs(i.root)[n][1], "", origin))
    cases.append(Case("accuracy_vs_sparsity: corrupt checkpoint", "accuracy_vs_sparsity.py",
                      lambda i: ["--checkpoint", i.write("bad.pt", b"garbage"), "--out", i.path("o")], "", origin))
    cases.append(Case("vision_train: --td-alpha 2 (command line)", "vision_train.py",
                      lambda i: ["--td-alpha", "2", "--out", i.path("c.pt")], "", origin, subprocess=True))
    origin = "tests/examples/test_prepare.py"
    for name, mutate, extra, _ in test_prepare.BAD_RAW:
        def argv(i, mutate=mutate, extra=extra):
            raw = i.raw_dir()
            if mutate:
                mutate(Path(raw))
            return ["--raw-dir", raw, "--dest", i.path("data"), "--vocab-size", "100", *extra]
        cases.append(Case(f"prepare.sh: {name}", "prepare.sh", argv, "", origin))
    for name, args, _ in test_prepare.BAD_ARGS:
        cases.append(Case(f"prepare.sh: {name}", "prepare.sh", lambda i, a=args: [x.format(tmp=i.root) for x in a],
                          "", origin, env=dict(test_prepare.OFFLINE_ENV, no_proxy="", NO_PROXY="")))
    origin = "tests/examples/test_train.py"
    for args, _, message in param_values(test_train.test_bad_usage_is_one_line):
        cases.append(Case(f"train.sh: {message}", "train.sh", lambda i, a=args: list(a), "", origin,
                          env={"NGPU": "0"}))
    return cases


def cell(text, limit=260):
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # torch's messages carry ANSI bold codes
    text = text if len(text) <= limit else text[:limit] + " …"
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`" if text else ""


def main():
    root = Path(tempfile.mkdtemp(prefix="bad_input_table-"))
    try:
        corpus, data_bin, ckpt, other_bin = fixtures(root)
        names = {str(data_bin): "$BIN", str(ckpt): "$CKPT", str(other_bin): "$OTHER_BIN", str(corpus): "$CORPUS"}
        groups = [("existing", existing_cases(str(other_bin))), ("new", NEW_CASES), ("fairseq", FAIRSEQ_CASES)]
        print("| # | case | tool and arguments | exit | observed error line | one line, no traceback | wrote | tested in |")
        print("|---|---|---|---|---|---|---|---|")
        number = 0
        for group, cases in groups:
            for case in cases:
                number += 1
                folder = root / f"case{number}"
                folder.mkdir()
                inputs = Inputs(folder, data_bin, ckpt, corpus)
                outcome = run_case(case, inputs)
                hide = dict(names, **{str(folder): "$CASE"})

                def show(text):
                    for path, name in sorted(hide.items(), key=lambda kv: -len(kv[0])):
                        text = text.replace(path, name)
                    text = text.replace(" ".join(TRAIN_ARGS), "$TRAIN_ARGS").replace(" ".join(TRAIN), "$TRAIN")
                    return text.replace(REPO + "/", "")
                line = (outcome.error_lines or [outcome.last_line])[0] if case.ours else outcome.last_line
                clean = len(outcome.error_lines) == 1 and "Traceback" not in outcome.stderr
                wrote = "nothing" if not outcome.changed else ", ".join(show(p) for p in outcome.changed)
                args = show(" ".join(a if a else "''" for a in outcome.argv))
                print(f"| {number} | {case.name} | {cell(case.tool + ' ' + args)} | {outcome.returncode} | "
                      f"{cell(show(line))} | {'yes' if clean else 'no (fairseq traceback)' if not case.ours else 'NO'}"
                      f" | {cell(wrote, 120) if outcome.changed else wrote} | {case.origin} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
