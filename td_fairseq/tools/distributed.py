"""Data-parallel fairseq-train on one machine without GPUs: one process per rank, gloo.

fairseq spawns its own workers only on CUDA devices; on CPU, ``--cpu
--distributed-world-size N`` alone fails, and so do ``torchrun`` and the default
``pytorch_ddp`` backend. What works (docs/distributed.md) is one ``fairseq-train`` per rank
with ``--distributed-no-spawn --distributed-backend gloo --ddp-backend legacy_ddp`` and a
TCP rendezvous on localhost. This module builds those commands and supervises them: if one
rank fails, the others would wait in their next all-reduce forever, so they are stopped
and the failure is reported.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from ..files import UserError

# Options the launcher sets for every rank; passing them through would contradict it.
LAUNCHER_OPTIONS = ("--distributed-world-size", "--distributed-num-procs", "--distributed-rank",
                    "--distributed-backend", "--distributed-init-method", "--distributed-port",
                    "--distributed-no-spawn", "--device-id", "--ddp-backend", "--nprocs-per-node")


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fairseq_train_executable() -> str:
    """fairseq-train of this interpreter's environment, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    found = beside if os.access(beside, os.X_OK) else shutil.which("fairseq-train")
    if not found:
        raise UserError("fairseq-train not found (install fairseq in this environment)")
    return found


def check_train_args(train_args) -> list:
    """fairseq-train's own arguments, refused where they would fight the launcher."""
    train_args = [str(a) for a in train_args]
    if not train_args:
        raise UserError("no fairseq-train arguments: put them after --, e.g. -- DATA_BIN --arch ...")
    clashes = sorted({a.split("=", 1)[0] for a in train_args if a.split("=", 1)[0] in LAUNCHER_OPTIONS})
    if clashes:
        raise UserError(f"{', '.join(clashes)} is set by the launcher for each rank; remove it")
    return train_args


def rank_commands(train_args, nprocs: int, port: int, executable: str) -> list:
    """One fairseq-train command per rank (``--cpu`` added when missing)."""
    if nprocs < 1:
        raise UserError(f"--nprocs must be at least 1, got {nprocs}")
    if not 0 < port < 65536:
        raise UserError(f"--port must be in 1..65535, got {port}")
    train_args = check_train_args(train_args)
    cpu = [] if "--cpu" in train_args else ["--cpu"]
    shared = ["--distributed-world-size", str(nprocs), "--distributed-backend", "gloo",
              "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
              "--device-id", "0", "--ddp-backend", "legacy_ddp"]
    return [[executable, *train_args, *cpu, *shared, "--distributed-rank", str(rank)] for rank in range(nprocs)]


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _stop(processes, grace_s: float):
    """SIGTERM every process still running, then SIGKILL what is left after ``grace_s``."""
    running = [p for p in processes if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_ranks(commands, env=None, poll_s: float = 0.1, grace_s: float = 5.0) -> None:
    """Start every command, wait for all; on the first failure stop the rest and raise.

    Returns when every rank exited with 0. Raises UserError naming the first rank that
    failed (the others are stopped first). Ctrl-C or any other exception stops them too.
    """
    processes = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, env=env))
        while True:
            codes = [p.poll() for p in processes]
            failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                rank = failed[0]
                _stop(processes, grace_s)
                raise UserError(f"rank {rank} {_describe(codes[rank])}; stopped the other ranks")
            if all(code == 0 for code in codes):
                return
            time.sleep(poll_s)
    finally:
        _stop(processes, grace_s)


def launch(train_args, nprocs: int, port: int = None, env=None, **kwargs) -> None:
    """Data-parallel ``fairseq-train train_args`` with ``nprocs`` CPU ranks on this machine.

    Each rank gets ``OMP_NUM_THREADS=1`` unless the environment sets it.
    """
    commands = rank_commands(train_args, nprocs, free_port() if port is None else port,
                             fairseq_train_executable())
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", "1")
    run_ranks(commands, env, **kwargs)
