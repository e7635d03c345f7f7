"""A fixed-budget job that takes the budget study's run of the same (model, seed) instead of
training it again (``reuse: DIR`` in a study config, DIR the budget study's folder).

The budget study trains to convergence and keeps every epoch's checkpoint; the budget N is an
epoch end. Its checkpoint at N is the run ``--max-update N`` makes, when nothing in the recipe
reads the cap: fairseq seeds every update from seed + update count and each epoch's batches
from seed + epoch, and inverse_sqrt's lr does not depend on the cap (other schedulers do, so
they are refused). What is checked before taking it: the same fairseq-train flags but for the
cap, the same data bytes, an epoch that ended at exactly N, and the checkpoint's own update
count. tests/study/test_reuse.py trains both ways and compares the weights.
"""
import glob
import hashlib
import os
import re
import shutil

SCHEDULES = ("inverse_sqrt",)  # lr schedules that do not read --max-update
_CAP = {"--max-epoch": 1, "--patience": 1, "--max-update": 1, "--no-epoch-checkpoints": 0}


class ReuseError(Exception):
    """The budget run is there but is not this job's run."""


def _without_cap(flags):
    out, skip = [], 0
    for flag in flags:
        if skip:
            skip -= 1
        elif flag in _CAP:
            skip = _CAP[flag]
        else:
            out.append(flag)
    return out


def _options(flags):
    """Flags grouped as 'flag value...' strings, for a message."""
    out = []
    for token in flags:
        if token.startswith("--") or not out:
            out.append(token)
        else:
            out[-1] += " " + token
    return out


def _digest(folder):
    """{file name: sha256} of what fairseq-train reads in a binarized data folder (not its log)."""
    found = {}
    for path in sorted(p for p in glob.glob(os.path.join(folder, "*")) if re.search(r"(\.bin|\.idx|\.txt)$", p)):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        found[os.path.basename(path)] = digest.hexdigest()
    return found


def same_data(a, b):
    return os.path.realpath(a) == os.path.realpath(b) or _digest(a) == _digest(b)


def budget_job(budget_dir, label, seed):
    """The budget study's folder of (label, seed), or None."""
    import yaml
    for overrides in sorted(glob.glob(os.path.join(budget_dir, "*", ".hydra", "overrides.yaml"))):
        with open(overrides, encoding="utf-8") as f:
            found = dict(o.split("=", 1) for o in yaml.safe_load(f) or [])
        if found.get("model") == label and str(found.get("seed", "1")) == str(seed):
            return os.path.dirname(os.path.dirname(overrides))
    return None


def take(budget_dir, label, seed, flags, data, save_dir, train_flags, valid_curve):
    """Copy the budget run's checkpoint at this job's --max-update into save_dir/checkpoint_last.pt;
    returns what train() would (plus ``reused``), or None when the budget study has no such job.
    ``train_flags(cfg, seed)`` and ``valid_curve(log)`` come from job.py as arguments: importing
    job.py here would close an import circle (tests/test_imports.py)."""
    from omegaconf import OmegaConf
    folder = budget_job(budget_dir, label, seed)
    if folder is None:
        return None
    updates = int(flags[flags.index("--max-update") + 1])
    theirs = train_flags(OmegaConf.load(os.path.join(folder, ".hydra", "config.yaml")), seed)
    if _without_cap(theirs) != _without_cap(flags):
        differ = sorted(set(_options(_without_cap(theirs))) ^ set(_options(_without_cap(flags))))
        raise ReuseError(f"{folder} trained with other flags ({' '.join(differ)})")
    schedule = flags[flags.index("--lr-scheduler") + 1] if "--lr-scheduler" in flags else "fixed"
    if schedule not in SCHEDULES:
        raise ReuseError(f"lr scheduler {schedule} reads the update cap: its run to {updates} differs")
    if not same_data(os.path.join(budget_dir, "data", "bin"), os.path.join(data, "bin")):
        raise ReuseError(f"{budget_dir}/data/bin holds other data than {data}/bin")
    log = os.path.join(folder, "train.log")
    with open(log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    epochs = [point["epoch"] for point in valid_curve(text) if point["updates"] == updates]
    if not epochs:
        raise ReuseError(f"no epoch of {folder} ended at update {updates} (see its train.log)")
    source = os.path.join(folder, f"checkpoint{epochs[-1]}.pt")
    from ..files import load_torch, temp_prefix
    state = load_torch(source)
    if state["optimizer_history"][-1]["num_updates"] != updates:
        raise ReuseError(f"{source} is at update {state['optimizer_history'][-1]['num_updates']}, not {updates}")
    os.makedirs(save_dir, exist_ok=True)
    tmp = os.path.join(save_dir, temp_prefix() + "checkpoint_last.pt")
    shutil.copyfile(source, tmp)
    os.replace(tmp, os.path.join(save_dir, "checkpoint_last.pt"))
    commands = re.findall(r"^\$ (.*)$", text, flags=re.M)
    return dict(command=commands[-1] if commands else None, updates=updates, seconds=None, log=log,
                reused=dict(checkpoint=os.path.abspath(source), epoch=epochs[-1], commands=commands))
