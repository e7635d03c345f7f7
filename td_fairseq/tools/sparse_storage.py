"""A small on-disk form of weight-pruned checkpoints, restored bit for bit.

Each tensor of the model that has enough zeros to gain is stored as its nonzero values plus a
bitmask packed eight entries to a byte (``numpy.packbits``): at 90 % zeros a float32 matrix costs
0.1 * 4 + 1/8 = 0.525 bytes per entry instead of 4. Every other tensor is stored as it is.
"Zero" means all bits zero, so -0.0 and NaN are values and unpacking gives back the exact bits.

The packed file holds only tensors and plain containers and loads with
``torch.load(weights_only=True)`` without any allow-list: the few non-plain objects fairseq
checkpoints carry (an ``argparse.Namespace`` of legacy args, numpy scalars of logged metrics) are
stored as tagged dicts and rebuilt by ``unpack``. The file names its format and version.
"""
import argparse
import collections
import math
import os

import numpy as np
import torch

from ..files import UserError
from ..files import save_torch

FORMAT = "td_fairseq.sparse_checkpoint"
VERSION = 1
TAG = "__td_fairseq_type__"
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


# --- tensors -----------------------------------------------------------------------------------

def _nonzero_bits(tensor: torch.Tensor) -> torch.Tensor:
    """Flat bool mask of entries whose bits are not all zero (-0.0 counts as a value)."""
    flat = tensor.contiguous().reshape(-1)
    return flat.view(_BITS[flat.element_size()]) != 0


def encode_tensor(tensor: torch.Tensor):
    """{'shape','dtype','mask','values'} when that is smaller than the tensor; else None."""
    if (tensor.dim() == 0 or tensor.layout != torch.strided or tensor.is_quantized or tensor.is_complex()
            or tensor.element_size() not in _BITS):
        return None
    tensor = tensor.detach().cpu()
    mask = _nonzero_bits(tensor)
    values = tensor.contiguous().reshape(-1)[mask]
    packed = torch.from_numpy(np.packbits(mask.numpy()))
    if values.numel() * values.element_size() + packed.numel() >= tensor.numel() * tensor.element_size():
        return None
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).replace("torch.", ""), "mask": packed,
            "values": values.clone()}


def decode_tensor(entry: dict) -> torch.Tensor:
    numel = math.prod(entry["shape"])
    mask = torch.from_numpy(np.unpackbits(entry["mask"].numpy(), count=numel).astype(bool))
    out = torch.zeros(numel, dtype=getattr(torch, entry["dtype"]))
    out[mask] = entry["values"]
    return out.view(entry["shape"])


def _storage_key(tensor):
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


# --- everything else: plain containers, with tags for the few objects fairseq adds ------------

def to_plain(obj, where: str):
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.Size)):
        return obj
    if isinstance(obj, argparse.Namespace):
        return {TAG: "namespace", "fields": to_plain(vars(obj), where)}
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype != object:
        return {TAG: "numpy", "scalar": isinstance(obj, np.generic), "dtype": obj.dtype.str,
                "shape": list(np.shape(obj)), "bytes": np.ascontiguousarray(obj).tobytes()}
    if type(obj) in (dict, collections.OrderedDict):
        if TAG in obj:
            raise UserError(f"cannot pack {where}: it holds the reserved key {TAG!r}")
        return _with_attributes(type(obj)((k, to_plain(v, f"{where}.{k}")) for k, v in obj.items()), obj,
                                lambda v: to_plain(v, where))
    if type(obj) in (list, tuple):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise UserError(f"cannot pack {where}: objects of type {type(obj).__name__} are not supported")


