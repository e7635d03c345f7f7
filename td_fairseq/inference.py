"""Load a checkpoint for fairseq's generator, optionally with 2:4 weights as semi-structured sparse.

    from td_fairseq import load_for_inference
    model, task, report = load_for_inference("pruned_2of4.pt", semi_structured=True,
                                             dtype=torch.bfloat16, device="cuda")
    generator = task.build_generator([model], GenerationConfig(beam=4))

A stock or TD checkpoint is read by fairseq's own loader; TD and the baselines' views are folded
into plain weights and removed (as the BLEU sweep does), the model is put in eval mode and moved
to ``device`` and ``dtype``. With ``semi_structured`` each attention and FFN linear whose weight
follows 2:4 (e.g. ``prune_checkpoint.py --pattern 2:4``, or TD trained with ``--td-pattern 2:4``
then pruned) runs the GPU's sparse kernels; the rest stay dense and one line says how many and
why. On a CPU, or a GPU or dtype without support, every weight stays dense, also with one line.
"""
import torch

from .tools import semi_structured as sst


def load_for_inference(path: str, semi_structured: bool = False, dtype: torch.dtype = None, device=None,
                       data_bin: str = None, targets: str = "attn,ffn", log=print):
    """(model, task, report) ready for ``task.build_generator([model], ...)``.

    ``data_bin``: the folder with the checkpoint's dictionaries (default: the one it was trained
    on, from its config). ``report`` is None without ``semi_structured``, else {"converted":
    [names], "dense": {reason: [names]}, "backend", "notice"}. With ``semi_structured`` the
    attention modules call their projection modules (fairseq's fast path would bypass the
    sparse weights; the math is the same), also when falling back to dense weights.
    """
    from .tools.loading import load_checkpoint, load_translation_model

    if data_bin is None:
        data_bin = load_checkpoint(path)["cfg"]["task"]["data"]
    model, task, _ = load_translation_model(path, data_bin)
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    if not semi_structured:
        return model, task, None
    sst.disable_attention_fast_path(model)
    why_not = sst.support(device, dtype or next(model.parameters()).dtype)
    if why_not:
        report = {"converted": [], "dense": {why_not: ["all"]}, "backend": None,
                  "notice": f"semi-structured 2:4 unavailable ({why_not}): serving dense weights"}
    else:
        report = sst.convert_linears(model, targets)
        report["notice"] = sst.summary(report)
    log(report["notice"])
    return model, task, report
