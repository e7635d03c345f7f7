"""One training run, start to checkpoint: build the network for the data, attach TD or a
baseline's views to the TD targets, train (or continue a run), measure, and return the
checkpoint dict. The caller decides who writes it (rank 0) and where.
"""
from dataclasses import asdict, replace

import torch

from ..files import UserError
from ..sparsity import TDConfig
from ..sparsity.baselines import BaselineConfig
from ..sparsity.td import TargetedDropout
from ..sparsity.views import views_of
from . import distributed
from .archs import canonical_arch
from .training_state import build_model, make_checkpoint
from .train import Runtime, TrainConfig, loader_accuracy, train


def replica_check(model) -> dict:
    """Whether every rank ends with the same weights, the same TD targeted sets (the
    bottom-gamma set of each weight, which follows from the weights) and the same buffers
    (batch-norm statistics agree only under --sync-bn: without it each rank keeps its own;
    rank 0's are saved)."""
    ranks = distributed.ranks()
    if ranks.world == 1:
        return {"processes": 1}
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    targeted = [module.td.targeted(module._parameters["weight"]) for _, module in views_of(model)
                if isinstance(module.td, TargetedDropout) and module.td.config.td_type != "none"]
    return {"processes": ranks.world,
            "weights_agree": distributed.all_agree(distributed.fingerprint(params[k] for k in sorted(params))),
            "targeted_sets_agree": distributed.all_agree(distributed.fingerprint(targeted)),
            "buffers_agree": distributed.all_agree(distributed.fingerprint(buffers[k] for k in sorted(buffers)))}


def train_resnet(data, td: TDConfig, config: TrainConfig, arch: dict = None, log=None, command: str = "",
                 commit: str = "", baseline: BaselineConfig = None, runtime: Runtime = Runtime(),
                 resume: dict = None, on_epoch=None, progress=None) -> dict:
    """Train the network ``arch`` names (default ResNet-32; in_channels and num_classes come
    from ``data``) with TD on its targets, and return a checkpoint dict. Final test accuracy
    is reported with full weights and, for TD models, also with the whole targeted set
    removed (the official evaluation). ``resume``: a checkpoint of this same run to continue
    (its weights, optimizer, update count and random state). ``on_epoch(checkpoint)`` gets a
    resumable checkpoint after every epoch, on every rank.

    With ``baseline``, its views go on the TD targets instead of TD, and the test accuracy
    is the views' eval mode (equal to the folded model's). The checkpoint then records
    ``td`` with td_type none: no TD was attached (gamma and alpha are kept, as the script's
    default drop rate derives from them)."""
    arch = dict(arch or {"name": "resnet32"}, in_channels=data.in_channels, num_classes=data.num_classes)
    if baseline is not None:
        td = replace(td, td_type="none")
    extras = {"data": data.describe(), "runtime": dict(asdict(runtime), processes=distributed.ranks().world)}

    def checkpoint(history, metrics, state=None):
        return make_checkpoint(model, td, config.to_dict(), data.name, history, metrics, command, commit, baseline,
                               dict(extras, resume=state))

    torch.manual_seed(config.seed)
    model = build_model(arch, td, baseline)
    state = None
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        state = resume["resume"]
    views = dict(views_of(model))
    method = "td" if baseline is None else baseline.method
    partial = {"sparsity_method": method, "td_modules": sorted(views)}
    last_state = [state]

    def epoch_done(entry, epoch_state):
        last_state[0] = epoch_state
        if on_epoch is not None:
            on_epoch(checkpoint(epoch_state["history"], partial, epoch_state))

    history = train(model, data, config, log, runtime, state, epoch_done, progress)
    metrics = dict(partial, test_accuracy_eval_mask=None)
    controllers = [m.td for m in views.values() if isinstance(m.td, TargetedDropout)] if baseline is None else []
    for eval_mask in ([False, True] if controllers else [False]):
        for controller in controllers:
            controller.config = replace(td, eval_mask=eval_mask)
        metrics["test_accuracy_eval_mask" if eval_mask else "test_accuracy"] = loader_accuracy(
            model, data, runtime, max(config.batch_size, 256))["accuracy"]
    for controller in controllers:
        controller.config = td
    metrics["test_accuracy_as_configured"] = metrics["test_accuracy_eval_mask" if td.eval_mask else "test_accuracy"]
    metrics["replicas"] = replica_check(model)
    last = history[-1] if history else {}
    metrics.update(images_per_second=last.get("images_per_second"),
                   skipped_images=sum(entry.get("skipped_images", 0) for entry in history))
    return checkpoint(history, metrics, last_state[0])


def check_resumable(checkpoint: dict, path: str, arch: dict, td: TDConfig, baseline: BaselineConfig,
                    config: TrainConfig, data) -> None:
    """Refuse, in one line, to resume a checkpoint of another run: the network, TD or
    baseline, data set or recipe must be the ones this command asks for (epochs aside)."""
    if not checkpoint.get("resume"):
        raise UserError(f"--resume {path}: the checkpoint holds no resume state (written before version 2)")
    canonical = canonical_arch(arch)  # e.g. resnet50's blocks [1] -> [1, 1, 1, 1]
    described = checkpoint.get("data") or {"name": checkpoint.get("dataset")}
    now = data.describe()
    asked = {"arch": canonical, "td": asdict(td), "baseline": None if baseline is None else asdict(baseline),
             "dataset": now["name"], "classes": now.get("classes"), "image size": now.get("image_size"),
             "training recipe": dict(config.to_dict(), epochs=None)}
    stored = {"arch": checkpoint["arch"], "td": checkpoint["td"], "baseline": checkpoint.get("baseline"),
              "dataset": described["name"], "classes": described.get("classes"),
              "image size": described.get("image_size"), "training recipe": dict(checkpoint["train"], epochs=None)}
    if baseline is not None:  # the checkpoint records td_type none for a baseline run
        asked["td"] = dict(asked["td"], td_type="none")
    for key, value in asked.items():
        if stored[key] != value:
            raise UserError(f"--resume {path} was trained with another {key} ({stored[key]}, this command: {value}); "
                            f"resume with the command that wrote it: {checkpoint.get('command')}")
