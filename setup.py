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
    extras_require={"test": ["pytest"]},
)
