"""fairseq adapter for calibrated pruning (Wanda, SparseGPT): calibration batches drawn from
the training split of a data-bin, and the ``feed()`` the core pruners run them through.

Calibration data must never come from the split a result is measured on: only ``train`` is
read, or ``valid`` when the caller allows it explicitly; the split is recorded in ``info``.
The batches are teacher-forced (source, and the reference shifted right as the decoder's
input), exactly what the model sees in training. Sentences of similar length are batched
together, so little padding enters the statistics (the core counts every position).

fairseq's ``MultiheadAttention`` normally calls ``F.multi_head_attention_forward`` with the
projection weights, never the q/k/v/out projection modules, so their hooks would not fire.
Inside ``feed`` every attention is put on its slower path (``skip_embed_dim_check``, which
fairseq has for pruned models: same math, projections called as modules) and restored after.
"""
import contextlib

import torch

from ..files import UserError
from ..precision import DTYPES, autocast
from ..sparsity.calibration import StopForward

CALIBRATION_SPLIT = "train"


def check_split(split: str, allow_valid: bool = False) -> str:
    if split == CALIBRATION_SPLIT or (split == "valid" and allow_valid):
        return split
    raise UserError(f"calibration data must come from the '{CALIBRATION_SPLIT}' split ('valid' only when "
                    f"allowed explicitly), never from the split results are measured on; got {split!r}")


def calibration_batches(task, sentences: int = 128, seed: int = 1, split: str = CALIBRATION_SPLIT,
                        allow_valid: bool = False, batch_sentences: int = 32):
    """(list of teacher-forced net_input dicts, info) for ``sentences`` sentences of ``split``
    drawn without replacement with ``seed`` (all of them if the split is smaller)."""
    check_split(split, allow_valid)
    if sentences < 1 or batch_sentences < 1:
        raise UserError(f"calibration needs at least one sentence and one per batch, "
                        f"got {sentences}, {batch_sentences}")
    if split not in task.datasets:
        try:
            task.load_dataset(split)
        except FileNotFoundError:
            raise UserError(f"the data-bin has no '{split}' split to draw calibration sentences from")
    dataset = task.dataset(split)
    if len(dataset) == 0:
        raise UserError(f"the '{split}' split is empty: no calibration sentences")
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:sentences].tolist()
    chosen.sort(key=lambda i: (int(dataset.src_sizes[i]), i))
    batches, tokens = [], {"src": 0, "tgt": 0}
    for start in range(0, len(chosen), batch_sentences):
        batch = dataset.collater([dataset[i] for i in chosen[start:start + batch_sentences]])
        net_input = batch["net_input"]
        batches.append({k: net_input[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")})
        tokens["src"] += int(net_input["src_lengths"].sum())
        tokens["tgt"] += int(batch["ntokens"])
    info = {"calib_split": split, "calib_sentences": len(chosen), "calib_seed": seed,
            "calib_src_tokens": tokens["src"], "calib_tgt_tokens": tokens["tgt"]}
    return batches, info


@contextlib.contextmanager
def modules_called(model):
    """Every fairseq attention on the path that calls its projection modules (see module doc)."""
    from fairseq.modules import MultiheadAttention
    attentions = [m for m in model.modules() if isinstance(m, MultiheadAttention)]
    saved = [m.skip_embed_dim_check for m in attentions]
    try:
        for m in attentions:
            m.skip_embed_dim_check = True
        yield
    finally:
        for m, value in zip(attentions, saved):
            m.skip_embed_dim_check = value


def make_feed(model, batches: list, dtype: str = "fp32"):
    """``feed()``: every batch through ``model`` in eval mode without gradients, projections
    called as modules, each forward cut short once the hooks raise StopForward; the model's
    mode is restored. Batches move to the model's device. ``dtype`` bf16: the forward under
    autocast (the statistics are accumulated in fp32 all the same, and the solve stays fp32)."""
    def feed():
        device = next(model.parameters()).device
        training = model.training
        model.eval()
        try:
            with torch.no_grad(), modules_called(model), autocast(device.type, DTYPES[dtype]):
                for net_input in batches:
                    try:
                        model(**{k: v.to(device) for k, v in net_input.items()})
                    except StopForward:  # the hooks have what they need from this batch
                        pass
        finally:
            model.train(training)
    return feed


def calibration_feed(model, task, sentences: int = 128, seed: int = 1, split: str = CALIBRATION_SPLIT,
                     allow_valid: bool = False, dtype: str = "fp32"):
    """(feed, info) for ``sparsity.pruners.make_pruner``; ``info`` goes into result rows."""
    batches, info = calibration_batches(task, sentences, seed, split, allow_valid)
    return make_feed(model, batches, dtype), info


def calibrated_pruner(kind: str, model, task, params: dict, calibration=(128, 1, "row")):
    """(Wanda or SparseGPT pruner over ``params`` of ``model``, its calibration info) for the sweep
    and for prune_checkpoint alike. ``calibration``: (sentences, seed, mask groups[, forward dtype])."""
    from ..sparsity.pruners import make_pruner
    sentences, seed, mask_groups, *dtype = calibration
    feed, info = calibration_feed(model, task, sentences, seed, dtype=dtype[0] if dtype else "fp32")
    return make_pruner(kind, model, params, feed, mask_groups, info), dict(info, mask_groups=mask_groups)

