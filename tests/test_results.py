"""Result files: atomic writes, the clean-up of a killed run's temporary files, and the commit
that results name."""
import os
import subprocess

from td_fairseq.files import check_out_dir
from td_fairseq.files import atomic_write, temp_prefix
from td_fairseq.results import git_commit


def test_atomic_write_leaves_no_temporary_and_readable_permissions(tmp_path):
    atomic_write(str(tmp_path / "a.txt"), "hello\n")
    assert os.listdir(tmp_path) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert os.stat(tmp_path / "a.txt").st_mode & 0o044  # not the 0600 of mkstemp


def test_out_dir_check_removes_only_dead_writers_temporaries(tmp_path):
    dead = tmp_path / ".tmp-999999999-results.csv"  # no such pid
    live = tmp_path / f"{temp_prefix()}results.json"  # this process: still writing
    other = tmp_path / ".tmp-notes"
    dead_dir, live_dir = tmp_path / ".tmp-999999999-model", tmp_path / f"{temp_prefix()}model"  # exports are folders
    for path in (dead, live, other):
        path.write_text("partial")
    for folder in (dead_dir, live_dir):
        folder.mkdir()
        (folder / "model.bin").write_text("partial")
    check_out_dir(str(tmp_path))
    assert not dead.exists() and live.exists() and other.exists()
    assert not dead_dir.exists() and (live_dir / "model.bin").exists()


def test_the_commit_is_dirty_for_changed_code_but_not_for_changed_docs(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    for name in ("docs/jobs.json", "README.md", "pkg/code.py"):
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    clean = git_commit(str(tmp_path / "pkg"))
    assert len(clean) >= 7 and "dirty" not in clean
    (tmp_path / "docs" / "jobs.json").write_text("2\n")  # a study job's result, written while others run
    (tmp_path / "README.md").write_text("2\n")
    assert git_commit(str(tmp_path / "pkg")) == clean
    (tmp_path / "pkg" / "code.py").write_text("2\n")
    assert git_commit(str(tmp_path / "pkg")) == clean + "+dirty"
