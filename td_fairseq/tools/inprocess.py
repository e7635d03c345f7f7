"""Fairseq models, trainers and batches built in-process, for tests and benchmarks.

A made-up dictionary (``w0 .. wN``) stands in for a data-bin and batches are random token ids,
so a model can be built, stepped and timed with nothing on disk. Tests and benchmarks share
this one helper (benchmarks never import tests): a model timed by a benchmark is built exactly
as the tests check it, through fairseq's own option parsing and task.
"""
import argparse
import os
import subprocess
import sys

import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask

import td_fairseq.criterions  # noqa: F401  (registers the criterion)
import td_fairseq.models  # noqa: F401  (registers the TD archs)

NO_DATA = "/nonexistent"  # fairseq's parser wants a data path; in-process builds never read it


def dictionary(size: int = 50) -> Dictionary:
    vocab = Dictionary()
    for i in range(size):
        vocab.add_symbol(f"w{i}")
    return vocab


def parse_args(arch: str, extra=(), data: str = NO_DATA) -> argparse.Namespace:
    """fairseq training args for ``arch``; ``extra`` wins over the defaults (argparse keeps the last)."""
    argv = [data, "--task", "translation", "--arch", arch, "--criterion", "label_smoothed_cross_entropy_td",
            "--dropout", "0", "--attention-dropout", "0", *map(str, extra)]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


def translation_task(arch: str, extra=(), vocab: Dictionary = None):
    """(fairseq TranslationTask on ``vocab`` for both sides, its parsed args)."""
    args = parse_args(arch, extra)
    vocab = vocab or dictionary()
    return TranslationTask(args, vocab, vocab), args


def build(arch: str = "transformer_td_tiny", extra=(), vocab: Dictionary = None):
    """(model, criterion, vocab) built by fairseq's TranslationTask on one shared dictionary.
    Dropout is off unless ``extra`` sets it, so forward passes are deterministic in tests."""
    task, args = translation_task(arch, extra, vocab)
    return task.build_model(args), task.build_criterion(args), task.source_dictionary


def sample(vocab: Dictionary, bsz: int = 4, src_len: int = 7, tgt_len: int = 6, seed: int = 0, device="cpu") -> dict:
    """One teacher-forced batch of random tokens; every sentence is full length, targets end in eos."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(vocab.nspecial, len(vocab), (bsz, src_len), generator=g)
    tgt = torch.randint(vocab.nspecial, len(vocab), (bsz, tgt_len), generator=g)
    tgt[:, -1] = vocab.eos()
    prev = torch.cat([tgt[:, -1:], tgt[:, :-1]], dim=1)
    return {"net_input": {"src_tokens": src.to(device), "src_lengths": torch.full((bsz,), src_len, device=device),
                          "prev_output_tokens": prev.to(device)},
            "target": tgt.to(device), "ntokens": tgt.numel()}


def random_batches(vocab: Dictionary, count: int, tokens: int, length: int, seed: int = 0, device="cpu") -> list:
    """``count`` training batches of about ``tokens`` target tokens in sentences of ``length``."""
    bsz = max(1, tokens // length)
    return [sample(vocab, bsz, length, length, seed + i, device) for i in range(count)]


def source_batches(vocab: Dictionary, sentences: int, batch: int, length: int, seed: int = 0, device="cpu") -> list:
    """Generation inputs: ``sentences`` random sources of ``length`` tokens plus eos, in batches."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, sentences, batch):
        bsz = min(batch, sentences - start)
        src = torch.randint(vocab.nspecial, len(vocab), (bsz, length + 1), generator=g)
        src[:, -1] = vocab.eos()
        out.append({"id": torch.arange(start, start + bsz),
                    "net_input": {"src_tokens": src.to(device),
                                  "src_lengths": torch.full((bsz,), length + 1, device=device)}})
    return out


def write_dictionaries(directory: str, size: int, langs=("en", "de")) -> None:
    """dict.<lang>.txt files of ``size`` made-up symbols: enough of a data-bin to load a checkpoint."""
    for lang in langs:
        with open(os.path.join(directory, f"dict.{lang}.txt"), "w") as f:
            f.writelines(f"w{i} {size - i}\n" for i in range(size))


def random_checkpoint(directory: str, extra=(), arch: str = "transformer_td", seed: int = 1, edit=None,
                      name: str = "random.pt") -> str:
    """Save a randomly initialised model as a stock checkpoint in ``directory`` (which must hold
    the dictionaries, see ``write_dictionaries``) and return its path. ``edit`` maps the model's
    state dict to the one saved (e.g. pruned to a pattern). Built through fairseq's option
    parsing and task, so fairseq's own loader reads it back like a trained checkpoint."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    from ..files import save_torch
    from .checkpoint import stock_checkpoint

    ns = options.parse_args_and_arch(options.get_training_parser(), [
        directory, "--task", "translation", "--arch", arch, "--source-lang", "en", "--target-lang", "de",
        "--share-all-embeddings", "--seed", str(seed), *map(str, extra)])
    cfg = convert_namespace_to_omegaconf(ns)
    torch.manual_seed(seed)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["model"] = vars(plain["model"]) if isinstance(plain["model"], argparse.Namespace) else plain["model"]
    state = stock_checkpoint({"cfg": plain, "model": model.state_dict(), "args": None})
    if edit is not None:
        state["model"] = edit(state["model"])
    path = os.path.join(directory, name)
    save_torch(state, path)
    return path


def synthetic_data_bin(root: str, train: int = 800, valid: int = 60) -> str:
    """A small binarised corpus from ``td_fairseq.synthetic`` (fairseq-preprocess, joined dictionary)."""
    from ..synthetic import write_corpus
    for split, n, seed in (("train", train, 1), ("valid", valid, 2)):
        write_corpus(os.path.join(root, split), n, seed)
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "en", "--target-lang", "de",
                    "--trainpref", os.path.join(root, "train"), "--validpref", os.path.join(root, "valid"),
                    "--destdir", os.path.join(root, "bin"), "--joined-dictionary", "--workers", "1"],
                   check=True, capture_output=True)
    return os.path.join(root, "bin")


def build_trainer(data_bin: str, argv=(), tpu=None, edit=None):
    """(fairseq Trainer, task) exactly as fairseq-train builds them, train split loaded.
    ``tpu=False`` undoes fairseq 0.12's rule that --bf16 implies --tpu (a GPU or CPU run);
    ``edit(args)`` changes the parsed args before anything is built."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), [data_bin, *map(str, argv)])
    if tpu is not None:
        args.tpu = tpu
    if edit is not None:
        edit(args)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion), task
