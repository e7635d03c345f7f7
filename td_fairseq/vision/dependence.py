"""The paper's dependence measure (RQ3) on a one-hidden-layer MLP of 10 ReLU units.

Removing the weights in a set R changes the loss by ``dE = |E(theta - d) - E(theta)|``
with ``d_i = theta_i`` for i in R and 0 elsewhere; near a minimum ``dE ~ 1/2 d^T H d``,
a sum over R x R of ``theta_i H_ij theta_j``. TD should make that block small: the
weights it targets learn not to matter, alone or together. E is the mean cross-entropy
(no label smoothing, no weight decay) on the training set, computed in float64 with
full weights (no TD mask).
"""
import copy
import io
from collections import OrderedDict
from dataclasses import asdict

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..files import atomic_write
from ..sparsity import PruneRanking, TDConfig, apply_targeted_dropout, remove_views
from .evaluate import accuracy
from .train import TrainConfig, train


def one_hidden_layer_mlp(in_features: int = 64, hidden: int = 10, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), hidden=nn.Linear(in_features, hidden),
                                     relu=nn.ReLU(), out=nn.Linear(hidden, num_classes)))


def mlp_selector(name: str, module: nn.Module) -> bool:
    """TD and pruning target the hidden layer, as the ResNet rule spares the logits layer."""
    return name == "hidden"


class FlatLoss:
    """E as a function of one flat vector holding the selected weights (the rest fixed)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, names):
        self.model = copy.deepcopy(model).double().eval()
        self.x, self.y = x.double(), y
        self.names = list(names)
        params = dict(self.model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.theta = torch.cat([params[n].detach().flatten() for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict:
        return dict(zip(self.names, (p.view(s) for p, s in zip(flat.split([s.numel() for s in self.shapes]),
                                                                      self.shapes))))

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self.model, self.unflatten(flat), (self.x,))
        return F.cross_entropy(logits, self.y)


def delta_e(loss: FlatLoss, removed: torch.Tensor) -> float:
    """Exact ``|E(theta - d) - E(theta)|`` for the boolean flat mask ``removed``."""
    with torch.no_grad():
        d = loss.theta * removed
        return abs(float(loss(loss.theta - d) - loss(loss.theta)))


def hessian(loss: FlatLoss) -> torch.Tensor:
    """Exact Hessian of E in the selected weights (n x n; fine for a few thousand)."""
    return torch.autograd.functional.hessian(loss, loss.theta, vectorize=True)


def quadratic_delta_e(loss: FlatLoss, removed: torch.Tensor, h: torch.Tensor = None) -> float:
    """``1/2 d^T H d``; with no Hessian given, from one Hessian-vector product."""
    d = loss.theta * removed
    if h is None:
        _, hd = torch.autograd.functional.hvp(loss, loss.theta, d)
    else:
        hd = h @ d
    return 0.5 * float(d @ hd)


def weighted_hessian(theta: torch.Tensor, h: torch.Tensor, removed: torch.Tensor):
    """``theta_i H_ij theta_j`` ordered important (kept) first, unimportant (removed)
    last; returns (matrix, number of kept weights). Its bottom-right block sums to
    ``d^T H d``."""
    order = torch.cat([(~removed).nonzero().flatten(), removed.nonzero().flatten()])
    m = theta[:, None] * h * theta[None, :]
    return m[order][:, order], int((~removed).sum())


def analyse(model: nn.Module, data, select=mlp_selector, fraction: float = 0.75) -> dict:
    """Remove the bottom ``fraction`` of each hidden unit's weights by magnitude (the set
    weight TD targets at gamma = fraction) and measure how much the rest depended on them."""
    weights = {f"{n}.weight": m._parameters["weight"].detach() for n, m in model.named_modules()
               if select(n, m)}
    masks = PruneRanking(weights, "weight", "unit").masks(fraction)
    removed = torch.cat([masks[n].flatten() for n in weights])
    loss = FlatLoss(model, data.train_x, data.train_y, weights)
    h = hessian(loss)
    matrix, kept = weighted_hessian(loss.theta, h, removed)
    pruned_model = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            pruned_model.get_parameter(name).masked_fill_(mask, 0.0)
    return {
        "delta_e": delta_e(loss, removed),
        "quadratic_delta_e": quadratic_delta_e(loss, removed, h),
        "train_loss": float(loss(loss.theta).detach()),
        "accuracy": accuracy(model, data.test_x, data.test_y),
        "pruned_accuracy": accuracy(pruned_model, data.test_x, data.test_y),
        "prune_fraction": fraction,
        "weights": len(removed),
        "removed_weights": int(removed.sum()),
        "block_sums": {"kept_kept": float(matrix[:kept, :kept].sum()),
                       "kept_removed": float(matrix[:kept, kept:].sum()),
                       "removed_removed": float(matrix[kept:, kept:].sum())},
        "matrix": matrix,
        "kept": kept,
    }


def train_and_analyse(data, td: TDConfig, config: TrainConfig, fraction: float = 0.75,
                      hidden: int = 10, log=None) -> dict:
    """Train the MLP (with TD on its hidden layer unless td_type is none), then analyse
    it with full weights: TD is removed before measuring."""
    torch.manual_seed(config.seed)
    model = one_hidden_layer_mlp(data.train_x[0].numel(), hidden, data.num_classes)
    if td.td_type != "none":
        apply_targeted_dropout(model, td, mlp_selector)
    history = train(model, data, config, log)
    remove_views(model)
    result = analyse(model, data, mlp_selector, fraction)
    result.update(td=asdict(td), train=config.to_dict(), hidden_units=hidden, history=history)
    return result


def dependence_study(data, config: TrainConfig, td: TDConfig, fraction: float = 0.75, log=None) -> dict:
    """{'no_td': ..., 'td': ...}: the same MLP and recipe, without and with TD."""
    return {"no_td": train_and_analyse(data, TDConfig(td_type="none"), config, fraction, log=log),
            "td": train_and_analyse(data, td, config, fraction, log=log)}


def plot_heatmaps(panels: dict, path: str) -> None:
    """Side-by-side ``theta_i H_ij theta_j`` heatmaps on one colour scale, with lines
    where the removed block starts. ``panels``: {title: analyse() result}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = torch.cat([r["matrix"].abs().flatten() for r in panels.values()])
    # The 99.5th percentile, not the maximum: a few large diagonal entries would wash out
    # the off-diagonal structure the figure is about.
    limit = float(torch.quantile(everything.float(), 0.995)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6))
    for ax, (title, r) in zip(list(axes) if len(panels) > 1 else [axes], panels.items()):
        image = ax.imshow(r["matrix"].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.axhline(r["kept"] - 0.5, color="k", lw=0.6)
        ax.axvline(r["kept"] - 0.5, color="k", lw=0.6)
        ax.set_title(f"{title}\n|dE| = {r['delta_e']:.4f}, acc {r['accuracy']:.1f} -> {r['pruned_accuracy']:.1f} %",
                     fontsize=9)
        ax.set_xlabel("weight j (important | unimportant)")
        ax.set_ylabel("weight i")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(r"$\theta_i H_{ij} \theta_j$ (colour clipped at the 99.5th percentile of |value|)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
