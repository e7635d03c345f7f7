"""The baselines' weight views (``views.WeightView`` subclasses), attached like targeted dropout.

Each offers the hooks of every view (``set_num_updates``, ``rates``, ``log_values``,
``drop_stats``, ``regularization_loss()``, which the criterion's hook adds to the objective). Gates, log
alphas and penalty sums are computed in float32: under --fp16 a sum over millions of
weights overflows half precision.
"""
import math

import torch
from torch import nn

from .masks import bernoulli_mask, targeted_weight_mask
from .schedules import cubic_sparsity
from .views import WeightView

L0_BETA, L0_ZETA, L0_GAMMA = 2.0 / 3.0, 1.1, -0.1
L0_INIT_DROP = 0.1  # log_alpha starts at log(0.9 / 0.1), as in Gale et al.'s L0 layers
VD_INIT_LOG_SIGMA2 = -10.0
VD_THRESHOLD = 3.0  # weights with log alpha above this are removed at evaluation
VD_K1, VD_K2, VD_K3 = 0.63576, 1.87320, 1.48695


def unit_shape(weight_shape) -> tuple:
    """[out, 1, ...]: one entry per unit, broadcasting over the unit's weights."""
    return (weight_shape[0],) + (1,) * (len(weight_shape) - 1)


class RandomDropout(WeightView):
    """Standard (untargeted) dropout of weights or whole units, training only.

    Survivors are scaled by 1 / (1 - rate), as torch's dropout does: unlike TD's targeted
    low-magnitude weights, a random half of the weights carries half the signal, and a model
    trained on it unscaled is broken when evaluated with all of them (measured on Multi30k at
    rate .495: 0.3 BLEU dense, docs/RESULTS.md).
    """

    def __init__(self, weight, rate: float, by_unit: bool = False):
        super().__init__(weight)
        self.rate, self.by_unit = rate, by_unit

    @property
    def rates(self):
        return 1.0, self.rate

    def log_values(self):
        return {"drop_rate": self.rate}

    def forward(self, weight):
        if not self.training or self.rate <= 0:
            self._last_dropped = None
            return weight
        shape = unit_shape(weight.shape) if self.by_unit else weight.shape
        self._last_dropped = bernoulli_mask(shape, self.rate, weight.device)
        if self.rate >= 1:
            return weight.masked_fill(self._last_dropped, 0.0)
        return weight.masked_fill(self._last_dropped, 0.0) * (1.0 / (1.0 - self.rate))

    def extra_repr(self):
        return f"rate={self.rate}, by_unit={self.by_unit}"


class L1Penalty(WeightView):
    """Identity view; adds ``coef * sum |w|`` to the objective."""

    def __init__(self, weight, coef: float):
        super().__init__(weight)
        self.coef = coef

    def forward(self, weight):
        return weight

    def regularization_loss(self):
        return self.coef * self.raw_weight.float().abs().sum()

    def extra_repr(self):
        return f"coef={self.coef}"


def l0_eval_gate(log_alpha: torch.Tensor) -> torch.Tensor:
    """Deterministic hard-concrete gate: clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)."""
    return (torch.sigmoid(log_alpha.float()) * (L0_ZETA - L0_GAMMA) + L0_GAMMA).clamp(0.0, 1.0)


def l0_sample_gate(log_alpha: torch.Tensor) -> torch.Tensor:
    """A stretched, clamped hard-concrete sample (reparameterised: differentiable in log_alpha)."""
    u = torch.rand(log_alpha.shape, device=log_alpha.device).clamp(1e-6, 1.0 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha.float()) / L0_BETA)
    return (s * (L0_ZETA - L0_GAMMA) + L0_GAMMA).clamp(0.0, 1.0)


def l0_expected_gates(log_alpha: torch.Tensor) -> torch.Tensor:
    """sum of P(gate != 0) = sum sigmoid(log_alpha - beta * log(-gamma / zeta))."""
    return torch.sigmoid(log_alpha.float() - L0_BETA * math.log(-L0_GAMMA / L0_ZETA)).sum()


