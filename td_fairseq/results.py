"""Result files shared by every sweep: rows of one result per (label, sparsity level).

Files are written with ``files.atomic_write``, so an interrupted run leaves either the
previous complete file or the new one, never half of one.
"""
import csv
import io
import json
import os
import shlex
import subprocess
import sys

from .files import atomic_write, write_json

SWEEP_COLUMNS = ["label", "checkpoint", "mode", "scope", "requested_sparsity", "measured_sparsity"]
RUN_COLUMNS = ["command", "commit", "machine"]


def git_commit(where=None) -> str:
    """Commit of the td_fairseq checkout (or of the one holding ``where``), with '+dirty' when
    its code has local changes. docs/ and README.md do not count: a study writes its finished
    jobs' results into docs/ while other jobs still run, and they change no result."""
    here = where or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(top,exclude)docs", ":(top,exclude)README.md"],
                               cwd=here, capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    import platform
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def command_line(argv=None, script=None) -> str:
    """The command to rerun: ``python scripts/NAME.py ARGS`` when ``script`` is a file path
    (scripts pass ``__file__``, which stays right when ``main(argv)`` is called in-process)."""
    argv = sys.argv[1:] if argv is None else argv
    if script is not None:
        head = ["python", os.path.join(os.path.basename(os.path.dirname(os.path.abspath(script))),
                                       os.path.basename(script))]
    else:
        head = [os.path.basename(sys.argv[0] or "python")]
    return shlex.join(head + [str(a) for a in argv])


def write_rows(out_dir: str, rows: list, columns: list) -> None:
    """results.csv (``columns``, in order) and results.json (full rows)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(os.path.join(out_dir, "results.csv"), buffer.getvalue())
    write_json(os.path.join(out_dir, "results.json"), rows)


def load_rows(out_dir: str) -> list:
    path = os.path.join(out_dir, "results.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def plot_curves(rows: list, metric: str, path: str, ylabel: str, title: str = None) -> None:
    """One labelled curve of ``metric`` against measured sparsity per label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["label"] for r in rows))
    many = len(labels) > 8  # past the default cycle colours repeat: 20 colours, mixed markers, legend aside
    fig, ax = plt.subplots(figsize=(8.4, 4.6) if many else (6.4, 4.2))
    colors = plt.get_cmap("tab20").colors if many else [None] * len(labels)
    for i, label in enumerate(labels):
        points = sorted((float(r["measured_sparsity"]) * 100, float(r[metric])) for r in rows if r["label"] == label)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="osd^v<>"[i % 7] if many else "o",
                color=colors[i % len(colors)], label=label)
    ax.set_xlabel("pruned weights (%)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    else:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
