"""Serving 2:4 weights: the conversion's bookkeeping (with a stand-in converter, as CPUs have no
semi-structured kernels) and the loader's dense fallback, which must translate exactly like the
plain dense model."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from td_fairseq import load_for_inference
from td_fairseq.sparsity import follows_pattern
from td_fairseq.sparsity.patterns import nm_mask
from td_fairseq.tools import semi_structured as sst
from td_fairseq.tools.inprocess import build, random_checkpoint, sample, source_batches, write_dictionaries

TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
        "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--td-type", "none"]


def two_four(state):
    return {k: v.masked_fill(nm_mask(v.abs(), (2, 4)), 0) if k.endswith(("proj.weight", "fc1.weight", "fc2.weight"))
            and "output_projection" not in k else v for k, v in state.items()}


def test_package_import_stays_free_of_fairseq():
    code = "import sys, td_fairseq; td_fairseq.load_for_inference; sys.exit('fairseq' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_convert_counts_every_linear_and_keeps_the_unfit_dense():
    model, _, _ = build(extra=["--td-type", "none"])
    sst.prune_to_two_four(model)
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        model.encoder.layers[0].fc1.weight.add_(1.0)  # no longer 2:4

    def stand_in(weight):
        if weight.data_ptr() == model.decoder.layers[1].self_attn.q_proj.weight.data_ptr():
            raise RuntimeError("kernel refused\nsecond line")
        return weight.clone()

    report = sst.convert_linears(model, convert=stand_in)
    assert len(report["converted"]) == 32 - 2  # 2+2 layers: 12 encoder and 20 decoder linears
    assert report["dense"] == {"weight does not follow 2:4": ["encoder.layers.0.fc1"],
                               "RuntimeError: kernel refused": ["decoder.layers.1.self_attn.q_proj"]}
    assert "30 of 32" in sst.summary(report) and report["backend"] in ("cusparselt", "cutlass")
    converted = model.encoder.layers[0].fc2
    assert converted.weight.requires_grad is False  # frozen for serving
    x = torch.randn(converted.in_features, 5, dtype=torch.bfloat16).t()  # not contiguous: made so first
    assert len(converted._forward_pre_hooks) == 1 and converted(x).shape == (5, converted.out_features)


def test_convert_refuses_full_precision_and_wrong_results():
    model, _, _ = build(extra=["--td-type", "none"])
    sst.prune_to_two_four(model)
    assert set(sst.convert_linears(model, convert=lambda w: w.clone())["dense"]) == {"dtype torch.float32"}
    model = model.to(torch.bfloat16)
    report = sst.convert_linears(model, targets="ffn", convert=lambda w: -w)
    assert not report["converted"] and all(why.startswith("trial output differs") for why in report["dense"])


def test_pruned_model_follows_the_pattern():
    model, _, _ = build(extra=["--td-type", "none"])
    assert sst.prune_to_two_four(model) > 0
    assert follows_pattern(model.encoder.layers[0].self_attn.k_proj.weight, (2, 4))


def test_fast_path_is_disabled_on_every_attention_module(monkeypatch):
    model, criterion, vocab = build(extra=["--td-type", "none"])
    assert sst.disable_attention_fast_path(model) == 2 + 2 * 2
    calls = []
    monkeypatch.setattr(F, "multi_head_attention_forward", lambda *a, **k: calls.append(1))
    criterion(model, sample(vocab))
    assert not calls


def test_support_says_why_not_on_cpu():
    assert "not a CUDA GPU" in sst.support("cpu", torch.bfloat16)


def translate(model, task, samples):
    from fairseq.dataclass.configs import GenerationConfig
    generator = task.build_generator([model], GenerationConfig(beam=4, max_len_a=0, max_len_b=12))
    with torch.no_grad():
        return [h[0]["tokens"].tolist() for s in samples for h in task.inference_step(generator, [model], s)]


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_cpu_fallback_translates_exactly_like_the_dense_model(tmp_path, dtype):
    write_dictionaries(str(tmp_path), 60)
    path = random_checkpoint(str(tmp_path), TINY, edit=two_four)
    notices = []
    sparse, task, report = load_for_inference(path, semi_structured=True, dtype=dtype, device="cpu",
                                              data_bin=str(tmp_path), log=notices.append)
    dense, _, none = load_for_inference(path, dtype=dtype, data_bin=str(tmp_path))
    assert none is None and len(notices) == 1 and "serving dense weights" in notices[0]
    assert not report["converted"] and "not a CUDA GPU" in notices[0]
    assert all(m.skip_embed_dim_check for m in sparse.modules() if hasattr(m, "skip_embed_dim_check"))
    samples = source_batches(task.source_dictionary, 12, 4, 9, seed=3)
    assert translate(sparse, task, samples) == translate(dense, task, samples)


def test_data_bin_defaults_to_the_checkpoints_own(tmp_path):
    write_dictionaries(str(tmp_path), 60)
    path = random_checkpoint(str(tmp_path), TINY)
    model, task, _ = load_for_inference(path)
    assert not model.training and len(task.source_dictionary) == 60 + 4
