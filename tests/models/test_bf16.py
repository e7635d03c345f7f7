"""``--bf16`` on a CPU: autocast over fp32 weights, TD and the frozen mask exact, checkpoints that
decode anywhere."""
import os

import pytest
import torch
import torch.nn.functional as F

from td_fairseq.sparsity import TargetedDropout, targeted_weight_mask, views_of
from td_fairseq.tools.inprocess import build, build_trainer, sample
from tests.conftest import TRAIN_ARGS, run_cli

from .test_transformer_td import TD_ALL


def test_bf16_trains_under_autocast_with_fp32_weights_and_loss(data_bin):
    trainer, _ = build_trainer(str(data_bin), [*TRAIN_ARGS, "--bf16"])
    # fairseq 0.12 would have made this a TPU run with a bf16 model
    assert not trainer.cfg.common.tpu and not trainer.cfg.common.bf16 and not trainer.tpu
    model = trainer.model
    assert model.autocast_dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model.train()
    batch = sample(model.encoder.dictionary)
    logits, _ = model(**batch["net_input"])
    assert logits.dtype == torch.bfloat16  # the products ran in bf16 ...
    loss, _, _ = trainer.criterion(model, batch)
    assert loss.dtype == torch.float32  # ... the log-softmax and the loss in fp32


def test_plain_training_is_untouched():
    model, _, _ = build(extra=TD_ALL)
    assert model.autocast_dtype is None


def test_gradient_is_zero_exactly_on_dropped_entries_under_bf16(monkeypatch):
    model, criterion, vocab = build(extra=TD_ALL + ["--bf16"])
    seen = []
    forward = TargetedDropout.forward
    monkeypatch.setattr(TargetedDropout, "forward", lambda self, w: seen.append(w.dtype) or forward(self, w))
    calls = []
    fast_path = F.multi_head_attention_forward
    monkeypatch.setattr(F, "multi_head_attention_forward", lambda *a, **k: calls.append(1) or fast_path(*a, **k))
    targeted = {n: targeted_weight_mask(m._parameters["weight"], 0.5) for n, m in views_of(model)}
    model.train()
    loss, _, log = criterion(model, sample(vocab))
    loss.backward()
    assert calls, "fairseq's attention fast path was not exercised"
    assert set(seen) == {torch.float32}, "the targeted set must be ranked on the fp32 weights"
    for name, module in views_of(model):
        grad = module._parameters["weight"].grad
        assert grad.dtype == torch.float32
        assert (grad[targeted[name]] == 0).all(), name  # alpha 1: every targeted entry dropped
        assert (grad[~targeted[name]] != 0).any(), name


def test_frozen_zeros_get_zero_gradient_under_bf16():
    model, criterion, vocab = build(extra=["--td-type", "none", "--freeze-mask", "--bf16"])
    zeros = {}
    with torch.no_grad():
        for name, module in views_of(model):
            weight = module._parameters["weight"]
            weight[:, ::3] = 0
            module.td.mask.copy_(weight == 0)
            zeros[name] = weight == 0
    model.train()
    criterion(model, sample(vocab))[0].backward()
    for name, module in views_of(model):
        grad = module._parameters["weight"].grad
        assert (grad[zeros[name]] == 0).all(), name
        assert (grad[~zeros[name]] != 0).any(), name


def test_memory_efficient_bf16_is_refused_in_one_line(data_bin, tmp_path):
    result = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--memory-efficient-bf16", "--max-update", "1",
                     "--save-dir", tmp_path, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--memory-efficient-bf16" in lines[0] and "use --bf16" in lines[0], result.stderr
    assert not os.listdir(tmp_path)


def train_losses(log: str) -> list:
    return [float(line.split("loss=")[1].split(",")[0]) for line in log.splitlines() if "train_inner" in line]


@pytest.fixture(scope="module")
def bf16_checkpoint(data_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("bf16")
    result = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--bf16", "--max-update", "40", "--lr", "3e-3",
                     "--save-dir", save_dir)
    return save_dir / "checkpoint_last.pt", result.stdout + result.stderr


def test_bf16_training_with_td_lowers_the_loss(bf16_checkpoint):
    _, log = bf16_checkpoint
    losses = train_losses(log)
    assert len(losses) >= 30 and "td_drop" in log
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses


def test_bf16_checkpoint_decodes_in_fp32_and_pruned_in_stock_fairseq(bf16_checkpoint, data_bin, tmp_path):
    checkpoint, _ = bf16_checkpoint
    from td_fairseq.files import load_torch
    assert load_torch(checkpoint)["cfg"]["model"].autocast_bf16 is True  # a resume keeps training in bf16
    for dtype in ([], ["--bf16"]):
        run_cli("scripts/bleu_vs_sparsity.py", "--data-bin", data_bin, "--checkpoint", checkpoint,
                "--sparsity", "0", "0.5", "--beam", "2", "--no-progress", "--out", tmp_path / f"sweep{len(dtype)}",
                *dtype)
    run_cli("scripts/prune_checkpoint.py", checkpoint, "--sparsity", "0.5", "--out-dir", tmp_path / "pruned")
    pruned = next(p for p in os.listdir(tmp_path / "pruned") if p.endswith(".pt"))
    result = run_cli("fairseq-generate", data_bin, "--path", tmp_path / "pruned" / pruned, "--beam", "2",
                     "--cpu", "--max-tokens", "2000", "--gen-subset", "test")
    assert "Generate test with beam=2" in result.stdout


def test_a_sweep_folder_holds_one_decoding_dtype(bf16_checkpoint, data_bin, tmp_path):
    checkpoint, _ = bf16_checkpoint
    common = ["--data-bin", data_bin, "--checkpoint", checkpoint, "--sparsity", "0", "--beam", "1",
              "--no-progress", "--out", tmp_path / "sweep"]
    run_cli("scripts/bleu_vs_sparsity.py", *common, "--bf16")
    result = run_cli("scripts/bleu_vs_sparsity.py", *common, check=False)
    assert result.returncode == 1
    assert "dtype = 'bf16', this run asks for 'fp32'" in result.stderr.strip().splitlines()[-1], result.stderr


def test_load_for_inference_in_bf16_on_the_cpu_decodes_like_fp32(bf16_checkpoint, data_bin):
    from fairseq.dataclass.configs import GenerationConfig

    from td_fairseq import load_for_inference
    checkpoint, _ = bf16_checkpoint
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, task, _ = load_for_inference(str(checkpoint), dtype=dtype, data_bin=str(data_bin))
        assert {p.dtype for p in model.parameters()} == {dtype}
        task.load_dataset("test")
        generator = task.build_generator([model], GenerationConfig(beam=2, max_len_a=1.2, max_len_b=10))
        batch = next(iter(task.get_batch_iterator(task.dataset("test"), max_tokens=2000).next_epoch_itr(shuffle=False)))
        outputs[dtype] = [hyp[0]["tokens"].tolist() for hyp in task.inference_step(generator, [model], batch)]
    same = sum(a == b for a, b in zip(outputs[torch.float32], outputs[torch.bfloat16])) / len(outputs[torch.float32])
    assert same >= 0.5, same  # bf16 rounding may flip close beams, not most of them
