"""The baselines (--sparsity-method) inside the real fairseq Transformer, and their export."""
import argparse
import json

import pytest
import torch

from td_fairseq.sparsity import TargetedDropout, views_of
from td_fairseq.sparsity.baselines import (GradualMagnitudePruning, L0Gate, L1Penalty, RandomDropout, Smallify,
                                           VariationalDropout)
from td_fairseq.sparsity.options import option_keys
from td_fairseq.tools.checkpoint import stock_checkpoint
from td_fairseq.tools.inprocess import build, sample

from ..conftest import TRAIN_ARGS, run_cli
from ..tools.test_checkpoint import prune_script
from .test_transformer_td import expected_targets

STOCK_TINY = ["--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256"]
VIEWS = {"dropout": RandomDropout, "unit_dropout": RandomDropout, "l1": L1Penalty, "l0": L0Gate,
         "variational": VariationalDropout, "gmp": GradualMagnitudePruning, "smallify": Smallify}


def test_default_method_is_targeted_dropout():
    model, _, _ = build()
    assert all(isinstance(m.td, TargetedDropout) for _, m in views_of(model))
    assert sorted(n for n, _ in views_of(model)) == expected_targets()


@pytest.mark.parametrize("method", sorted(VIEWS))
def test_each_method_covers_the_targets_and_trains(method):
    model, criterion, vocab = build(extra=["--sparsity-method", method])
    assert sorted(n for n, _ in views_of(model)) == expected_targets()
    assert all(type(m.td) is VIEWS[method] for _, m in views_of(model))
    model.train()
    model.set_num_updates(3)
    batch = sample(vocab)
    loss, sample_size, log = criterion(model, batch)
    loss.backward()
    views = [m.td for _, m in views_of(model)]
    terms = [v.regularization_loss() for v in views]
    if method in ("l1", "l0", "variational", "smallify"):
        assert log["reg_loss"].item() == pytest.approx(sum(terms).item() * sample_size, rel=1e-5)
    else:
        assert "reg_loss" not in log and all(t is None for t in terms)
    if method in ("l0", "variational", "smallify"):
        extra = [p for v in views for p in v.parameters()]
        assert extra and all(p.grad is not None and (p.grad != 0).any() for p in extra)
        gate = {"l0": "log_alpha", "variational": "log_sigma2", "smallify": "switch"}[method]
        # parameters: the optimizer sees them
        assert {f"{n}.td.{gate}" for n, _ in views_of(model)} <= set(dict(model.named_parameters()))


def test_dropout_rate_defaults_to_the_matching_td_rate_or_explicit():
    model, _, _ = build(extra=["--sparsity-method", "dropout", "--td-gamma", "0.5", "--td-alpha", "0.4"])
    assert [m.td.rate for _, m in views_of(model)] == [pytest.approx(0.2)] * len(expected_targets())
    model, _, _ = build(extra=["--sparsity-method", "unit_dropout", "--drop-rate", "0.3"])
    assert {(m.td.rate, m.td.by_unit) for _, m in views_of(model)} == {(0.3, True)}


def test_options_reach_the_views():
    model, _, _ = build(extra=["--sparsity-method", "l0", "--l0-form", "unit", "--l0-coef", "0.25"])
    fc1 = model.encoder.layers[0].fc1
    assert fc1.td.coef == 0.25 and fc1.td.log_alpha.shape == (fc1._parameters["weight"].shape[0], 1)
    assert "encoder.layers.0.fc1.td.log_alpha" in model.state_dict()
    model, _, _ = build(extra=["--sparsity-method", "gmp", "--gmp-sparsity", "0.6", "--gmp-start", "4",
                               "--gmp-steps", "2", "--gmp-interval", "5"])
    view = model.decoder.layers[1].fc2.td
    assert (view.final, view.start, view.steps, view.interval) == (0.6, 4, 2, 5)
    model, _, _ = build(extra=["--sparsity-method", "variational", "--vd-coef", "0.5", "--td-targets", "ffn"])
    assert len(views_of(model)) == 8 and model.encoder.layers[0].fc1.td.coef == 0.5
    model, _, _ = build(extra=["--sparsity-method", "smallify"])
    view = model.encoder.layers[0].fc1.td
    assert (view.coef, view.momentum, view.threshold) == (1e-4, 0.9, 0.5)
    model, _, _ = build(extra=["--sparsity-method", "smallify", "--smallify-coef", "0.25", "--smallify-momentum",
                               "0.5", "--smallify-threshold", "0.8"])
    fc1 = model.encoder.layers[0].fc1
    assert (fc1.td.coef, fc1.td.momentum, fc1.td.threshold) == (0.25, 0.5, 0.8)
    assert fc1.td.switch.shape == (fc1._parameters["weight"].shape[0], 1)
    assert {f"encoder.layers.0.fc1.td.{k}" for k in ("switch", "sign_mean", "sign_var", "pruned")} <= set(
        model.state_dict())


