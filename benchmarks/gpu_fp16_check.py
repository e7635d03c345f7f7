"""GPU check: TD masks are honoured under fairseq's --fp16, --bf16 and --memory-efficient-fp16.

    python benchmarks/gpu_fp16_check.py [--data-bin DIR] [--updates 6] [--precision fp16 bf16 memory-efficient-fp16]
    python benchmarks/gpu_fp16_check.py --cpu-smoke --precision bf16            # script logic only

Trains a tiny weight-TD Transformer for a few updates through fairseq's own Trainer, exactly as
fairseq-train does, once per precision, and checks at every update:
  1. the forward pass edits no stored half-precision weight (the criterion is wrapped to compare
     the raw parameters before and after it); the masks are computed on the half weight;
  2. every dropped entry has exactly zero gradient where the optimizer reads it: the fp32
     master copy for --fp16/--bf16 (FP16Optimizer, after fairseq has copied, unscaled and
     clipped the half gradients into it), the half gradient itself under
     --memory-efficient-fp16 (no master copy: Adam steps the half weights in fp32 arithmetic);
  3. after the step the half model weights are the fp32 master weights cast down (nothing
     edited them behind the optimizer), and at the first update, whose Adam state is empty, the
     stored value of every dropped entry is unchanged;
  4. the loss and the gradients are finite, and dropped weights are not zeroed.
Exits 1 with the failed check, 0 when all hold. Without --data-bin it builds a synthetic corpus.
--cpu-smoke runs the same checks on the CPU with unflattened master weights (fairseq flattens
only on CUDA): it tests this script, not the GPU.

fairseq 0.12's --bf16 implies --tpu (and then fails on a GPU); the check turns --tpu off, which
is what a bf16 run on a GPU needs (fairseq-hydra-train, or a patched option parser).
"""
import argparse
import logging
import math
import os
import sys
import tempfile
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# bf16: the plugin's autocast over fp32 weights (what fairseq-train --bf16 does with td_fairseq);
# bf16-fairseq: fairseq's own path (the model cast to bf16, fp32 master copy), with --tpu undone.
# --memory-efficient-bf16 is refused by the plugin. Value: (flags, dtype of the stored weights).
PRECISIONS = {"fp16": (["--fp16"], torch.float16), "bf16": (["--bf16"], torch.float32),
              "bf16-fairseq": (["--bf16"], torch.bfloat16),
              "memory-efficient-fp16": (["--memory-efficient-fp16"], torch.float16)}


def build_trainer(data_bin, precision, cpu_smoke):
    from td_fairseq.tools.inprocess import build_trainer as build
    argv = ["--task", "translation", "--arch", "transformer_td_tiny", "--share-all-embeddings",
            "--criterion", "label_smoothed_cross_entropy_td", "--label-smoothing", "0.1", "--optimizer", "adam",
            "--lr", "1e-3", "--max-tokens", "2000", "--seed", "1", *PRECISIONS[precision][0], "--td-type", "weight",
            "--td-gamma", "0.75", "--td-alpha", "0.66", "--dropout", "0.1"]
    if cpu_smoke:
        argv += ["--cpu", "--fp16-no-flatten-grads"]
    fairseq_bf16 = precision == "bf16-fairseq"
    return build(data_bin, argv, tpu=False, edit=_fairseq_bf16 if fairseq_bf16 else None)


def _fairseq_bf16(args):
    args.bf16, args.autocast_bf16 = True, False


def optimizer_view(trainer):
    """{id(half param): (grad, value) that the optimizer steps}: the fp32 master copy in its own
    layout (FP16Optimizer), or the half parameter itself (MemoryEfficientFP16Optimizer)."""
    optimizer = trainer.optimizer
    params = list(filter(lambda p: p.requires_grad, list(trainer.model.parameters()) +
                         list(trainer.criterion.parameters())))
    masters = getattr(optimizer, "fp32_params", None)
    if masters is None:
        return {id(p): (p.grad, p.data) for p in params}
    if isinstance(masters, dict):  # flattened: one flat tensor per device, params in order
        (flat,) = masters.values()
        found, offset = {}, 0
        for p in params:
            n = p.numel()
            found[id(p)] = (flat.grad[offset:offset + n].view(p.shape), flat.data[offset:offset + n].view(p.shape))
            offset += n
        return found
    return {id(p): (m.grad, m.data) for p, m in zip(params, masters)}


