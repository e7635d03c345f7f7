"""Cost of a K-level BLEU sweep against K separate single-level passes, same checkpoint.

Each single-level pass is a fresh ``bleu_vs_sparsity.py`` process for that level alone (load,
rank, prune, translate, score), which is what a user without the sweep would run. The
sweep loads and ranks once. Target: sweep <= 1.15 x the sum of the single passes.

    python benchmarks/sweep_cost.py --data-bin DIR --checkpoint CKPT [--spm M --ref R]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_sweep(common, levels, out):
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bleu_vs_sparsity.py"), *common,
                    "--sparsity", *map(str, levels), "--out", out, "--no-progress"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-bin", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--spm")
    p.add_argument("--ref")
    p.add_argument("--beam", default="4")
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    args = p.parse_args(argv)
    common = ["--data-bin", args.data_bin, "--checkpoint", args.checkpoint, "--beam", args.beam]
    common += ["--spm", args.spm] if args.spm else []
    common += ["--ref", args.ref] if args.ref else []
    sys.path.insert(0, REPO)
    from td_fairseq.results import git_commit, machine
    with tempfile.TemporaryDirectory() as tmp:
        single = [timed_sweep(common, [s], os.path.join(tmp, f"single{i}")) for i, s in enumerate(args.levels)]
        sweep = timed_sweep(common, args.levels, os.path.join(tmp, "sweep"))
    print(f"commit {git_commit()} | {machine()}")
    print("command: python benchmarks/sweep_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"levels {args.levels}: single passes {' '.join(f'{t:.1f}' for t in single)} s, sum {sum(single):.1f} s")
    print(f"one {len(args.levels)}-level sweep: {sweep:.1f} s; ratio sweep / sum of single passes = "
          f"{sweep / sum(single):.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