class L0Gate(WeightView):
    """Weight times a hard-concrete gate: sampled in training, deterministic in eval."""

    def __init__(self, weight, coef: float, by_unit: bool = False, init_drop: float = L0_INIT_DROP):
        super().__init__(weight)
        self.coef, self.by_unit = coef, by_unit
        shape = unit_shape(weight.shape) if by_unit else weight.shape
        init = math.log(1.0 - init_drop) - math.log(init_drop)
        self.log_alpha = nn.Parameter(torch.full(shape, init, dtype=weight.dtype, device=weight.device))

    def forward(self, weight):
        gate = l0_sample_gate(self.log_alpha) if self.training else l0_eval_gate(self.log_alpha)
        self._last_dropped = (gate == 0) if self.training else None
        return weight * gate.to(weight.dtype)

    def regularization_loss(self):
        return self.coef * l0_expected_gates(self.log_alpha)

    def extra_repr(self):
        return f"coef={self.coef}, by_unit={self.by_unit}"


def variational_log_alpha(weight: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log alpha = log sigma^2 - log w^2, clamped to [-10, 10] as usual for stability."""
    weight = weight.float()
    return (log_sigma2.float() - torch.log(weight * weight + 1e-8)).clamp(-10.0, 10.0)


def variational_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s approximation of KL(q || log-uniform prior), summed (>= 0).

    -KL ~ k1 * sigmoid(k2 + k3 * log_alpha) - 0.5 * log(1 + 1 / alpha) - k1.
    """
    neg_kl = VD_K1 * torch.sigmoid(VD_K2 + VD_K3 * log_alpha) - 0.5 * torch.log1p(torch.exp(-log_alpha)) - VD_K1
    return -neg_kl.sum()


class VariationalDropout(WeightView):
    """Training: w + sigma * eps, fresh per read. Eval: w with log alpha > 3 removed."""

    def __init__(self, weight, coef: float):
        super().__init__(weight)
        self.coef = coef
        self.log_sigma2 = nn.Parameter(torch.full_like(weight.detach(), VD_INIT_LOG_SIGMA2))

    def forward(self, weight):
        if self.training:
            noise = torch.randn_like(weight) * torch.exp(0.5 * self.log_sigma2).to(weight.dtype)
            return weight + noise
        return weight.masked_fill(variational_log_alpha(weight, self.log_sigma2) > VD_THRESHOLD, 0.0)

    def regularization_loss(self):
        return self.coef * variational_kl(variational_log_alpha(self.raw_weight, self.log_sigma2))

    def extra_repr(self):
        return f"coef={self.coef}, threshold={VD_THRESHOLD}"


def gmp_mask_step(step: int, start: int, steps: int, interval: int) -> int:
    """The last mask-update step at or before ``step`` (-1 before ``start``)."""
    if step < start:
        return -1
    return start + min(steps, (step - start) // interval) * interval


class GradualMagnitudePruning(WeightView):
    """Masked weight; the mask is recomputed at the schedule's update steps only.

    Per unit, the bottom s_t of |w| (pruned weights counting as 0, so masks are nested)
    with s_t from ``cubic_sparsity``. The mask is a saved buffer, so a resumed or loaded
    model keeps it; it is only recomputed in training, when the update step changes.
    """

    def __init__(self, weight, final: float, start: int, steps: int, interval: int):
        super().__init__(weight)
        self.final, self.start, self.steps, self.interval = final, start, steps, interval
        self.register_buffer("mask", torch.zeros(weight.shape, dtype=torch.bool, device=weight.device))
        self.register_buffer("mask_step", torch.tensor(-1, dtype=torch.long))
        self._known_step = None  # mirror of mask_step: avoids a device sync per read

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_step = None

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(step, self.final, start=self.start, steps=self.steps, interval=self.interval)

    @property
    def rates(self):
        step = int(self.mask_step) if self._known_step is None else self._known_step
        return self.sparsity_at(step), 1.0

    def log_values(self):
        return {"gmp_sparsity": self.rates[0]}

    def update_mask(self, weight: torch.Tensor) -> bool:
        """Recompute the mask if the schedule reached a new update step; True if it did."""
        step = gmp_mask_step(self.num_updates, self.start, self.steps, self.interval)
        if step == self._known_step or step == int(self.mask_step):
            self._known_step = step
            return False
        with torch.no_grad():
            kept = weight.detach().masked_fill(self.mask, 0.0)
            self.mask.copy_(targeted_weight_mask(kept, self.sparsity_at(step)))
            self.mask_step.fill_(step)
        self._known_step = step
        return True

    def forward(self, weight):
        if self.training:
            self.update_mask(weight)
            self._last_dropped = self.mask
        return weight.masked_fill(self.mask, 0.0)

    def extra_repr(self):
        return (f"final={self.final}, start={self.start}, steps={self.steps}, interval={self.interval}, "
                f"now sparsity={self.rates[0]:.4g}")


class Smallify(WeightView):
    """Weight times one switch per unit (row); units whose switch sign oscillates are removed.

    Our reading of Leclerc et al. 2018 ("Smallify: learning network size while training"):
    a switch per unit, initialised to 1, trained with the weights under ``coef * sum |switch|``.
    Once per optimizer update, in training, the sign s of each switch (sign(0) = 0) updates
    ``sign_mean = m * sign_mean + (1 - m) * s`` then ``sign_var = m * sign_var +
    (1 - m) * (s - sign_mean) ** 2`` (the new mean); a unit with ``sign_var > threshold`` is
    pruned for good. Pruned units read exactly zero in training and eval (zero gradient too)
    and leave the penalty. Statistics and the pruned set are saved buffers, so a resume keeps them.
    """

    def __init__(self, weight, coef: float, momentum: float = 0.9, threshold: float = 0.5):
        super().__init__(weight)
        self.coef, self.momentum, self.threshold = coef, momentum, threshold
        shape = unit_shape(weight.shape)
        self.switch = nn.Parameter(torch.ones(shape, dtype=weight.dtype, device=weight.device))
        for name in ("sign_mean", "sign_var"):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.float32, device=weight.device))
        self.register_buffer("pruned", torch.zeros(shape, dtype=torch.bool, device=weight.device))
        # the forward runs several times per update (gradient accumulation, several modules
        # reading a shared weight): the statistics must move once per update
        self._known_update = None

    @property
    def rates(self):
        return float(self.pruned.float().mean()), 1.0

    def log_values(self):
        return {"smallify_pruned": self.pruned.float().mean()}  # a tensor: no host sync per step

    def update_statistics(self) -> bool:
        """Fold the switches' signs into the statistics once per new update; True if it did."""
        if self.num_updates <= 0 or self.num_updates == self._known_update:
            return False
        self._known_update = self.num_updates
        m = self.momentum
        with torch.no_grad():
            sign = torch.sign(self.switch.float())
            self.sign_mean.mul_(m).add_(sign, alpha=1.0 - m)
            self.sign_var.mul_(m).add_((sign - self.sign_mean) ** 2, alpha=1.0 - m)
            self.pruned |= self.sign_var > self.threshold
        return True

    def forward(self, weight):
        if self.training:
            self.update_statistics()
            self._last_dropped = self.pruned
        return weight * (self.switch * ~self.pruned).to(weight.dtype)

    def regularization_loss(self):
        return self.coef * self.switch.float().abs().masked_fill(self.pruned, 0.0).sum()

    def extra_repr(self):
        return f"coef={self.coef}, momentum={self.momentum}, threshold={self.threshold}"


class FrozenMask(WeightView):
    """The weight with a fixed set of entries held at zero: fine-tuning a pruned model.

    The mask is a saved buffer (by default the weight's zeros when attached; a loader that
    attaches before loading weights sets it from the loaded ones), so a resumed run keeps
    it. Masked entries read exactly zero and get zero gradient, whatever the optimizer does
    to the raw values, so no optimizer or ``.data`` edit is needed.
    """

    def __init__(self, weight, mask=None):
        super().__init__(weight)
        mask = weight.detach() == 0 if mask is None else mask.to(torch.bool)
        self.register_buffer("mask", mask.clone())

    @property
    def rates(self):
        return 0.0, 0.0

    def log_values(self):
        return {"frozen_sparsity": self.mask.float().mean()}

    def forward(self, weight):
        return weight.masked_fill(self.mask, 0.0)
