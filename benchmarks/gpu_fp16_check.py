"""GPU check: TD masks are honoured under fairseq's --fp16 (FP16Optimizer, fp32 master weights).

    python benchmarks/gpu_fp16_check.py [--data-bin DIR] [--updates 6]       # on a CUDA machine
    python benchmarks/gpu_fp16_check.py --cpu-smoke                          # script logic only

Trains a tiny weight-TD Transformer for a few updates through fairseq's own Trainer with
--fp16, exactly as fairseq-train does, and checks at every update:
  1. the forward pass edits no stored fp16 weight (the criterion is wrapped to compare the
     raw parameters before and after it);
  2. every dropped entry has exactly zero gradient in the fp32 master copy (after fairseq has
     copied, unscaled and clipped the fp16 gradients into it);
  3. after the step the fp16 model weights are the fp32 master weights cast to fp16 (nothing
     edited them behind the optimizer), and at the first update, whose Adam state is empty,
     the master value of every dropped entry is unchanged;
  4. the loss and the master gradients are finite, and dropped master weights are not zeroed.
Exits 1 with the failed check, 0 when all hold. Without --data-bin it builds a synthetic corpus.
--cpu-smoke runs the same checks with fp16 on the CPU and unflattened master weights (fairseq
flattens only on CUDA): it tests this script, not the GPU.
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def synthetic_data_bin(root):
    from td_fairseq.synthetic import write_corpus
    for split, n, seed in (("train", 800, 1), ("valid", 60, 2)):
        write_corpus(os.path.join(root, split), n, seed)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "fairseq-preprocess"), "--source-lang", "en",
                    "--target-lang", "de", "--trainpref", os.path.join(root, "train"), "--validpref",
                    os.path.join(root, "valid"), "--destdir", os.path.join(root, "bin"), "--joined-dictionary",
                    "--workers", "1"], check=True, capture_output=True)
    return os.path.join(root, "bin")


def build_trainer(data_bin, cpu_smoke):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    import td_fairseq.criterions  # noqa: F401
    import td_fairseq.models  # noqa: F401
    argv = [data_bin, "--task", "translation", "--arch", "transformer_td_tiny", "--share-all-embeddings",
            "--criterion", "label_smoothed_cross_entropy_td", "--label-smoothing", "0.1", "--optimizer", "adam",
            "--lr", "1e-3", "--max-tokens", "2000", "--seed", "1", "--fp16", "--td-type", "weight",
            "--td-gamma", "0.75", "--td-alpha", "0.66", "--dropout", "0.1"]
    if cpu_smoke:
        argv += ["--cpu", "--fp16-no-flatten-grads"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion), task


def master_grads_and_values(trainer):
    """{id(fp16 param): (fp32 grad, fp32 value)} of fairseq's master copy, in its own layout."""
    optimizer = trainer.optimizer
    params = list(filter(lambda p: p.requires_grad, list(trainer.model.parameters()) +
                         list(trainer.criterion.parameters())))
    masters = optimizer.fp32_params
    if isinstance(masters, dict):  # flattened: one flat tensor per device, params in order
        (flat,) = masters.values()
        found, offset = {}, 0
        for p in params:
            n = p.numel()
            found[id(p)] = (flat.grad[offset:offset + n].view(p.shape), flat.data[offset:offset + n].view(p.shape))
            offset += n
        return found
    return {id(p): (m.grad, m.data) for p, m in zip(params, masters)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-bin")
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_fp16_check: no CUDA device; run on a GPU machine (or --cpu-smoke to test the script)")
        return 2
    from td_fairseq.sparsity import views_of

    with tempfile.TemporaryDirectory() as tmp:
        trainer, task = build_trainer(args.data_bin or synthetic_data_bin(tmp), args.cpu_smoke)
        model = trainer.model
        modules = dict(views_of(model))
        assert modules and all(m._parameters["weight"].dtype == torch.float16 for m in modules.values())
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
        for step, sample in zip(range(args.updates), batches):
            updates = trainer.get_num_updates()
            masters_before = {k: v[1].clone() for k, v in master_grads_and_values(trainer).items()}
            log = trainer.train_step([sample])
            assert not edits, f"the forward pass edited stored weights: {edits[:3]}"
            if trainer.get_num_updates() == updates:
                print(f"update {step + 1}: fp16 overflow, step skipped (loss scale lowered)")
                continue
            masters = master_grads_and_values(trainer)
            dropped_total = 0
            for name, module in modules.items():
                raw = module._parameters["weight"]
                grad, value = masters[id(raw)]
                dropped = module.td._last_dropped.expand_as(raw)
                dropped_total += int(dropped.sum())
                assert torch.isfinite(grad).all(), name
                assert (grad[dropped] == 0).all(), f"{name}: dropped entries have a non-zero fp32 master gradient"
                assert (grad[~dropped] != 0).any(), f"{name}: no gradient at all"
                assert torch.equal(raw.data, value.half()), f"{name}: fp16 weights differ from the fp32 master"
                assert (value[dropped] != 0).float().mean() > 0.99, f"{name}: dropped master weights were zeroed"
                if updates == 0:
                    assert torch.equal(value[dropped], masters_before[id(raw)][dropped]), \
                        f"{name}: a dropped entry moved at the first update"
            first_step_checked += updates == 0
            assert dropped_total > 0
            loss = float(log["loss"])  # fairseq's smoothed value: per target token, base 2
            assert math.isfinite(loss), f"loss {loss}"
            print(f"update {trainer.get_num_updates()}: loss {loss:.4f}, {dropped_total} dropped entries, "
                  f"all with zero fp32 master gradient")
            checked += 1
        assert checked >= max(1, args.updates // 2), f"only {checked} updates without overflow"
        where = "CPU smoke run (not a GPU result)" if args.cpu_smoke else torch.cuda.get_device_name()
        print(f"gpu_fp16_check: OK, {checked} updates checked on {where}"
              f"{'' if first_step_checked else ' (first update overflowed: its exact check was skipped)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
