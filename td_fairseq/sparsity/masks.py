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
    """Boolean mask of exactly the ``k`` smallest entries of each row of a 2-D score."""
    return bottom_k_rows_warm(score, k)[0]


def _split_rows(score: torch.Tensor, k: int):
    """Bottom-k mask of each row, and a per-row threshold strictly between the k-th and
    (k+1)-th smallest values (NaN where they tie, so that a later warm call recomputes).

    kthvalue is O(n) per row; ties at the k-th value (zeros of a pruned matrix) would let
    ``<=`` select more than k, so only then do we pay for topk's exact indices.
    """
    kth = score.kthvalue(k, dim=1, keepdim=True).values
    mask = score <= kth
    if int(mask.sum()) != score.shape[0] * k:
        index = score.topk(k, dim=1, largest=False).indices
        mask = torch.zeros_like(mask).scatter_(1, index, True)
    return mask, _boundary(score, mask)


def _boundary(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row midpoint between the largest selected and the smallest unselected score."""
    inside = score.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
    outside = score.masked_fill(mask, float("inf")).amin(dim=1, keepdim=True)
    return torch.where(inside < outside, (inside + outside) / 2, float("nan"))


def _nudge_rows(score: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor, width: int) -> torch.Tensor:
    """Fix rows whose count is off by ``shift`` (0 < |shift| <= width): drop the largest
    selected entries, or add the smallest unselected ones. O(n) per row, like kthvalue,
    but a few cheap passes instead of a selection."""
    too_many = shift > 0
    ranked = score.masked_fill(too_many[:, None] != mask, float("inf"))
    # Rows with too many: the candidates are the largest selected, i.e. smallest of -score.
    ranked = torch.where(too_many[:, None] & mask, -score, ranked)
    index = ranked.topk(width, dim=1, largest=False).indices
    flip = torch.arange(width, device=score.device) < shift.abs()[:, None]
    return mask.scatter(1, index, mask.gather(1, index) ^ flip)


def bottom_k_rows_warm(score: torch.Tensor, k: int, threshold: torch.Tensor = None, width: int = 4):
    """(mask of exactly the k smallest entries per row, threshold to pass next time).

    Weights move little between updates, so last update's per-row threshold usually still
    has exactly k entries below it; then ``score < threshold`` *is* the bottom-k set (each
    entry below it is smaller than every entry above). Rows off by at most ``width`` are
    nudged into place; only rows off by more go through kthvalue again. The result is
    exact either way. The count check needs a host sync, so accelerators take one topk
    instead (exact, ties broken by topk's order) and no threshold.
    """
    rows, n = score.shape
    if k <= 0 or k >= n:
        return torch.full_like(score, k > 0, dtype=torch.bool), None
    if score.device.type != "cpu":
        # one topk, no host sync: the launch queue keeps running (kthvalue's count check
        # and the warm start each need the host to read a result)
        index = score.topk(k, dim=1, largest=False).indices
        return torch.zeros(score.shape, dtype=torch.bool, device=score.device).scatter_(1, index, True), None
    if threshold is None or threshold.shape != (rows, 1):
        return _split_rows(score, k)
    mask = score < threshold
    # bool sums are slow on CPU; a uint8 view with an int32 accumulator is not
    shift = mask.view(torch.uint8).sum(dim=1, dtype=torch.int32) - k
    stale = shift.nonzero().squeeze(1)
    if stale.numel() == 0:
        return mask, threshold
    threshold = threshold.clone()
    width = min(width, n)
    near = stale[shift[stale].abs() <= width]
    far = stale[shift[stale].abs() > width]
    if near.numel():
        sub = _nudge_rows(score[near], mask[near], shift[near], width)
        mask[near], threshold[near] = sub, _boundary(score[near], sub)
    if far.numel():
        mask[far], threshold[far] = _split_rows(score[far], k)
    return mask, threshold


def targeted_weight_mask(weight: torch.Tensor, gamma: float, score: torch.Tensor = None) -> torch.Tensor:
    """Weight TD: per unit, the bottom ``gamma`` fraction of its incoming weights by |w|.

    ``score`` replaces |w| (same shape) for the random-targeted control.
    """
    return targeted_weight_mask_warm(weight, gamma, score)[0]


def targeted_weight_mask_warm(weight: torch.Tensor, gamma: float, score: torch.Tensor = None,
                              threshold: torch.Tensor = None):
    """``targeted_weight_mask`` plus the threshold to warm-start the next call with."""
    score = weight.detach().abs() if score is None else score
    flat = score.reshape(score.shape[0], -1)
    mask, threshold = bottom_k_rows_warm(flat, targeted_count(gamma, flat.shape[1]), threshold)
    return mask.view(weight.shape), threshold


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
