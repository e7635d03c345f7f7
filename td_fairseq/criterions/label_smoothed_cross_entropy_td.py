"""Label-smoothed cross entropy plus TD logging and a regularisation hook.

Hook: any submodule with a ``regularization_loss()`` method (returning a scalar tensor, or
None) adds that term to the objective. The term is scaled by the sample size, because
fairseq divides gradients by it: the optimised objective is then mean loss + term.
"""
from dataclasses import dataclass

from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig)

from ..sparsity import drop_fraction, td_modules
from ..sparsity.baselines import regularization_loss


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
        modules = td_modules(model)
        if modules:
            gamma, alpha = modules[0][1].td.rates
            logging_output.update(td_count=1, td_gamma=gamma, td_alpha=alpha)
            if model.training:
                fraction = drop_fraction(model, modules)
                # a tensor: fairseq reduces logging outputs after the step, so no host sync here
                logging_output["td_drop"] = 0.0 if fraction is None else fraction.detach()
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if any("reg_loss" in log for log in logging_outputs) and sample_size > 0:
            reg = sum(log.get("reg_loss", 0) for log in logging_outputs)
            metrics.log_scalar("reg_loss", reg / sample_size, sample_size, round=5)
        count = sum(log.get("td_count", 0) for log in logging_outputs)
        if count > 0:
            # Logging outputs are summed across workers first: divide by their count.
            for key in ("td_gamma", "td_alpha", "td_drop"):
                if any(key in log for log in logging_outputs):
                    metrics.log_scalar(key, sum(log.get(key, 0) for log in logging_outputs) / count,
                                       count, round=4)
