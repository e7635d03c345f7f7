"""The translation evaluator of the sweep: translate a subset with fairseq's generator, score it
with sacreBLEU. Every input a user can get wrong is checked here and reported in one line. The
model it translates with comes from ``loading.load_translation_model``.
"""
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..files import UserError, first_line
from ..precision import DTYPES, autocast


ENGINES = ("fairseq", "ctranslate2")


@dataclass(frozen=True)
class DecodeConfig:
    """How a subset is translated and scored; every field changes the numbers."""
    subset: str = "test"
    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    ref: Optional[str] = None
    spm: Optional[str] = None
    engine: str = "fairseq"  # or ctranslate2: the model converted and decoded where it is served
    quantization: Optional[str] = None  # ctranslate2's weight type (float32 by default); fairseq: None
    dtype: str = "fp32"  # fairseq: bf16 decodes under autocast (weights pruned and kept in fp32)

    def __post_init__(self):
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "ctranslate2" and self.quantization is None:
            object.__setattr__(self, "quantization", "float32")
        if self.engine == "fairseq" and self.quantization is not None:
            raise ValueError("--quantization applies to --engine ctranslate2 only")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.engine != "fairseq" and self.dtype != "fp32":
            raise ValueError("--bf16 applies to --engine fairseq; CTranslate2 takes --quantization")


def load_subset(task, data_bin: str, subset: str) -> int:
    """Load ``subset`` into ``task``; one-line errors for a missing, empty or misaligned one.
    Returns its number of sentences."""
    pair = f"{task.cfg.source_lang}-{task.cfg.target_lang}"
    for lang in (task.cfg.source_lang, task.cfg.target_lang):
        binary = os.path.join(data_bin, f"{subset}.{pair}.{lang}.bin")
        if os.path.isfile(binary) and os.path.getsize(binary) == 0:  # fairseq cannot even open it
            raise UserError(f"the '{subset}' subset of {data_bin} is empty")
    try:
        task.load_dataset(subset)
    except FileNotFoundError:
        raise UserError(f"data-bin {data_bin} has no '{subset}' subset")
    except (ValueError, AssertionError) as error:  # fairseq: an empty .bin, sides of unequal length
        raise UserError(f"cannot load the '{subset}' subset of {data_bin}: {first_line(error)}")
    if len(task.dataset(subset)) == 0:
        raise UserError(f"the '{subset}' subset of {data_bin} is empty")
    return len(task.dataset(subset))


def check_max_tokens(task, subset: str, max_tokens: int) -> None:
    """fairseq asserts mid-run on a sentence longer than a batch may hold: say it up front."""
    dataset = task.dataset(subset)
    longest = int(max(dataset.num_tokens(i) for i in range(len(dataset))))
    if longest > max_tokens:
        raise UserError(f"--max-tokens {max_tokens} is below the longest sentence of the '{subset}' subset "
                        f"({longest} tokens): raise it")


def detokenizer(tgt_dict, spm=None):
    """``text(token ids, escape_unk=False)``: dictionary symbols to text, as fairseq-generate writes it,
    then sentencepiece decoding. Every engine's output goes through it."""
    detok = (lambda s: spm.decode(s.split())) if spm is not None else (lambda s: s)
    # Without a model, undo sentencepiece pieces only if the dictionary holds any.
    pieces = spm is None and any(symbol.startswith("\u2581") for symbol in tgt_dict.symbols)
    bpe = "sentencepiece" if pieces else None
    return lambda tokens, escape_unk=False: detok(tgt_dict.string(tokens, bpe, escape_unk=escape_unk))


def translate(model, task, decode: DecodeConfig, max_tokens: int, spm=None, device="cpu"):
    """(hypotheses, references) detokenized, in corpus order, and decoding seconds."""
    from fairseq import utils
    from fairseq.dataclass.configs import GenerationConfig

    dataset = task.dataset(decode.subset)
    generator = task.build_generator([model], GenerationConfig(beam=decode.beam, lenpen=decode.lenpen,
                                                               max_len_a=decode.max_len_a, max_len_b=decode.max_len_b))
    batches = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=False, seed=1, num_workers=0).next_epoch_itr(shuffle=False)
    tgt_dict = task.target_dictionary
    text = detokenizer(tgt_dict, spm)
    hyps, refs = [None] * len(dataset), [None] * len(dataset)
    start = time.perf_counter()
    # one autocast region for the whole subset: each weight is cast to bf16 once, not per step
    with torch.no_grad(), autocast(torch.device(device).type, DTYPES[decode.dtype]):
        for sample in batches:
            if torch.device(device).type == "cuda":
                sample = utils.move_to_cuda(sample, device)
            output = task.inference_step(generator, [model], sample)
            for i, sample_id in enumerate(sample["id"].tolist()):
                hyps[sample_id] = text(output[i][0]["tokens"].int().cpu())
                ref = utils.strip_pad(sample["target"][i], tgt_dict.pad()).int().cpu()
                refs[sample_id] = text(ref, escape_unk=True)
    return hyps, refs, time.perf_counter() - start


def read_reference(path: str, expected: int) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise UserError(f"reference file not found: {path}")
    except UnicodeDecodeError:
        raise UserError(f"reference file {path} is not UTF-8")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != expected:
        raise UserError(f"reference {path} has {len(lines)} lines but the subset has {expected} sentences")
    return lines


def bleu_chrf(hyps, refs):
    """(BLEU, chrF, BLEU signature) with sacreBLEU's defaults."""
    from sacrebleu.metrics import BLEU, CHRF
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return b.score, c.score, str(bleu.get_signature())


def load_spm(path: str):
    import sentencepiece
    if not os.path.isfile(path):
        raise UserError(f"sentencepiece model not found: {path}")
    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as error:
        raise UserError(f"cannot read sentencepiece model {path}: {first_line(error)}")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


class TranslationEvaluator:
    """``evaluate(level)`` for the core loop: translate the subset with the model as it stands."""

    def __init__(self, model, task, decode: DecodeConfig, max_tokens: int, device: str, spm=None,
                 references=None):
        self.model, self.task, self.decode, self.max_tokens = model, task, decode, max_tokens
        self.device, self.spm, self.references = device, spm, references
        self.last_hypotheses = None

    def __call__(self, level) -> dict:
        hyps, refs, seconds = translate(self.model, self.task, self.decode, self.max_tokens, self.spm, self.device)
        self.last_hypotheses = hyps
        bleu, chrf, signature = bleu_chrf(hyps, self.references or refs)
        return {"bleu": round(bleu, 2), "chrf": round(chrf, 2), "signature": signature,
                "decode_seconds": round(seconds, 2), "sentences": len(hyps)}
