"""Make unit sparsity pay: physically remove pruned FFN units and, optionally, attention heads.

Three verbs kept apart, as in torch.nn.utils.prune:
  ``plan_compaction``  which units and heads stay (pure: reads a state dict, returns kept indices);
  ``masked_state``     the same units zeroed at full width: the reference a compact model must match;
  ``compact_state``    the same units removed: smaller matrices, less work per decoded token.

FFN unit i of a layer is row i of fc1.weight, fc1.bias[i] and column i of fc2.weight. Units are
ranked per layer by the L2 norm of their fc1 row, exactly as PruneRanking's unit mode (and so
``prune_checkpoint.py --mode unit``) ranks them, and floor(s * n) are removed from every layer:
layers of equal width stay equal, and the result is a stock fairseq checkpoint in which only
``encoder_ffn_embed_dim``/``decoder_ffn_embed_dim`` change. (``prune_checkpoint --mode unit`` zeroes
fc1 rows only; a unit whose bias survives still feeds relu(bias) into fc2, so its model differs
from both the masked and the compact one here.)

Attention head h is rows h*d .. (h+1)*d-1 of q_proj, k_proj and v_proj (weights and biases) and the
same columns of out_proj. Its score is the L2 norm of all those weights together (biases left out,
as in unit ranking); floor(s * heads) heads with the lowest scores go from every attention module,
ties broken by position. Removed heads leave the others their size d, which stock fairseq cannot
express (it sets d = embed_dim / heads), so a model with fewer heads uses the ``transformer_compact``
arch and loads with ``--user-dir td_fairseq``.

A zeroed unit or head adds exactly zero (its fc2 columns / out_proj columns are zero), so masked and
compact models compute the same function; only the order of floating-point sums may differ.
"""
import os
import re

import torch

from ..files import UserError
from ..results import command_line, git_commit
from ..sparsity import PruneRanking, check_sparsity
from ..files import save_torch
from .checkpoint import servable_state, stock_checkpoint
from .loading import load_checkpoint, model_config
from .sparse_storage import check_out_file

COMPACT_ARCH = "transformer_compact"
_FFN = re.compile(r"^((?:encoder|decoder)\.layers\.\d+)\.fc1\.weight$")
_ATTENTION = re.compile(r"^((?:encoder|decoder)\.layers\.\d+\.(?:self_attn|encoder_attn))\.q_proj\.weight$")


def _layer_order(prefix: str):
    side, _, index = prefix.split(".")[:3]
    return (side, int(index))


def attention_heads(model_cfg: dict, prefix: str) -> int:
    """Heads of an attention module; fairseq gives encoder_attn the decoder's count."""
    return int(model_cfg["encoder_attention_heads" if prefix.startswith("encoder.") else "decoder_attention_heads"])


def head_rows(kept_heads: torch.Tensor, head_size: int) -> torch.Tensor:
    """Row indices of q/k/v (columns of out_proj) that belong to the kept heads."""
    return (kept_heads[:, None] * head_size + torch.arange(head_size)).reshape(-1)


def head_scores(model_state: dict, prefix: str, heads: int) -> torch.Tensor:
    """L2 norm of each head's rows of q/k/v and its columns of out_proj, together."""
    squares = sum(model_state[f"{prefix}.{p}.weight"].float().pow(2).reshape(heads, -1).sum(1)
                  for p in ("q_proj", "k_proj", "v_proj"))
    out = model_state[f"{prefix}.out_proj.weight"].float().pow(2)
    return (squares + out.reshape(out.shape[0], heads, -1).sum((0, 2))).sqrt()


def _kept(pruned: torch.Tensor) -> torch.Tensor:
    return (~pruned).nonzero().reshape(-1)


def plan_compaction(state: dict, unit_sparsity: float, heads: bool = False) -> dict:
    """{'ffn': {layer: kept units}, 'heads': {attention: kept heads}} for a stock checkpoint."""
    sparsity = check_sparsity(unit_sparsity)
    model_state, model_cfg = state["model"], model_config(state)
    fc1 = {k: v for k, v in model_state.items() if _FFN.match(k)}
    if not fc1:
        raise UserError("the checkpoint has no Transformer FFN layers (no '*.layers.N.fc1.weight')")
    masks = PruneRanking(fc1, "unit").masks(sparsity)
    plan = {"ffn": {_FFN.match(k).group(1): _kept(m[:, 0]) for k, m in masks.items()}, "heads": {}}
    if heads:
        scores = {m.group(1): head_scores(model_state, m.group(1), attention_heads(model_cfg, m.group(1)))
                  for m in map(_ATTENTION.match, model_state) if m}
        # a 1-D score is ranked as is; ties go by position, like every other ranking here
        head_masks = PruneRanking(scores, "unit", scores=scores).masks(sparsity)
        plan["heads"] = {prefix: _kept(mask) for prefix, mask in head_masks.items()}
    return plan


def _ffn_tensors(layer):
    """(key, axis) of every tensor that holds a layer's FFN units."""
    return ((f"{layer}.fc1.weight", 0), (f"{layer}.fc1.bias", 0), (f"{layer}.fc2.weight", 1))


def _head_tensors(prefix):
    """(key, axis) of every tensor that holds an attention module's heads."""
    rows = [(f"{prefix}.{proj}.{kind}", 0) for proj in ("q_proj", "k_proj", "v_proj") for kind in ("weight", "bias")]
    return rows + [(f"{prefix}.out_proj.weight", 1)]


