"""Let torch >= 2.6 (``weights_only=True`` by default) load fairseq checkpoints.

fairseq calls ``torch.load`` without ``weights_only``; legacy-argument checkpoints hold an
``argparse.Namespace`` and, with ``--eval-bleu``, numpy scalars. We allow exactly those
types rather than turning the safe loader off.
"""
import argparse

import torch


def _numpy_globals():
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [scalar, _reconstruct, np.ndarray, np.dtype, *dtypes]


def allow_fairseq_checkpoints():
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace, *_numpy_globals()])
