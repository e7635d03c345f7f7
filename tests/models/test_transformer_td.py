"""Coverage of targeted dropout inside the real fairseq Transformer."""
import copy

import pytest
import torch
import torch.nn.functional as F

from td_fairseq.sparsity import remove_views, targeted_unit_mask, targeted_weight_mask, views_of
from td_fairseq.tools.inprocess import build, sample

ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")


def expected_targets(layers=2):
    names = []
    for i in range(layers):
        names += [f"encoder.layers.{i}.self_attn.{p}" for p in ATTN]
        names += [f"encoder.layers.{i}.fc1", f"encoder.layers.{i}.fc2"]
        names += [f"decoder.layers.{i}.self_attn.{p}" for p in ATTN]
        names += [f"decoder.layers.{i}.encoder_attn.{p}" for p in ATTN]
        names += [f"decoder.layers.{i}.fc1", f"decoder.layers.{i}.fc2"]
    return sorted(names)


TD_ALL = ["--td-type", "weight", "--td-gamma", "0.5", "--td-alpha", "1.0"]


def zeroed_copy(model, masks):
    """A stock model whose targeted weights are explicitly zero."""
    stock = remove_views(copy.deepcopy(model))
    with torch.no_grad():
        for name, mask in masks.items():
            stock.get_submodule(name).weight.masked_fill_(mask, 0)
    return stock


def check_gradients_where_dropped(model, criterion, vocab, targeted, monkeypatch) -> dict:
    """With alpha 1 every targeted weight is dropped: its gradient is exactly zero, and every other
    gradient is that of a stock model whose targeted weights are zero, through fairseq's attention
    fast path. Returns the training step's log."""
    stock = zeroed_copy(model, targeted).train()
    calls = []
    fast_path = F.multi_head_attention_forward
    monkeypatch.setattr(F, "multi_head_attention_forward", lambda *a, **k: calls.append(1) or fast_path(*a, **k))
    model.train()
    batch = sample(vocab)
    loss, _, log = criterion(model, batch)
    loss.backward()
    assert calls, "fairseq's attention fast path was not exercised"
    criterion(stock, batch)[0].backward()
    for name, module in views_of(model):
        grad = module._parameters["weight"].grad
        assert (grad[targeted[name]] == 0).all(), name
        reference = stock.get_submodule(name).weight.grad
        assert torch.allclose(grad[~targeted[name]], reference[~targeted[name]], atol=1e-6), name
        assert (grad[~targeted[name]] != 0).any(), name
    return log


def test_gradient_is_zero_exactly_on_dropped_entries_in_training(monkeypatch):
    model, criterion, vocab = build(extra=TD_ALL)
    targeted = {n: targeted_weight_mask(m._parameters["weight"], 0.5) for n, m in views_of(model)}
    log = check_gradients_where_dropped(model, criterion, vocab, targeted, monkeypatch)
    assert log["td_drop"] == pytest.approx(0.5)


def test_full_gradients_in_eval_mode():
    model, criterion, vocab = build(extra=TD_ALL)
    stock = remove_views(copy.deepcopy(model)).eval()
    model.eval()
    batch = sample(vocab)
    criterion(model, batch)[0].backward()
    criterion(stock, batch)[0].backward()
    for name, module in views_of(model):
        grad = module._parameters["weight"].grad
        assert torch.equal(grad, stock.get_submodule(name).weight.grad), name
        assert (grad != 0).float().mean() > 0.5, name




def test_every_attention_and_ffn_matrix_is_targeted_and_nothing_else():
    model, _, _ = build(extra=TD_ALL)
    assert sorted(name for name, _ in views_of(model)) == expected_targets()


@pytest.mark.parametrize("training", [True, False])
def test_output_equals_explicitly_zeroed_stock_model(training):
    """alpha 1 in training, --td-eval-mask in eval: every read sees exactly the masked weight."""
    model, _, vocab = build(extra=TD_ALL + ["--td-eval-mask"])
    masks = {n: targeted_weight_mask(m._parameters["weight"], 0.5) for n, m in views_of(model)}
    stock = zeroed_copy(model, masks)
    model.train(training)
    stock.train(training)
    net_input = sample(vocab)["net_input"]
    out, stock_out = model(**net_input)[0], stock(**net_input)[0]
    assert torch.allclose(out, stock_out, atol=1e-5)
    plain = remove_views(copy.deepcopy(model)).train(training)
    assert not torch.allclose(plain(**net_input)[0], out, atol=1e-3)  # the mask matters


