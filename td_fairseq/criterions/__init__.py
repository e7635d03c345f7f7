"""fairseq criteria; importing this registers ``label_smoothed_cross_entropy_td``."""
from .label_smoothed_cross_entropy_td import LabelSmoothedCrossEntropyTDCriterion  # noqa: F401
