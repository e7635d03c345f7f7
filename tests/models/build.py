"""Build fairseq models in-process on a made-up dictionary (no data on disk needed)."""
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask

import td_fairseq.criterions  # noqa: F401
import td_fairseq.models  # noqa: F401


def dictionary(size=50):
    d = Dictionary()
    for i in range(size):
        d.add_symbol(f"w{i}")
    return d


def build(arch="transformer_td_tiny", extra=(), vocab=None):
    vocab = vocab or dictionary()
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["/nonexistent", "--task", "translation", "--arch", arch,
                                                "--criterion", "label_smoothed_cross_entropy_td",
                                                "--dropout", "0", "--attention-dropout", "0", *extra])
    task = TranslationTask(args, vocab, vocab)
    return task.build_model(args), task.build_criterion(args), vocab


def sample(vocab, bsz=4, src_len=7, tgt_len=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(vocab.nspecial, len(vocab), (bsz, src_len), generator=g)
    tgt = torch.randint(vocab.nspecial, len(vocab), (bsz, tgt_len), generator=g)
    tgt[:, -1] = vocab.eos()
    prev = torch.cat([tgt[:, -1:], tgt[:, :-1]], dim=1)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.full((bsz,), src_len),
                          "prev_output_tokens": prev},
            "target": tgt, "ntokens": tgt.numel()}