def check(data_bin, precision, updates, cpu_smoke) -> str:
    """Train ``updates`` updates in ``precision`` and check every one; returns a summary line."""
    from td_fairseq.sparsity import views_of

    trainer, task = build_trainer(data_bin, precision, cpu_smoke)
    half = PRECISIONS[precision][1]
    has_master = precision in ("fp16", "bf16-fairseq")
    model = trainer.model
    modules = dict(views_of(model))
    assert modules and all(m._parameters["weight"].dtype == half for m in modules.values())
    edits = []
    forward = trainer.criterion.forward

    def watched_forward(net, sample, reduce=True):
        before = {n: m._parameters["weight"].detach().clone() for n, m in modules.items()}
        result = forward(net, sample, reduce=reduce)
        edits.extend(n for n, m in modules.items() if not torch.equal(before[n], m._parameters["weight"]))
        return result

    trainer.criterion.forward = watched_forward
    batches = task.get_batch_iterator(dataset=task.dataset("train"), max_tokens=2000, seed=1,
                                      num_workers=0).next_epoch_itr(shuffle=True)
    checked = first_step_checked = 0
    for step, sample in zip(range(updates), batches):
        done = trainer.get_num_updates()
        values_before = {k: v[1].clone() for k, v in optimizer_view(trainer).items()}
        log = trainer.train_step([sample])
        assert not edits, f"the forward pass edited stored weights: {edits[:3]}"
        if trainer.get_num_updates() == done:
            print(f"  update {step + 1}: overflow, step skipped (loss scale lowered)")
            continue
        stepped = optimizer_view(trainer)
        dropped_total = 0
        for name, module in modules.items():
            raw = module._parameters["weight"]
            grad, value = stepped[id(raw)]
            dropped = module.td._last_dropped.expand_as(raw)
            dropped_total += int(dropped.sum())
            assert torch.isfinite(grad).all(), name
            assert (grad[dropped] == 0).all(), f"{name}: dropped entries have a non-zero gradient in the optimizer"
            assert (grad[~dropped] != 0).any(), f"{name}: no gradient at all"
            if has_master:
                assert torch.equal(raw.data, value.to(half)), f"{name}: half weights differ from the fp32 master"
            assert (value[dropped] != 0).float().mean() > 0.99, f"{name}: dropped weights were zeroed"
            if done == 0:
                assert torch.equal(value[dropped], values_before[id(raw)][dropped]), \
                    f"{name}: a dropped entry moved at the first update"
        first_step_checked += done == 0
        assert dropped_total > 0
        loss = float(log["loss"])  # fairseq's smoothed value: per target token, base 2
        assert math.isfinite(loss), f"loss {loss}"
        where = "fp32 master" if has_master else "half"
        print(f"  update {trainer.get_num_updates()}: loss {loss:.4f}, {dropped_total} dropped entries, "
              f"all with zero {where} gradient")
        checked += 1
    assert checked >= max(1, updates // 2), f"only {checked} updates without overflow"
    where = "CPU smoke run (not a GPU result)" if cpu_smoke else torch.cuda.get_device_name()
    return (f"{precision}: OK, {checked} updates checked on {where}"
            f"{'' if first_step_checked else ' (first update overflowed: its exact check was skipped)'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-bin")
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--precision", nargs="+", choices=sorted(PRECISIONS), default=["fp16"])
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # fairseq's and hydra's chatter; the checks print their own lines
    warnings.filterwarnings("ignore")
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_fp16_check: no CUDA device; run on a GPU machine (or --cpu-smoke to test the script)")
        return 2
    from td_fairseq.tools.inprocess import synthetic_data_bin

    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        data_bin = args.data_bin or synthetic_data_bin(tmp)
        for precision in args.precision:
            print(f"[{precision}]")
            try:
                print("gpu_fp16_check: " + check(data_bin, precision, args.updates, args.cpu_smoke))
            except AssertionError as error:
                print(f"gpu_fp16_check: {precision}: FAILED: {error}")
                failed.append(precision)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
