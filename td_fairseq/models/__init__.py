"""fairseq models; importing this registers ``transformer_td`` and its named archs."""
from .. import distributed_exit
from ..files import allow_fairseq_checkpoints
from .transformer_td import TransformerTDModel  # noqa: F401
from .transformer_compact import TransformerCompactModel  # noqa: F401

allow_fairseq_checkpoints()
distributed_exit.register()
