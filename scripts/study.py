"""Run a study: each job is one (model, seed) of a hydra config, launched by hydra's multirun.

    python scripts/study.py -m --config-name smoke hydra.sweep.dir=DIR                 (one after another)
    python scripts/study.py -m --config-name smoke hydra/launcher=joblib hydra.launcher.n_jobs=2
    python scripts/study.py -m --config-name multi30k updates=N hydra/launcher=submitit_slurm \
        hydra.launcher.partition=P hydra.launcher.timeout_min=240 hydra.launcher.cpus_per_task=4 threads=4

Configs: td_fairseq/study/conf (smoke, multi30k, multi30k_budget, multi30k_650). Each job writes
DIR/<its overrides>/result.json; a rerun skips finished jobs and resumes the others from their
checkpoints. The report: python scripts/study_report.py DIR.
"""
import os
import sys

import hydra

from td_fairseq.study.job import register_resolvers, run_job

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "td_fairseq", "study", "conf")


@hydra.main(config_path=CONF, config_name="smoke", version_base="1.3")
def study(cfg):
    run_job(cfg)


def main(argv=None):
    register_resolvers()
    if argv is not None:  # hydra reads sys.argv
        sys.argv = [sys.argv[0], *argv]
    study()


if __name__ == "__main__":
    main()
