"""Export any translation checkpoint of ours to a CTranslate2 model, through CTranslate2's own
fairseq converter (``ctranslate2.converters.FairseqConverter``, the code behind
``ct2-fairseq-converter``), never a model format of our own.

The converter loads ``checkpoint["args"] or checkpoint["cfg"]["model"]`` with torch's safe loader,
sets ``.data`` on it and reads the architecture from its attributes, then builds the model with
stock fairseq: so the checkpoint must be stock (TD and baseline checkpoints are exported with
``stock_checkpoint`` first) and its cfg.model must have attributes (``servable_state``; our plain
dict gives ``AttributeError: 'dict' object has no attribute 'data'``).

Compact checkpoints: removed FFN units are smaller fc1/fc2 matrices, which CTranslate2 reads per
layer from the weights themselves. Removed attention heads are not: CTranslate2 keeps one head
count for the whole model and the converter knows only fairseq's own model names, so a
``transformer_compact`` checkpoint is refused in one line.
"""
import os
import shutil
import tempfile

from ..files import UserError, first_line, remove_stale_temps, save_torch, temp_prefix, write_json
from ..results import command_line, git_commit
from ..sparsity import parse_kinds, sparsity_report
from .checkpoint import prunable_weights, servable_state, stock_checkpoint
from .compact import COMPACT_ARCH
from .loading import arch_of, check_data_bin, load_checkpoint, model_config
from .translate import load_spm

QUANTIZATIONS = ("float32", "int8", "int8_float32")
EXPORT_INFO = "export.json"


def check_quantization(quantization: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise UserError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    return quantization


def convertible_state(state: dict, path: str) -> dict:
    """The stock form of ``state`` that the converter can build, or one line saying why not."""
    if arch_of(state) == COMPACT_ARCH:
        raise UserError(f"{path} has attention heads removed (arch {COMPACT_ARCH}): CTranslate2 holds one head "
                        "count and one head size for the whole model, and its fairseq converter builds only "
                        "fairseq's own Transformer; compact FFN units only (compact_checkpoint.py without --heads)")
    return stock_checkpoint(state)


def _converter(path: str, data_bin: str, source_lang: str, target_lang: str):
    """CTranslate2's FairseqConverter, keeping the spec it built so the export can say what it holds."""
    from ctranslate2.converters import FairseqConverter

    class Converter(FairseqConverter):
        spec = None

        def _load(self):
            self.spec = super()._load()
            return self.spec

    return Converter(path, data_bin, source_lang=source_lang, target_lang=target_lang)


def convert_state(state: dict, data_bin: str, out_dir: str, quantization: str = "float32") -> dict:
    """Convert a stock checkpoint state (in memory) into the CTranslate2 model ``out_dir`` (which must
    not exist). Returns the FFN width of each converted layer."""
    model = model_config(state)
    task = state["cfg"].get("task") or {}
    langs = [task.get("source_lang") or model.get("source_lang"), task.get("target_lang") or model.get("target_lang")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pt")
        save_torch(servable_state(state), path)
        converter = _converter(path, data_bin, *langs)
        try:
            converter.convert(out_dir, quantization=check_quantization(quantization))
        except FileNotFoundError as error:
            raise UserError(f"data-bin {data_bin} lacks a file the checkpoint needs: {error.filename or error}")
        except ValueError as error:  # the converter's own checks (unsupported options) say what is wrong
            raise UserError(f"CTranslate2's converter refuses the checkpoint: {first_line(error)}")
        except RuntimeError as error:
            if "size mismatch" in str(error):
                raise UserError(f"the dictionary in {data_bin} does not match the checkpoint (embedding sizes differ)")
            raise
    spec = converter.spec
    return {side: [int(layer.ffn.linear_0.weight.shape[0]) for layer in getattr(spec, side).layer]
            for side in ("encoder", "decoder")}


def _versions() -> dict:
    import ctranslate2
    import fairseq
    import torch
    return {"ctranslate2": ctranslate2.__version__, "fairseq": fairseq.__version__, "torch": torch.__version__}


def check_new_dir(out: str) -> str:
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise UserError(f"{out} exists: an export never overwrites, choose a new --out")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UserError(f"cannot create {out}: its folder {parent} does not exist or is not writable")
    return out


def export_ctranslate2(path: str, data_bin: str, out: str, quantization: str = "int8", spm: str = None,
                       command: str = None) -> dict:
    """Write the CTranslate2 model folder ``out`` (built beside it, then renamed: all or nothing),
    with the sentencepiece model when given and ``export.json`` saying what was done."""
    check_quantization(quantization)
    out = check_new_dir(out)
    remove_stale_temps(os.path.dirname(out))  # the folder a killed earlier export left
    check_data_bin(data_bin)
    if spm is not None:
        load_spm(spm)
    state = load_checkpoint(path)
    stock = convertible_state(state, path)
    tmp = os.path.join(os.path.dirname(out), f"{temp_prefix()}{os.path.basename(out)}")
    try:
        widths = convert_state(stock, data_bin, tmp, quantization)
        if spm is not None:
            shutil.copyfile(spm, os.path.join(tmp, os.path.basename(spm)))
        weights = sparsity_report(prunable_weights(stock["model"], parse_kinds("attn,ffn")))
        info = {"source": os.path.abspath(path), "source_arch": arch_of(state),
                "compact": state.get("compact"), "arch": arch_of(stock),
                "data_bin": os.path.abspath(data_bin), "quantization": quantization,
                "spm": spm and os.path.basename(spm), "ffn_widths": widths,
                "attn_ffn_weight_sparsity": round(weights["global"], 6), **_versions(),
                "command": command or command_line(), "commit": git_commit(), "files": sorted(os.listdir(tmp))}
        write_json(os.path.join(tmp, EXPORT_INFO), info)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
