"""The report of a study folder made by scripts/study.py.

    study_report.py DIR [--out FOLDER] [--finished JOBS]

Writes DIR/report/ (or FOLDER): results.csv and results.json (every row of every job), tables.md (BLEU mean
± std over seeds, target verdicts, the best one-shot row per level, validation losses and the
update of the lowest one) and curves.png. Failed, unfinished and missing jobs are named (one
warning line each) and the rest is reported. Finished jobs' copies (the study's `finished=JOBS`
folder, read from DIR/multirun.yaml unless --finished names one) count as done jobs, so a new
machine's study folder reports the jobs finished on the old one.
"""
import sys

from td_fairseq import cli


def main(argv=None):
    from td_fairseq.study.report import write_report
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="the study folder (hydra.sweep.dir)")
    p.add_argument("--out", help="where to write the report (default: DIR/report)")
    p.add_argument("--finished", help="a folder of finished jobs' copies, JOB.json (default: the latest "
                                      "launch's finished=)")
    args = p.parse_args(argv)
    out, text, problems = write_report(args.dir, args.out, args.finished)
    print(text)
    for job, what in problems:
        print(f"study_report.py: warning: {job}: {what}", file=sys.stderr)
    print(f"report: {out}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
