"""Pure mask functions: which weights are targeted, and which of those are dropped.

PyTorch layout: a unit is one output feature, i.e. a row of ``nn.Linear.weight``
(``[out, in]``) and the first axis of a conv weight. Every function here is pure:
it reads tensors and returns boolean masks, never touching the weights.
"""
import math

import torch


def targeted_count(gamma: float, n: int) -> int:
    """floor(gamma * n), the official code's ``int(gamma * n)``.

    The epsilon keeps products such as 0.29 * 100 = 28.999... from losing one.
    """
    return min(n, max(0, math.floor(gamma * n + 1e-6)))


def bottom_k_rows(score: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly the ``k`` smallest entries of each row of a 2-D score.

    kthvalue is O(n) per row; ties at the threshold (zeros of a pruned matrix) would
    let ``<=`` select more than k, so only then do we pay for topk's exact indices.
    """
    rows, n = score.shape
    if k <= 0:
        return torch.zeros_like(score, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(score, dtype=torch.bool)
    threshold = score.kthvalue(k, dim=1, keepdim=True).values
    mask = score <= threshold
    if int(mask.sum()) != rows * k:
        index = score.topk(k, dim=1, largest=False).indices
        mask = torch.zeros_like(mask).scatter_(1, index, True)
    return mask


def targeted_weight_mask(weight: torch.Tensor, gamma: float, score: torch.Tensor = None) -> torch.Tensor:
    """Weight TD: per unit, the bottom ``gamma`` fraction of its incoming weights by |w|.

    ``score`` replaces |w| (same shape) for the random-targeted control.
    """
    score = weight.detach().abs() if score is None else score
    flat = score.reshape(score.shape[0], -1)
    return bottom_k_rows(flat, targeted_count(gamma, flat.shape[1])).view(weight.shape)


def unit_norms(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each unit's weights (one value per row / output channel)."""
    return weight.detach().reshape(weight.shape[0], -1).norm(dim=1)


def targeted_unit_mask(weight: torch.Tensor, gamma: float, score: torch.Tensor = None) -> torch.Tensor:
    """Unit TD: the bottom ``gamma`` fraction of units by L2 norm.

    Returns a mask of shape ``[out, 1, ...]`` that broadcasts over the weight, so a
    whole unit is targeted (and later dropped) at once. ``score`` has shape ``[out]``.
    """
    score = unit_norms(weight) if score is None else score
    mask = bottom_k_rows(score.view(1, -1), targeted_count(gamma, score.numel()))
    return mask.view((weight.shape[0],) + (1,) * (weight.dim() - 1))


def bernoulli_mask(shape, p: float, device=None) -> torch.Tensor:
    """Boolean tensor whose entries are True independently with probability ``p``.

    On CPU, ``torch.rand`` spends one generator call per element; slicing 64-bit draws
    into four 16-bit lanes costs a quarter of that, at a resolution of 2**-16 in p.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    if p <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    if p >= 1:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if device.type != "cpu":
        return torch.rand(shape, device=device) < p
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, (-(-n // 4),), dtype=torch.int64)
    lanes = words.view(torch.int16)[:n].view(shape)
    return lanes < (round(p * 65536) - 32768)


def dropped_mask(targeted: torch.Tensor, alpha: float) -> torch.Tensor:
    """Each targeted element (weight, or unit for a broadcast unit mask) dropped w.p. alpha."""
    if alpha >= 1:
        return targeted
    return targeted & bernoulli_mask(targeted.shape, alpha, targeted.device)
