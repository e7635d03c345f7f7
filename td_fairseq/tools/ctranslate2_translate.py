"""The sweep's second engine: translate a subset with CTranslate2 exactly as ``translate`` does with
fairseq, and the evaluator that converts the model as it stands at each level.

Same input, same bound, same output text: the subset is cut into fairseq's own batches (its
iterator, sorted by length, ``max_tokens``), each batch gets fairseq's length bound
min(int(a * padded source length + b), max positions - 1), and the output tokens are mapped back
to dictionary ids and detokenized by the same code as fairseq's hypotheses. So with float32
weights the two engines differ only where beam scores tie or round differently.
"""
import os
import tempfile
import time

import torch

from ..files import UserError
from .checkpoint import stock_checkpoint
from .ctranslate2_export import convert_state
from .loading import load_checkpoint
from .translate import DecodeConfig, bleu_chrf, detokenizer


def load_translator(model_dir: str, device: str = "cpu", compute_type: str = "default", threads: int = None,
                    inter_threads: int = 1):
    """A ``ctranslate2.Translator``; ``threads`` defaults to torch's, so both engines get the same CPUs."""
    import ctranslate2
    device = "cuda" if device.startswith("cuda") else "cpu"
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type != "default" and compute_type not in supported:
        raise UserError(f"CTranslate2 cannot compute in {compute_type} on this {device} "
                        f"(it can: {', '.join(sorted(supported))})")
    return ctranslate2.Translator(model_dir, device=device, compute_type=compute_type, inter_threads=inter_threads,
                                  intra_threads=threads or torch.get_num_threads())


def source_batches(task, subset: str, max_tokens: int):
    """[(sentence ids, source token strings without eos, fairseq's padded source length)] per batch."""
    from fairseq import utils

    dataset, src_dict = task.dataset(subset), task.source_dictionary
    batches = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_positions=task.max_positions(),
        ignore_invalid_inputs=False, seed=1, num_workers=0).next_epoch_itr(shuffle=False)
    out = []
    for sample in batches:
        tokens = sample["net_input"]["src_tokens"]
        sources = [[src_dict[i] for i in utils.strip_pad(row, src_dict.pad()).tolist()[:-1]] for row in tokens]
        out.append((sample["id"].tolist(), sources, tokens.shape[1]))
    return out


def translate_ct2(translator, task, decode: DecodeConfig, max_tokens: int, spm=None, max_positions: int = 1024,
                  max_batch_size: int = 0, batch_type: str = "examples"):
    """(hypotheses, references) detokenized, in corpus order, and decoding seconds, as ``translate``."""
    from fairseq import utils

    dataset, tgt_dict = task.dataset(decode.subset), task.target_dictionary
    detok = detokenizer(tgt_dict, spm)
    hyps, refs = [None] * len(dataset), [None] * len(dataset)
    batches = source_batches(task, decode.subset, max_tokens)
    seconds = 0.0
    for ids, sources, width in batches:
        bound = min(int(decode.max_len_a * width + decode.max_len_b), max_positions - 1)
        start = time.perf_counter()
        results = translator.translate_batch(sources, beam_size=decode.beam, length_penalty=decode.lenpen,
                                              max_decoding_length=bound, max_batch_size=max_batch_size,
                                              batch_type=batch_type)
        seconds += time.perf_counter() - start
        for sample_id, result in zip(ids, results):
            hyps[sample_id] = detok(torch.tensor([tgt_dict.index(t) for t in result.hypotheses[0]], dtype=torch.int))
            ref = utils.strip_pad(dataset[sample_id]["target"], tgt_dict.pad()).int()
            refs[sample_id] = detok(ref, escape_unk=True)
    return hyps, refs, seconds


class CTranslate2Evaluator:
    """``evaluate(level)`` for the core loop: convert the fairseq model as it stands (this level's
    weights) with CTranslate2's converter, translate the subset in CTranslate2, score it."""

    def __init__(self, model, task, checkpoint: str, data_bin: str, decode: DecodeConfig, max_tokens: int,
                 device: str = "cpu", spm=None, references=None):
        self.model, self.task, self.data_bin, self.decode = model, task, data_bin, decode
        self.max_tokens, self.device, self.spm, self.references = max_tokens, device, spm, references
        self.stock = stock_checkpoint(load_checkpoint(checkpoint))  # its cfg; the weights come from the model
        self.last_hypotheses = None

    def weights(self) -> dict:
        current = self.model.state_dict()
        missing = sorted(set(self.stock["model"]) - set(current))
        if missing:
            raise UserError(f"the model has no {missing[0]}: cannot convert it as the checkpoint's stock arch")
        return {k: current[k].detach().cpu() for k in self.stock["model"]}

    def __call__(self, level) -> dict:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            convert_state(dict(self.stock, model=self.weights()), self.data_bin, os.path.join(tmp, "model"),
                          self.decode.quantization)
            translator = load_translator(os.path.join(tmp, "model"), self.device, self.decode.quantization)
            convert_seconds = time.perf_counter() - start
            hyps, refs, seconds = translate_ct2(translator, self.task, self.decode, self.max_tokens, self.spm,
                                                self.model.max_decoder_positions())
        self.last_hypotheses = hyps
        bleu, chrf, signature = bleu_chrf(hyps, self.references or refs)
        return {"bleu": round(bleu, 2), "chrf": round(chrf, 2), "signature": signature,
                "decode_seconds": round(seconds, 2), "convert_seconds": round(convert_seconds, 2),
                "sentences": len(hyps)}
