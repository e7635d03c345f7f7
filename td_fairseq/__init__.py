"""td_fairseq: targeted dropout for fairseq Transformers.

``fairseq-train --user-dir td_fairseq`` imports this package after fairseq, which
registers the models and criterion. The sparsity core and the vision module stay
importable without fairseq; import ``td_fairseq.models`` to register explicitly.
``load_for_inference`` imports fairseq only when called.
"""
import sys



def load_for_inference(*args, **kwargs):
    """See ``td_fairseq.inference.load_for_inference`` (imported on call: importing the package
    stays free of torch, which scripts that only check for the package should not pay for)."""
    from .inference import load_for_inference as load
    return load(*args, **kwargs)


__version__ = "0.1.0"

if "fairseq" in sys.modules:
    from . import criterions, models  # noqa: F401  (registration side effects)
