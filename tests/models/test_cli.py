"""The real command-line entry points with --user-dir td_fairseq."""
import argparse
import re

import pytest
import torch

from ..conftest import TRAIN_ARGS, run_cli


def train_log_values(stdout):
    """{num_updates: {key: value}} from fairseq's train_inner lines."""
    rows = {}
    for line in stdout.splitlines():
        if "train_inner" not in line and "| epoch" not in line:
            continue
        fields = dict(re.findall(r"(\w+)=([-\d.e]+)", line))
        if "num_updates" in fields:
            rows[int(fields["num_updates"])] = {k: float(v) for k, v in fields.items()}
    return rows


def test_train_then_generate_without_environment_override(trained_checkpoint, data_bin):
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert state["cfg"]["model"].arch == "transformer_td_tiny"
    result = run_cli("fairseq-generate", data_bin, "--user-dir", "td_fairseq", "--path", trained_checkpoint,
                     "--beam", "2", "--cpu", "--max-tokens", "2000", "--gen-subset", "test")
    assert "Generate test with beam=2" in result.stdout + result.stderr
    assert result.stdout.count("\nH-") >= 30


def test_resumed_run_continues_the_ramp(data_bin, tmp_path):
    ramp = ["--td-ramp-updates", "10", "--td-gamma", "0.75", "--td-alpha", "0.66", "--save-interval-updates", "4"]
    straight = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, *ramp, "--max-update", "8",
                       "--save-dir", tmp_path / "straight")
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, *ramp, "--max-update", "4", "--save-dir", tmp_path / "resumed")
    resumed = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, *ramp, "--max-update", "8",
                      "--save-dir", tmp_path / "resumed")
    expected, got = train_log_values(straight.stdout + straight.stderr), train_log_values(resumed.stdout + resumed.stderr)
    assert min(got) == 5, "the second run must start at update 5, from the checkpoint"
    for update in range(5, 9):
        assert got[update]["td_gamma"] == expected[update]["td_gamma"]
        assert got[update]["td_alpha"] == expected[update]["td_alpha"]
    # update 5 is computed at step 4 of the ramp: gamma = .95 * .75 * 4/10, alpha = .66 * 4/20
    assert got[5]["td_gamma"] == pytest.approx(0.95 * 0.75 * 0.4, abs=1e-4)
    assert got[5]["td_alpha"] == pytest.approx(0.66 * 0.2, abs=1e-4)


BAD_OPTIONS = [("--td-gamma", "1.5"), ("--td-gamma", "nan"), ("--td-alpha", "-0.1"), ("--td-alpha", "x"),
               ("--td-type", "magic"), ("--td-ramp-updates", "-5"), ("--td-targets", "attn,bogus")]


@pytest.mark.parametrize("option, value", BAD_OPTIONS)
def test_bad_options_are_rejected_by_the_parser(data_bin, capsys, option, value):
    from fairseq import options

    import td_fairseq.criterions  # noqa: F401
    import td_fairseq.models  # noqa: F401
    parser = options.get_training_parser()
    with pytest.raises(SystemExit) as exit_info:
        options.parse_args_and_arch(parser, [str(data_bin), *TRAIN_ARGS, option, value])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0]


def test_bad_option_through_the_cli_writes_nothing(data_bin, tmp_path):
    result = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--td-gamma", "1.5", "--max-update", "1",
                     "--save-dir", tmp_path, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--td-gamma" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
