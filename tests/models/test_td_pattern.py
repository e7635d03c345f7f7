"""N:M targeted dropout and the mask interval inside the real fairseq Transformer."""

import pytest
import torch

from td_fairseq.sparsity import follows_pattern, views_of
from td_fairseq.sparsity.masks import targeted_pattern_mask
from td_fairseq.tools.inprocess import build, sample

from .test_transformer_td import check_gradients_where_dropped

PATTERN_ALL = ["--td-type", "weight", "--td-pattern", "2:4", "--td-alpha", "1.0"]


def test_pattern_td_covers_every_matrix_on_every_path_with_zero_gradient_where_dropped(monkeypatch):
    model, criterion, vocab = build(extra=PATTERN_ALL)
    targeted = {n: targeted_pattern_mask(m._parameters["weight"], (2, 4)) for n, m in views_of(model)}
    log = check_gradients_where_dropped(model, criterion, vocab, targeted, monkeypatch)
    assert log["td_drop"] == pytest.approx(0.5) and log["td_gamma"] == 0.5
    for name, module in views_of(model):
        assert follows_pattern(module.weight, (2, 4)), name


def test_pattern_and_interval_reach_every_view_from_the_command_line():
    model, _, _ = build(extra=["--td-pattern", "1:4", "--td-mask-interval", "10"])
    configs = {m.td.config for _, m in views_of(model)}
    assert len(configs) == 1
    (config,) = configs
    assert config.pattern == "1:4" and config.mask_interval == 10


@pytest.mark.parametrize("extra, message", [
    (["--td-pattern", "2:4", "--td-type", "unit"], "weight TD"),
    (["--td-pattern", "2:3"], "multiple of M=3"),
])
def test_bad_pattern_is_refused_at_build(extra, message):
    with pytest.raises(ValueError, match=message):
        build(extra=extra)


@pytest.mark.parametrize("value", ["0", "x"])
def test_bad_interval_is_refused_by_the_parser(value):
    with pytest.raises(SystemExit):
        build(extra=["--td-mask-interval", value])


def test_gradient_accumulation_reuses_the_set_and_draws_afresh():
    model, criterion, vocab = build(extra=["--td-gamma", "0.5", "--td-alpha", "0.5"])
    model.train()
    model.set_num_updates(3)
    name, module = views_of(model)[0]
    drops = []
    for seed in (0, 1):  # two micro-batches of one update
        criterion(model, sample(vocab, seed=seed))[0].backward()
        drops.append(module.td._last_dropped.clone())
    targeted = module.td._cached[1]
    assert not torch.equal(drops[0], drops[1])
    assert not (drops[0] & ~targeted).any() and not (drops[1] & ~targeted).any()
