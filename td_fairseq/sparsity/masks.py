"""Pure mask functions: which weights are targeted, and which of those are dropped.

PyTorch layout: a unit is one output feature, i.e. a row of ``nn.Linear.weight``
(``[out, in]``) and the first axis of a conv weight. Every function here is pure:
it reads tensors and returns boolean masks, never touching the weights.
"""
import math

import torch

from .patterns import check_pattern_shape, nm_mask


def targeted_count(gamma: float, n: int) -> int:
    """floor(gamma * n), the official code's ``int(gamma * n)``.

    The epsilon keeps products such as 0.29 * 100 = 28.999... from losing one.
    """
    return min(n, max(0, math.floor(gamma * n + 1e-6)))


def bottom_k_rows(score: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly the ``k`` smallest entries of each row of a 2-D score."""
    return bottom_k_rows_warm(score, k)[0]


def _split_rows(score: torch.Tensor, k: int, big: float):
    """Bottom-k mask of each row, and a per-row threshold strictly between the k-th and
    (k+1)-th smallest values (NaN where they tie, so that a later warm call recomputes).

    kthvalue is O(n) per row; ties at the k-th value (zeros of a pruned matrix) would let
    ``<=`` select more than k, so only then do we pay for topk's exact indices.
    """
    kth = score.kthvalue(k, dim=1, keepdim=True).values
    mask = score <= kth
    if int(mask.view(torch.uint8).sum(dtype=torch.int32)) != score.shape[0] * k:
        index = score.topk(k, dim=1, largest=False).indices
        mask = torch.zeros_like(mask).scatter_(1, index, True)
    return mask, _boundary(score, mask, big)


def _spread(score: torch.Tensor) -> float:
    """A constant larger than twice the range of the (finite) scores: adding it to a score
    moves it past every other score, and multiplying it by a 0/1 mask stays exact.

    Masks below are applied by this arithmetic, not by ``masked_fill`` or ``where``: on CPU
    those branch on every element, and a random mask mispredicts half the branches (about
    ten times slower than a multiply-add here)."""
    return 2.0 * float(score.amax() - score.amin()) + 1.0


def _boundary(score: torch.Tensor, mask: torch.Tensor, big: float) -> torch.Tensor:
    """Per-row midpoint between the largest selected and the smallest unselected score."""
    selected = mask.to(score.dtype)
    inside = (score - (1 - selected) * big).amax(dim=1, keepdim=True)
    outside = (score + selected * big).amin(dim=1, keepdim=True)
    return torch.where(inside < outside, (inside + outside) / 2, float("nan"))


def _nudge_rows(score: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor, width: int, big: float):
    """Fix rows whose count is off by ``shift`` (0 < |shift| <= width): drop the largest
    selected entries, or add the smallest unselected ones; returns (mask, threshold).

    ``mask`` is ``score < old threshold``, so every selected entry is below every unselected
    one: the new boundary lies between the |shift|-th and (|shift|+1)-th candidates, which
    one topk of width + 1 already returns. A few cheap passes instead of a selection."""
    too_many = (shift > 0)[:, None]
    sign = 1 - 2 * too_many.to(score.dtype)  # too many: the largest selected, i.e. smallest of -score
    candidate = mask == too_many
    ranked = score * sign + (~candidate).to(score.dtype) * big
    values, index = ranked.topk(width + 1, dim=1, largest=False)
    count = shift.abs()[:, None].long()
    flip = torch.arange(width + 1, device=score.device) < count
    mask = mask.scatter(1, index, mask.gather(1, index) ^ flip)
    last, next_ = values.gather(1, count - 1) * sign, values.gather(1, count) * sign
    lower, upper = torch.minimum(last, next_), torch.maximum(last, next_)
    return mask, torch.where(lower < upper, (lower + upper) / 2, float("nan"))


def bottom_k_rows_warm(score: torch.Tensor, k: int, threshold: torch.Tensor = None, width: int = 4):
    """(mask of exactly the k smallest entries per row, threshold to pass next time).

    Weights move little between updates, so last update's per-row threshold usually still
    has exactly k entries below it; then ``score < threshold`` *is* the bottom-k set (each
    entry below it is smaller than every entry above). Rows off by at most ``width`` are
    nudged into place; only rows off by more go through kthvalue again. The result is
    exact either way. The count check needs a host sync, so accelerators take one topk
    instead (exact, ties broken by topk's order) and no threshold. Scores must be finite.
    """
    rows, n = score.shape
    if k <= 0 or k >= n:
        return torch.full_like(score, k > 0, dtype=torch.bool), None
    if score.device.type != "cpu":
        # one topk, no host sync: the launch queue keeps running (kthvalue's count check
        # and the warm start each need the host to read a result)
        index = score.topk(k, dim=1, largest=False).indices
        return torch.zeros(score.shape, dtype=torch.bool, device=score.device).scatter_(1, index, True), None
    if score.dtype != torch.float64:
        score = score.float()  # exact for half scores (same order), and room for _spread's constant
    if threshold is None or threshold.shape != (rows, 1):
        return _split_rows(score, k, _spread(score))
    mask = score < threshold
    # bool sums are slow on CPU; a uint8 view with an int32 accumulator is not
    shift = mask.view(torch.uint8).sum(dim=1, dtype=torch.int32) - k
    stale = shift.nonzero().squeeze(1)
    if stale.numel() == 0:
        return mask, threshold
    big = _spread(score)
    threshold = threshold.clone()
    width = min(width, n - 1)
    near = stale[shift[stale].abs() <= width]
    far = stale[shift[stale].abs() > width]
    if near.numel():
        mask[near], threshold[near] = _nudge_rows(score[near], mask[near], shift[near], width, big)
    if far.numel():
        mask[far], threshold[far] = _split_rows(score[far], k, big)
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


def _kth_smallest_of_four(groups: torch.Tensor, j: int) -> torch.Tensor:
    """The j-th smallest (j = 1, 2, 3) of each group of 4 on the last axis: a min/max
    network of a few elementwise passes, where topk or sort over groups of four costs
    a call per group."""
    a, b, c, d = groups.unbind(-1)
    low_ab, high_ab = torch.minimum(a, b), torch.maximum(a, b)
    low_cd, high_cd = torch.minimum(c, d), torch.maximum(c, d)
    if j == 1:
        return torch.minimum(low_ab, low_cd)
    second_low, second_high = torch.maximum(low_ab, low_cd), torch.minimum(high_ab, high_cd)
    return torch.minimum(second_low, second_high) if j == 2 else torch.maximum(second_low, second_high)


def targeted_pattern_mask(weight: torch.Tensor, pattern, score: torch.Tensor = None) -> torch.Tensor:
    """N:M weight TD: in each group of M consecutive inputs of a unit, the M-N smallest |w|.

    Exactly M-N per group, so removing the targeted set leaves a weight that follows the
    pattern (2:4 runs faster on NVIDIA GPUs). ``score`` replaces |w| for the random-targeted
    control. Groups of 4 (2:4, 1:4, 3:4) take a min/max network for the (M-N)-th smallest,
    then ``<=``; ties at it are broken by position in the group (``patterns.nm_mask``, used
    for other M, breaks them by topk's order). On CPU the tie repair runs only when a count
    shows a tie; accelerators always run it, to avoid a host sync.
    """
    score = weight.detach().abs() if score is None else score
    n, m = pattern
    drop = m - n
    if m != 4 or drop in (0, m):
        return nm_mask(score, pattern)
    check_pattern_shape(score.shape, pattern)
    groups = score.reshape(score.shape[0], -1, m)
    kth = _kth_smallest_of_four(groups, drop).unsqueeze(-1)
    mask = groups <= kth
    if score.device.type == "cpu" and int(mask.view(torch.uint8).sum(dtype=torch.int32)) == drop * kth.numel():
        return mask.view(score.shape)
    below, tied = groups < kth, groups == kth
    need = drop - below.view(torch.uint8).sum(-1, keepdim=True, dtype=torch.int32)
    first_tied = tied & (tied.view(torch.uint8).cumsum(-1, dtype=torch.int32) <= need)
    return (below | first_tied).view(score.shape)


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