def from_plain(obj):
    if isinstance(obj, dict) and obj.get(TAG) == "namespace":
        return argparse.Namespace(**from_plain(obj["fields"]))
    if isinstance(obj, dict) and obj.get(TAG) == "numpy":
        array = np.frombuffer(obj["bytes"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return array[()] if obj["scalar"] else array
    if type(obj) in (dict, collections.OrderedDict):
        return _with_attributes(type(obj)((k, from_plain(v)) for k, v in obj.items()), obj, from_plain)
    if type(obj) in (list, tuple):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def _with_attributes(copy, original, convert):
    """An OrderedDict's attributes travel too (a servable cfg.model holds its entries as attributes,
    which ct2-fairseq-converter reads; torch's safe loader keeps them)."""
    if type(original) is collections.OrderedDict and vars(original):
        copy.__dict__.update({k: convert(v) for k, v in vars(original).items()})
    return copy


# --- whole checkpoints -------------------------------------------------------------------------

def pack_state(state: dict) -> dict:
    """The packed form of a fairseq checkpoint dict (inputs are not modified)."""
    model = state["model"]
    dense, sparse, aliases, seen = {}, {}, {}, {}
    for key, value in model.items():
        entry = encode_tensor(value) if isinstance(value, torch.Tensor) else None
        if entry is None:
            dense[key] = to_plain(value, f"model.{key}")  # shared storages stay shared: torch.save keeps them
            continue
        first = seen.setdefault(_storage_key(value), key)
        if first != key:
            aliases[key] = first  # e.g. tied embeddings: encode once, share again on unpack
        else:
            sparse[key] = entry
    metadata = getattr(model, "_metadata", None)  # nn.Module.state_dict() versions; keep them
    return {
        "format": FORMAT, "version": VERSION,
        "state": to_plain({k: v for k, v in state.items() if k != "model"}, "checkpoint"),
        "state_keys": list(state), "model_keys": list(model), "model_type": type(model).__name__,
        "model_metadata": to_plain(dict(metadata), "model._metadata") if metadata is not None else None,
        "dense": dense, "sparse": sparse, "aliases": aliases,
    }


def unpack_state(packed: dict) -> dict:
    tensors = {key: decode_tensor(entry) for key, entry in packed["sparse"].items()}
    tensors.update({key: tensors[first] for key, first in packed["aliases"].items()})
    tensors.update({key: from_plain(value) for key, value in packed["dense"].items()})
    model = (collections.OrderedDict if packed["model_type"] == "OrderedDict" else dict)(
        (key, tensors[key]) for key in packed["model_keys"])
    if packed.get("model_metadata") is not None:
        model._metadata = collections.OrderedDict(from_plain(packed["model_metadata"]))
    state = dict(from_plain(packed["state"]), model=model)
    return {key: state[key] for key in packed["state_keys"]}  # "model" back in its place


def is_packed(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


# --- files -------------------------------------------------------------------------------------

def check_out_file(out: str, *inputs: str) -> str:
    """Refuse an output that is one of the inputs, a directory, or in a missing directory."""
    for path in inputs:
        if os.path.realpath(out) == os.path.realpath(path):
            raise UserError(f"output {out} is the input {path}; choose another file")
    if os.path.isdir(out):
        raise UserError(f"output {out} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise UserError(f"output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise UserError(f"output directory {directory} is not writable")
    return out


def read_torch_file(path: str, what: str = "checkpoint"):
    """torch.load(weights_only=True) with one-line errors for missing and truncated files."""
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises OSError, RuntimeError, UnpicklingError, ... for bad files
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UserError(f"cannot read {what} {path} (truncated or not a torch file): {reason}")


def pack_file(path: str, out: str) -> dict:
    """Write the packed form of checkpoint ``path`` to ``out``; returns sizes."""
    from ..files import allow_fairseq_checkpoints
    check_out_file(out, path)
    allow_fairseq_checkpoints()  # the input may be a training checkpoint with legacy args
    state = read_torch_file(path)
    if is_packed(state):
        raise UserError(f"{path} is already packed (format {FORMAT} version {state.get('version')})")
    if not isinstance(state, dict) or "model" not in state or not state.get("cfg"):
        raise UserError(f"{path} is not a fairseq checkpoint (no 'model' and 'cfg' entries)")
    packed = pack_state(state)
    save_torch(packed, out)
    return {"input_bytes": os.path.getsize(path), "packed_bytes": os.path.getsize(out),
            "sparse_tensors": len(packed["sparse"]), "dense_tensors": len(packed["dense"])}


def unpack_file(path: str, out: str) -> dict:
    """Write the dense fairseq checkpoint packed in ``path`` to ``out``."""
    check_out_file(out, path)
    packed = read_torch_file(path, "packed checkpoint")
    if not is_packed(packed):
        raise UserError(f"{path} is not a packed sparse checkpoint (make one with: sparse_checkpoint.py pack)")
    if not isinstance(packed.get("version"), int) or packed["version"] > VERSION:
        raise UserError(f"{path} has format version {packed.get('version')!r}; this td_fairseq reads up to {VERSION}")
    save_torch(unpack_state(packed), out)
    return {"packed_bytes": os.path.getsize(path), "output_bytes": os.path.getsize(out)}
