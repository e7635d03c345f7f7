"""Errors a user can fix, and files written so that nothing is ever half-written.

fairseq checkpoints: torch >= 2.6 loads with ``weights_only=True`` by default and fairseq never
says otherwise; legacy-argument checkpoints hold an ``argparse.Namespace`` and, with
``--eval-bleu``, numpy scalars. ``allow_fairseq_checkpoints`` allows exactly those types rather
than turning the safe loader off.

Library code (tools, vision) raises ``UserError`` and writes through ``atomic_write`` /
``save_torch``; the command-line layer (``cli``) only parses and reports. Temporary files
carry their writer's pid, so a later run can tell a leftover of a killed process from a
file another live process is still writing.
"""
import argparse
import io
import json
import os
import re
import tempfile


class UserError(Exception):
    """An input problem the user can fix; shown as one line, never as a traceback."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, whole, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def temp_prefix() -> str:
    return f".tmp-{os.getpid()}-"


def remove_stale_temps(directory: str) -> None:
    """Delete ``.tmp-PID-*`` files and folders in ``directory`` whose process no longer exists."""
    import shutil
    for name in os.listdir(directory):
        match = re.match(r"\.tmp-(\d+)-", name)
        path = os.path.join(directory, name)
        if not match or _alive(int(match.group(1))):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.isfile(path):
            try:
                os.unlink(path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, data) -> None:
    """Write ``data`` (str or bytes) to ``path`` via a temporary file and a rename; the file
    gets the usual mode of new files (mkstemp's 0600 is for secrets, results are shared)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(), suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON through ``atomic_write`` (results are read by people too)."""
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def save_torch(obj, path: str) -> None:
    """``torch.save`` through ``atomic_write``: a kill leaves the old file or the new one."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def _numpy_globals():
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [scalar, _reconstruct, np.ndarray, np.dtype, *dtypes]


def allow_fairseq_checkpoints():
    import torch  # here, not at the top: the errors and files helpers are used before torch is needed
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace, *_numpy_globals()])


def load_torch(path: str, what: str = "checkpoint"):
    """``torch.load`` (safe loader, on the CPU) with one whole line for a missing, truncated
    or foreign file. fairseq checkpoints load too: their few extra types are allowed."""
    import torch

    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    allow_fairseq_checkpoints()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises OSError, RuntimeError, UnpicklingError, ... for bad files
        raise UserError(f"cannot read {what} {path}: it is truncated or not a torch file "
                        f"({first_line(error)})") from None


def check_out_dir(out_dir: str, *inputs: str, create: bool = True) -> str:
    """Create ``out_dir``; refuse one that holds any of the inputs (nothing is overwritten).
    ``create=False`` only checks that it could be made, for tools that find bad input late and
    must then leave nothing behind (they make it before their first file)."""
    out = os.path.realpath(out_dir)
    for path in inputs:
        if os.path.realpath(os.path.dirname(os.path.abspath(path))) == out:
            raise UserError(f"output directory {out_dir} is the directory of the input {path}; choose another")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"output directory {out_dir} exists and is not a directory")
    if not create and not os.path.isdir(out):
        parent = os.path.dirname(out)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise UserError(f"cannot create output directory {out_dir}: Not a directory")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot create output directory {out_dir}: Permission denied")
        return out
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output directory {out_dir}: {error.strerror}")
    if not os.access(out, os.W_OK):
        raise UserError(f"output directory {out_dir} is not writable")
    remove_stale_temps(out)  # leftovers of a killed earlier run
    return out