def test_gmp_follows_set_num_updates_of_the_model():
    model, _, vocab = build(extra=["--sparsity-method", "gmp", "--gmp-sparsity", "0.5", "--gmp-start", "2",
                                   "--gmp-steps", "2", "--gmp-interval", "3"])
    model.train()
    fc1 = model.encoder.layers[0].fc1
    fractions = {}
    for step in (1, 2, 4, 5, 7, 8, 20):
        model.set_num_updates(step)
        model(**sample(vocab)["net_input"])
        fractions[step] = fc1.td.mask.float().mean().item()
    # s = .5 * (1 - (1 - t/6)^3): 0 until update 5, .4375 at 5..7, .5 from 8 on
    assert fractions == {1: 0.0, 2: 0.0, 4: 0.0, 5: pytest.approx(0.4375, abs=0.01), 7: fractions[5],
                         8: 0.5, 20: 0.5}


def test_smallify_follows_set_num_updates_of_the_model():
    model, _, vocab = build(extra=["--sparsity-method", "smallify"])
    model.train()
    for step in (0, 1, 1, 2):  # update 1 read twice: its signs count once
        model.set_num_updates(step)
        model(**sample(vocab)["net_input"])
    views = [m.td for _, m in views_of(model)]
    assert all(torch.allclose(v.sign_mean, torch.full_like(v.sign_mean, 0.19)) for v in views)
    assert not any(v.pruned.any() for v in views)


def randomize(model, method):
    with torch.no_grad():
        for _, module in views_of(model):
            if method == "l0":
                module.td.log_alpha.normal_(1.0, 3.0)
            elif method == "variational":
                module.td.log_sigma2.normal_(-4.0, 3.0)
            elif method == "smallify":
                module.td.switch.normal_(1.0, 0.5)
                module.td.pruned.copy_(module.td.switch < 0.5)
    if method == "gmp":
        model.train()
        model.set_num_updates(1000)
        model(**sample(model.vocab)["net_input"])


@pytest.mark.parametrize("method", ["l0", "variational", "gmp", "smallify", "l1", "dropout"])
def test_export_folds_views_into_a_stock_transformer(method):
    model, _, vocab = build(extra=["--sparsity-method", method, "--gmp-sparsity", "0.7"])
    model.vocab = vocab
    randomize(model, method)
    model.eval()
    cfg = argparse.Namespace(arch="transformer_td_tiny", sparsity_method=method, l0_coef=1e-6, gmp_sparsity=0.7)
    state = {"cfg": {"model": cfg}, "model": model.state_dict()}
    exported = stock_checkpoint(state)
    assert not any(".td." in k for k in exported["model"])
    assert not set(option_keys()) & set(exported["cfg"]["model"])
    stock, _, _ = build(arch="transformer_tiny", extra=STOCK_TINY, vocab=vocab)
    stock.load_state_dict(exported["model"], strict=True)
    stock.eval()
    net_input = sample(vocab)["net_input"]
    assert torch.allclose(model(**net_input)[0], stock(**net_input)[0], atol=1e-6)
    weights = [exported["model"][f"{n}.weight"] for n, _ in views_of(model)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert (zeros > 0.05) == (method in ("l0", "variational", "gmp", "smallify")), zeros


def test_every_model_option_of_the_table_is_dropped_on_export():
    from td_fairseq.models.transformer_td import TransformerTDModel
    parser = argparse.ArgumentParser()
    TransformerTDModel.add_args(parser)
    stock = argparse.ArgumentParser()
    super(TransformerTDModel, TransformerTDModel).add_args(stock)
    ours = {a.dest for a in parser._actions} - {a.dest for a in stock._actions}
    assert ours == set(option_keys())


BAD = [("--sparsity-method", "magic"), ("--drop-rate", "1.5"), ("--drop-rate", "nan"), ("--l1-coef", "-1"),
       ("--l0-coef", "x"), ("--l0-form", "row"), ("--vd-coef", "inf"), ("--gmp-sparsity", "2"),
       ("--gmp-start", "-1"), ("--gmp-steps", "0"), ("--gmp-interval", "1.5"), ("--smallify-coef", "-1"),
       ("--smallify-momentum", "1"), ("--smallify-momentum", "-0.1"), ("--smallify-threshold", "0")]


@pytest.mark.parametrize("option, value", BAD)
def test_bad_baseline_options_are_rejected_with_one_error_line(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        build(extra=["--sparsity-method", "gmp", option, value])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0]


def test_trained_gmp_model_exports_and_generates_under_plain_fairseq(data_bin, tmp_path):
    """Real CLI: train with GMP (mask at 50 % from update 4), export folded, stock generate."""
    from td_fairseq import cli
    gmp = ["--sparsity-method", "gmp", "--gmp-sparsity", "0.5", "--gmp-steps", "2", "--gmp-interval", "2"]
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, *gmp, "--max-update", "6", "--save-dir", tmp_path / "ckpt")
    out = tmp_path / "stock"
    assert cli.run(prune_script.main, [str(tmp_path / "ckpt" / "checkpoint_last.pt"), "--sparsity", "0",
                                       "--out-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["levels"][0]["measured_sparsity"] == pytest.approx(0.5)  # the folded GMP mask
    state = torch.load(out / "sparsity_0.00.pt", weights_only=True)
    assert not any(".td." in k for k in state["model"]) and "sparsity_method" not in state["cfg"]["model"]
    result = run_cli("fairseq-generate", data_bin, "--path", out / "sparsity_0.00.pt", "--beam", "2", "--cpu",
                     "--max-tokens", "2000", cwd=tmp_path)
    assert result.stdout.count("\nH-") >= 30