def test_eval_mask_is_deterministic_and_exact():
    model, _, _ = build(extra=["--td-gamma", "0.75", "--td-alpha", "0.5", "--td-eval-mask"])
    model.eval()
    for name, module in views_of(model):
        raw = module._parameters["weight"]
        assert torch.equal(module.weight, raw.masked_fill(targeted_weight_mask(raw, 0.75), 0)), name
        assert torch.equal(module.weight, module.weight)


def test_incremental_decoding_sees_eval_mask():
    """Generation takes the slow attention path with incremental state: same masked weights."""
    model, _, vocab = build(extra=TD_ALL + ["--td-eval-mask"])
    masks = {n: targeted_weight_mask(m._parameters["weight"], 0.5) for n, m in views_of(model)}
    stock = zeroed_copy(model, masks).eval()
    model.eval()
    s = sample(vocab)["net_input"]
    enc, stock_enc = model.encoder(s["src_tokens"], s["src_lengths"]), stock.encoder(s["src_tokens"], s["src_lengths"])
    state, stock_state = {}, {}
    prev = s["prev_output_tokens"]
    for t in range(1, prev.shape[1] + 1):
        out = model.decoder(prev[:, :t], encoder_out=enc, incremental_state=state)[0]
        ref = stock.decoder(prev[:, :t], encoder_out=stock_enc, incremental_state=stock_state)[0]
        assert torch.allclose(out, ref, atol=1e-5)


def test_default_targets_exclude_embeddings_and_selectable():
    model, _, _ = build(extra=["--share-all-embeddings", "--td-targets", "attn,ffn,embed,output"])
    names = [n for n, _ in views_of(model)]
    assert "encoder.embed_tokens" in names and "decoder.output_projection" in names
    embed = model.encoder.embed_tokens
    assert embed.td is model.decoder.output_projection.td  # tied: one controller
    assert model.decoder.output_projection._parameters["weight"] is embed._parameters["weight"]
    plain, _, _ = build()
    assert not any("embed" in n or "output" in n for n, _ in views_of(plain))


def test_state_dict_keys_match_stock_transformer():
    td_model, _, vocab = build()
    stock, _, _ = build(arch="transformer_tiny", extra=["--encoder-ffn-embed-dim", "256",
                                                        "--decoder-ffn-embed-dim", "256"], vocab=vocab)
    assert list(td_model.state_dict()) == list(stock.state_dict())
    assert {k: v.shape for k, v in td_model.state_dict().items()} == {k: v.shape for k, v in stock.state_dict().items()}


def test_td_type_none_attaches_nothing():
    model, _, _ = build(extra=["--td-type", "none"])
    assert not views_of(model)


def test_unit_td_drops_rows_in_model():
    model, criterion, vocab = build(extra=["--td-type", "unit", "--td-gamma", "0.5", "--td-alpha", "1.0"])
    units = {n: targeted_unit_mask(m._parameters["weight"], 0.5).flatten() for n, m in views_of(model)}
    model.train()
    loss, _, _ = criterion(model, sample(vocab))
    loss.backward()
    for name, module in views_of(model):
        grad = module._parameters["weight"].grad
        assert units[name].sum() == grad.shape[0] // 2, name
        assert (grad[units[name]] == 0).all(), name
        assert (module.weight[units[name]] == 0).all(), name


def test_every_td_arch_exports_to_a_registered_stock_arch():
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    from td_fairseq.transformer_archs import STOCK_ARCH
    td_archs = {arch for arch, model in ARCH_MODEL_NAME_REGISTRY.items() if model == "transformer_td"}
    assert td_archs == set(STOCK_ARCH)
    assert all(ARCH_MODEL_NAME_REGISTRY[stock] == "transformer" for stock in STOCK_ARCH.values())