def _edit(state: dict, plan: dict, edit) -> dict:
    """A copy of ``state`` with ``edit(tensor, kept indices, axis)`` applied to every planned tensor."""
    model, model_cfg = dict(state["model"]), model_config(state)
    for layer, kept in plan["ffn"].items():
        for key, axis in _ffn_tensors(layer):
            model[key] = edit(model[key], kept, axis)
    for prefix, kept in plan["heads"].items():
        rows = head_rows(kept, model[f"{prefix}.q_proj.weight"].shape[0] // attention_heads(model_cfg, prefix))
        for key, axis in _head_tensors(prefix):
            model[key] = edit(model[key], rows, axis)
    return dict(state, model=model)


def _zero_others(t, kept, axis):
    keep = torch.zeros(t.shape[axis], dtype=torch.bool)
    keep[kept] = True
    return t.masked_fill(~keep.view([-1 if d == axis else 1 for d in range(t.dim())]), 0)


def masked_state(state: dict, plan: dict) -> dict:
    """A copy of ``state`` with the planned-away units and heads zeroed at full width."""
    return _edit(state, plan, _zero_others)


def compact_state(state: dict, plan: dict) -> dict:
    """A copy of ``state`` with the planned-away units and heads removed, and a cfg that loads it."""
    compact = _edit(state, plan, lambda t, kept, axis: t.index_select(axis, kept))
    model_cfg = dict(model_config(state), **compact_widths(compact["model"], model_config(state)))
    return dict(compact, cfg=dict(compact["cfg"], model=model_cfg))


def widths(model_state: dict, model_cfg: dict) -> dict:
    """{'encoder_ffn': [...], 'decoder_ffn': [...], 'encoder_heads': [...], ...} per layer."""
    out = {"encoder_ffn": [], "decoder_ffn": [], "encoder_heads": [], "decoder_heads": [], "decoder_cross_heads": []}
    ffn = sorted((_layer_order(m.group(1)), m.group(0)) for m in map(_FFN.match, model_state) if m)
    for (side, _), key in ffn:
        out[f"{side}_ffn"].append(model_state[key].shape[0])
    attention = sorted((_layer_order(m.group(1)), m.group(1)) for m in map(_ATTENTION.match, model_state) if m)
    for (side, _), prefix in attention:
        full = model_state[f"{prefix}.out_proj.weight"].shape[0]  # out_proj keeps the model width
        head_size = full // attention_heads(model_cfg, prefix)
        name = "decoder_cross_heads" if prefix.endswith("encoder_attn") else f"{side}_heads"
        out[name].append(model_state[f"{prefix}.q_proj.weight"].shape[0] // head_size)
    return out


def compact_widths(model_state: dict, model_cfg: dict) -> dict:
    """cfg.model entries for compacted weights: stock FFN dims when they say it all, else the plugin's lists."""
    found = widths(model_state, model_cfg)
    full_heads = {"encoder_heads": attention_heads(model_cfg, "encoder."),
                  "decoder_heads": attention_heads(model_cfg, "decoder."),
                  "decoder_cross_heads": attention_heads(model_cfg, "decoder.")}
    heads_full = all(set(found[name]) <= {full} for name, full in full_heads.items())
    uniform = all(len(set(found[f"{side}_ffn"])) <= 1 for side in ("encoder", "decoder"))
    if heads_full and uniform:
        return {f"{side}_ffn_embed_dim": found[f"{side}_ffn"][0]
                for side in ("encoder", "decoder") if found[f"{side}_ffn"]}
    return dict({f"compact_{name}": ",".join(map(str, values)) for name, values in found.items()},
                _name=COMPACT_ARCH, arch=COMPACT_ARCH)


def parameter_count(model_state: dict) -> int:
    """Floating-point entries, tied tensors counted once (as model.parameters() does)."""
    seen = {}
    for t in model_state.values():
        if torch.is_tensor(t) and t.is_floating_point():
            seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = t.numel()
    return sum(seen.values())


def compact_checkpoint(path: str, unit_sparsity: float, out: str, heads: bool = False, masked_out: str = None,
                       command: str = None) -> dict:
    """Write the compact checkpoint (and optionally the masked reference); returns a report."""
    try:
        sparsity = check_sparsity(unit_sparsity)
    except ValueError as error:
        raise UserError(f"unit sparsity: {error}")
    check_out_file(out, path)
    if masked_out is not None:
        check_out_file(masked_out, path, out)
    state = stock_checkpoint(load_checkpoint(path))
    plan = plan_compaction(state, sparsity, heads)
    compact = compact_state(state, plan)
    model_cfg = model_config(compact)
    report = {"checkpoint": os.path.abspath(path), "out": os.path.abspath(out), "unit_sparsity": sparsity,
              "heads": heads, "arch": model_cfg["arch"], "parameters_before": parameter_count(state["model"]),
              "parameters_after": parameter_count(compact["model"]), "widths": widths(compact["model"], model_cfg),
              "command": command or command_line(), "commit": git_commit()}
    compact["compact"] = {k: report[k] for k in ("unit_sparsity", "heads", "command", "commit")}  # provenance
    save_torch(servable_state(compact), out)  # ct2-fairseq-converter loads it too
    if masked_out is not None:
        save_torch(servable_state(masked_state(state, plan)), masked_out)
    return report
