"""Test-only fairseq plugin: ``--user-dir tests/hardening/td_dump``.

Registers the TD models and criterion (by importing ``td_fairseq``) plus one criterion,
``label_smoothed_cross_entropy_td_dump``: the TD criterion that, when ``TD_DUMP_DIR`` is
set, saves on every rank what that rank's model looked like at its first forward of each
update (train) or validation. fairseq saves checkpoints on rank 0 only; this lets a test
compare the replicas. It lives under tests/ so that production code has no test hooks.

One file per (rank, phase, update): ``rank{R}_{phase}_{U}.pt`` holding
``weights`` (every parameter), ``targeted`` and ``dropped`` (per TD-covered weight, the
bottom-gamma set computed by the core's pure mask function and the set dropped in this
forward) and ``ids`` (the sentence ids of the batch).
"""
import os
from dataclasses import dataclass

import torch
from fairseq.criterions import register_criterion

import td_fairseq  # noqa: F401  (registers transformer_td and the TD criterion)
from td_fairseq.criterions.label_smoothed_cross_entropy_td import (LabelSmoothedCrossEntropyTDConfig,
                                                                   LabelSmoothedCrossEntropyTDCriterion)
from td_fairseq.sparsity import targeted_unit_mask, targeted_weight_mask, views_of


@dataclass
class DumpConfig(LabelSmoothedCrossEntropyTDConfig):
    pass


def unwrap(model):
    """The TransformerTDModel inside fairseq's DDP wrappers."""
    while "module" in model._modules:
        model = model._modules["module"]
    return model


def snapshot(model, sample):
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    targeted, dropped, seen = {}, {}, set()
    for name, module in views_of(model):
        if id(module.td) in seen:
            continue
        seen.add(id(module.td))
        raw = module._parameters["weight"].detach()
        gamma = module.td.rates[0]
        mask_of = targeted_unit_mask if module.td.config.by_unit else targeted_weight_mask
        targeted[name] = mask_of(raw, gamma, module.td.random_score)
        if module.td._last_dropped is not None:
            dropped[name] = module.td._last_dropped.clone()
    num_updates = views_of(model)[0][1].td.num_updates
    return num_updates, {"weights": weights, "targeted": targeted, "dropped": dropped,
                         "ids": sample["id"].clone()}


@register_criterion("label_smoothed_cross_entropy_td_dump", dataclass=DumpConfig)
class DumpingCriterion(LabelSmoothedCrossEntropyTDCriterion):
    def forward(self, model, sample, reduce=True):
        result = super().forward(model, sample, reduce=reduce)
        directory = os.environ.get("TD_DUMP_DIR")
        if directory:
            inner = unwrap(model)
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            num_updates, state = snapshot(inner, sample)
            phase = "train" if inner.training else "valid"
            path = os.path.join(directory, f"rank{rank}_{phase}_{num_updates}.pt")
            if not os.path.exists(path):  # first forward of the update only
                torch.save(state, path)
        return result
