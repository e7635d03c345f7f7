"""The harness of the bad-input cases (cases.py): shared by test_bad_input.py and
tests/hardening/bad_input_table.py (python -m tests.hardening.bad_input_table).

A case is a tool, a command line built from fresh inputs, and a piece of the one error line
it must print. ``run_case`` also records every file created, changed or removed under the
case's folder, the data-bin and the trained checkpoint's folder: a bad input writes nothing.
"""
import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


@dataclass
class Case:
    name: str
    tool: str  # a script under scripts/, fairseq-train, or a recipe under examples/wmt_en_de/
    argv: Callable  # Inputs -> list of arguments
    expect: str  # part of the error line
    origin: str = "tests/hardening/test_bad_input.py"
    ours: bool = True  # False: fairseq's own handling, listed as a known limitation
    exit_code: int = None  # None: any non-zero code
    env: dict = None  # extra environment for a subprocess
    subprocess: bool = False  # run as a command even where it could run in-process


@dataclass
class Outcome:
    argv: list
    returncode: int
    stderr: str
    changed: list

    @property
    def error_lines(self):
        return [line for line in self.stderr.splitlines() if "error:" in line.lower()]

    @property
    def last_line(self):
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


class Inputs:
    """Fresh inputs for one case under ``root``, copied or derived from the shared fixtures."""

    def __init__(self, root, data_bin, checkpoint, corpus_dir):
        self.root, self.data_bin, self.checkpoint, self.corpus_dir = map(str, (root, data_bin, checkpoint, corpus_dir))
        self.out = os.path.join(self.root, "out")

    def path(self, name):
        return os.path.join(self.root, name)

    @property
    def ckpt(self):
        """A copy of the trained TD checkpoint, alone in its folder."""
        path = self.path("in/model.pt")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy(self.checkpoint, path)
        return path

    def write(self, name, data):
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def ckpt_variant(self, name, mutate):
        """The trained checkpoint, changed by ``mutate(state)``."""
        import torch

        from td_fairseq.files import allow_fairseq_checkpoints
        allow_fairseq_checkpoints()
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        mutate(state)
        path = self.path(f"in/{name}.pt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(state, path)
        return path

    def with_arch(self, arch):
        def relabel(state):
            state["cfg"]["model"].arch = arch
            state["cfg"]["model"]._name = arch
        return self.ckpt_variant(arch, relabel)

    def data_bin_without(self, filename):
        copy = self.path("bin_copy")
        shutil.copytree(self.data_bin, copy, ignore=shutil.ignore_patterns(filename))
        return copy

    def data_bin_with_test(self, en_lines, de_lines):
        """A copy of the data-bin whose test split is binarized from the given raw lines."""
        raw = self.path("raw_test")
        os.makedirs(raw)
        for lang, lines in (("en", en_lines), ("de", de_lines)):
            with open(os.path.join(raw, f"test.{lang}"), "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        copy = self.path("bin_copy")
        shutil.copytree(self.data_bin, copy, ignore=shutil.ignore_patterns("test.*"))
        subprocess.run([os.path.join(BIN, "fairseq-preprocess"), "--source-lang", "en", "--target-lang", "de",
                        "--testpref", os.path.join(raw, "test"), "--destdir", copy, "--srcdict",
                        os.path.join(self.data_bin, "dict.en.txt"), "--tgtdict",
                        os.path.join(self.data_bin, "dict.de.txt"), "--workers", "1"],
                       check=True, capture_output=True)
        return copy

    def test_lines(self, lang):
        with open(os.path.join(self.corpus_dir, f"test.{lang}"), encoding="utf-8") as f:
            return f.read().splitlines()

    def raw_dir(self, **replace):
        """A copy of the raw corpus; ``replace`` maps e.g. test_de to the lines to write instead."""
        raw = self.path("raw")
        os.makedirs(raw)
        for split in ("train", "valid", "test"):
            for lang in ("en", "de"):
                lines = replace.get(f"{split}_{lang}")
                if lines is None:
                    shutil.copy(os.path.join(self.corpus_dir, f"{split}.{lang}"), raw)
                else:
                    with open(os.path.join(raw, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                        f.writelines(line + "\n" for line in lines)
        return raw


# --- running one case ----------------------------------------------------------------------

def snapshot(folders):
    found = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                stat = os.lstat(path)
                found[path] = (stat.st_size, stat.st_mtime_ns, os.path.isdir(path))
    return found


_SCRIPTS = {}


def script(name):
    """scripts/NAME as a module (loaded once)."""
    if name not in _SCRIPTS:
        spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(REPO, "scripts", name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[name] = module
    return _SCRIPTS[name]


def _in_process(tool, argv):
    """A repo script's main(argv), or fairseq-train's argument parser, with stderr captured."""
    from td_fairseq import cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        if tool == "fairseq-train":  # parser-level errors only: nothing would run anyway
            from fairseq import options

            import td_fairseq.criterions  # noqa: F401  (--user-dir skips a package imported before fairseq)
            import td_fairseq.models  # noqa: F401
            parser = options.get_training_parser()
            parser.prog = "fairseq-train"
            try:
                options.parse_args_and_arch(parser, argv)
                code = 0
            except SystemExit as stop:
                code = stop.code
        else:
            module = script(tool)
            code = module.main(argv) if hasattr(module, "PROG") else cli.run(module.main, argv, prog=tool)
    return code, err.getvalue()


def _subprocess(tool, argv, cwd=REPO, extra_env=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env.update(OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), PYTHON=sys.executable, **(extra_env or {}))
    if tool.endswith(".sh"):
        command = ["bash", os.path.join(REPO, "examples", "wmt_en_de", tool)]
    elif tool.endswith(".py"):
        command = [sys.executable, os.path.join(REPO, "scripts", tool)]
    else:
        command = [os.path.join(BIN, tool)]
    result = subprocess.run(command + argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stderr


def run_case(case, inputs):
    """Run ``case`` on ``inputs``; fairseq's own cases and the recipes always in a subprocess
    (the recipes from the case's folder, everything else from the repo root)."""
    argv = [str(a) for a in case.argv(inputs)]
    watched = [inputs.root, inputs.data_bin, os.path.dirname(inputs.checkpoint)]
    before = snapshot(watched)
    if case.ours and not case.subprocess and not case.tool.endswith(".sh"):
        code, stderr = _in_process(case.tool, argv)
    else:
        cwd = inputs.root if case.tool.endswith(".sh") else REPO
        code, stderr = _subprocess(case.tool, argv, cwd, case.env)
    after = snapshot(watched)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    return Outcome(argv, code, stderr, changed)
