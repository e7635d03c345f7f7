import pytest

from td_fairseq import cli


def test_help_shows_real_defaults_only():
    parser = cli.ArgumentParser(prog="x")
    parser.add_argument("--pruner", default="magnitude", help="which pruner")
    parser.add_argument("--data-bin", help="calibration data")
    parser.add_argument("--quiet", action="store_true", help="less output")
    text = parser.format_help()
    assert "(default: magnitude)" in text
    assert "default: None" not in text and "default: False" not in text


def test_bad_arguments_raise_a_user_error():
    parser = cli.ArgumentParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(cli.UserError, match="invalid int value"):
        parser.parse_args(["--n", "two"])
