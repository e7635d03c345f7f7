"""Is fairseq's resume bitwise? The study's smoke recipe trained straight through, twice, and
trained to --stop, stopped and resumed from checkpoint_last.pt; final weights compared.

The two uninterrupted runs are the control (0 means training repeats exactly here); the resumed
run's difference from them is what a killed and continued study job carries.

The cause, when it is not 0: fairseq 0.12 builds an epoch's batches with the sentence order seeded
by seed + the epoch the batch iterator was created in, and reuses that iterator for every later
epoch. A run resumed at epoch e creates it at e, so sentences of equal length are tied in another
order, land elsewhere in their batches and meet other dropout draws. Stopped mid-epoch, the run
resumes in the iterator's own epoch and repeats exactly. `--train-flags "--update-epoch-batch-itr True"`
builds every epoch's batches from seed + epoch, resumed or not.

    python benchmarks/resume_drift.py [--model no_td] [--stop 12] [--updates 24] [--dropout 0.1]
                                      [--train-flags "..."]
"""
import argparse
import os
import shlex
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def largest_difference(a, b):
    import torch
    first, second = (torch.load(os.path.join(d, "checkpoint_last.pt"), weights_only=False)["model"] for d in (a, b))
    return max((first[k].float() - second[k].float()).abs().max().item() for k in first)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="no_td", help="a model of the study (td_fairseq/study/conf/model)")
    p.add_argument("--stop", type=int, default=12, help="the update the interrupted run stops at")
    p.add_argument("--updates", type=int, default=24)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--train-flags", default="", help="more fairseq-train flags for all three runs")
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    from hydra import compose, initialize_config_dir
    from td_fairseq.results import git_commit, machine
    from td_fairseq.study import job

    job.register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(REPO, "td_fairseq", "study", "conf"), version_base="1.3"):
        cfg = compose(config_name="smoke", overrides=[f"model={args.model}"])
    with tempfile.TemporaryDirectory() as tmp:
        data = job.prepare_data(cfg, tmp)

        def train(name, updates):
            save_dir = os.path.join(tmp, name)
            flags = job.train_flags(cfg, 1, updates) + ["--dropout", str(args.dropout), *shlex.split(args.train_flags)]
            job.train(cfg, data, save_dir, flags, updates)
            os.remove(os.path.join(save_dir, "train.json"))  # else job.train takes the run as done
            return save_dir

        straight, again = train("straight", args.updates), train("again", args.updates)
        train("resumed", args.stop)
        resumed = train("resumed", args.updates)
        control, drift = largest_difference(straight, again), largest_difference(straight, resumed)
    print(f"commit {git_commit()} | {machine()}")
    print("command: python benchmarks/resume_drift.py " + shlex.join(argv if argv is not None else sys.argv[1:]))
    recipe = "smoke recipe" + (f" {args.train_flags}" if args.train_flags else "")
    print(f"{recipe}, {args.model}, dropout {args.dropout}, {args.updates} updates: largest weight difference "
          f"between two uninterrupted runs {control:.3g}; uninterrupted against stopped at {args.stop} and "
          f"resumed {drift:.3g}")


if __name__ == "__main__":
    main()
