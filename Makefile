# `make demo` and `make test` each create or reuse .venv and install only what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.installed
# fairseq's other dependencies, listed so torchaudio (audio code only) stays out.
FAIRSEQ_DEPS := cffi cython "hydra-core==1.3.2" "omegaconf==2.3.0" numpy regex bitarray packaging tqdm
# tensorboardX (numpy and protobuf only): what `fairseq-train --tensorboard-logdir` writes with,
# and without it importing fairseq prints an "install tensorboardX" notice. Viewing the logs
# needs the `tensorboard` program itself, which is not installed here.
LOGGING := "tensorboardX==2.6.5"
# setup.py's `serve` extra (a binary wheel; numpy and pyyaml only), listed here because -e . is installed
# without dependencies: CTranslate2 export, the sweep's --engine ctranslate2 and their tests.
SERVE := "ctranslate2==4.8.5"
# setup.py's `study` extra, for the same reason: hydra's joblib and submitit launchers (scripts/study.py)
STUDY := "hydra-joblib-launcher==1.2.0" "hydra-submitit-launcher==1.2.0" "submitit==1.5.4"

.PHONY: demo test install clean

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q --durations=25 tests

install: $(STAMP)

# torch is pinned to the CPU wheel; fairseq-fixed builds against it (no build isolation,
# which would fetch another torch). On a GPU machine see README.md.
# The Makefile is a prerequisite too: a package added here reaches existing environments.
$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.0" numpy cython
	$(PIP) $(FAIRSEQ_DEPS) $(LOGGING) $(SERVE) $(STUDY) sacrebleu sentencepiece matplotlib scikit-learn pillow pytest
	$(PY) -c "import fairseq" 2>/dev/null || $(PIP) --no-deps --no-build-isolation "fairseq-fixed==0.12.3.1"
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

clean:
	rm -rf $(VENV) *.egg-info
