from setuptools import find_packages, setup

setup(
    name="td_fairseq",
    version="0.1.0",
    description="Targeted dropout (Gomez et al. 2019) for fairseq Transformers, with pruning and BLEU sweeps",
    packages=find_packages(include=["td_fairseq", "td_fairseq.*"]),
    python_requires=">=3.8",
    install_requires=[
        "torch>=2.0",
        "fairseq==0.12.2; python_version < '3.11'",
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "sacrebleu>=2.0",
        "sentencepiece",
        "matplotlib",
        "tqdm",
        "scikit-learn",
    ],
    # serve: CTranslate2, the engine fairseq models are deployed on (scripts/export_ctranslate2.py)
    # study: hydra's launchers for scripts/study.py (joblib: N jobs at once; submitit: SLURM or local)
    extras_require={"test": ["pytest"], "serve": ["ctranslate2==4.8.5"],
                    "study": ["hydra-joblib-launcher==1.2.0", "hydra-submitit-launcher==1.2.0"]},
    package_data={"td_fairseq.study": ["conf/*.yaml", "conf/*/*.yaml"]},  # the study configs
)
