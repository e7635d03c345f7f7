"""Bad input the existing tests do not cover: one clear line, a non-zero exit, nothing written.

The cases are in cases.py and the harness in harness.py, both shared with
tests/hardening/bad_input_table.py (python -m tests.hardening.bad_input_table), which also runs the existing cases and writes the table of
docs/hardening.md.
"""
import pytest

from .cases import FAIRSEQ_CASES, NEW_CASES
from .harness import Inputs, run_case


@pytest.fixture
def inputs(tmp_path, data_bin, trained_checkpoint, corpus_dir):
    root = tmp_path / "case"
    root.mkdir()
    return Inputs(root, data_bin, trained_checkpoint, corpus_dir)


def test_the_table_is_large_and_distinct():
    names = [case.name for case in NEW_CASES]
    assert len(names) == len(set(names)) >= 20


@pytest.mark.parametrize("case", NEW_CASES, ids=[case.name for case in NEW_CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, inputs):
    outcome = run_case(case, inputs)
    assert outcome.returncode != 0, outcome.stderr[-2000:]
    if case.exit_code is not None:
        assert outcome.returncode == case.exit_code
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert len(outcome.error_lines) == 1, outcome.stderr[-3000:]
    assert case.expect in outcome.error_lines[0], outcome.error_lines[0]
    assert outcome.changed == [], f"bad input wrote or changed {outcome.changed}"


@pytest.mark.parametrize("case", FAIRSEQ_CASES, ids=[case.name for case in FAIRSEQ_CASES])
def test_fairseqs_own_errors_fail_without_writing_a_checkpoint(case, inputs):
    """fairseq's own loading code prints a traceback here (docs/hardening.md): we only hold
    that it fails, names the problem last, and writes no checkpoint."""
    outcome = run_case(case, inputs)
    assert outcome.returncode != 0
    assert case.expect in outcome.last_line, outcome.stderr[-2000:]
    assert not [p for p in outcome.changed if p.endswith(".pt")], outcome.changed
