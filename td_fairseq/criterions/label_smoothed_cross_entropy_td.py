"""Label-smoothed cross entropy plus the weight views' logging and a regularisation hook.

Hook: any submodule with a ``regularization_loss()`` method (returning a scalar tensor, or
None) adds that term to the objective. The term is scaled by the sample size, because
fairseq divides gradients by it: the optimised objective is then mean loss + term.
Logging: each view's ``log_values()`` (TD: td_gamma, td_alpha; GMP: gmp_sparsity; ...) and
the fraction of viewed weights it zeroed in the step (``<prefix>_drop``: td_drop for TD).
"""
from dataclasses import dataclass

from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig)

from ..sparsity.baselines import regularization_loss
from ..sparsity.views import drop_fraction, view, views_of


# the parent's keys and ours; every other key is a view's value (only numbers: fairseq sums
# logging outputs across workers)
_NOT_VIEW_KEYS = {"loss", "nll_loss", "ntokens", "nsentences", "sample_size", "n_correct", "total", "reg_loss",
                  "view_count"}


@dataclass
class LabelSmoothedCrossEntropyTDConfig(LabelSmoothedCrossEntropyCriterionConfig):
    pass


@register_criterion("label_smoothed_cross_entropy_td", dataclass=LabelSmoothedCrossEntropyTDConfig)
class LabelSmoothedCrossEntropyTDCriterion(LabelSmoothedCrossEntropyCriterion):
    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        extra = regularization_loss(model)
        if extra is not None:
            loss = loss + extra * sample_size
            logging_output["reg_loss"] = extra.data * sample_size
        modules = views_of(model)
        if modules:
            first = view(modules[0][1])
            values = dict(first.log_values())
            if model.training:
                fraction = drop_fraction(model, modules)
                # a tensor: fairseq reduces logging outputs after the step, so no host sync here
                values[f"{first.log_prefix}_drop"] = 0.0 if fraction is None else fraction.detach()
            logging_output.update(view_count=1, **values)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if any("reg_loss" in log for log in logging_outputs) and sample_size > 0:
            reg = sum(log.get("reg_loss", 0) for log in logging_outputs)
            metrics.log_scalar("reg_loss", reg / sample_size, sample_size, round=5)
        count = sum(log.get("view_count", 0) for log in logging_outputs)
        keys = dict.fromkeys(k for log in logging_outputs for k in log if k not in _NOT_VIEW_KEYS)
        for key in keys if count > 0 else ():
            # logging outputs are summed across workers first: divide by their count
            metrics.log_scalar(key, sum(log.get(key, 0) for log in logging_outputs) / count, count, round=4)
