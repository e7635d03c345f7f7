"""Studies as hydra configs (conf/): a job is one (model, seed), run by scripts/study.py under
any hydra launcher (job.py); scripts/study_report.py turns a study folder into tables (report.py)."""
