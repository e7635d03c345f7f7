import pytest
import torch

from td_fairseq.sparsity import (bernoulli_mask, bottom_k_rows_warm, dropped_mask, follows_pattern, targeted_count,
                                 targeted_unit_mask, targeted_weight_mask, targeted_weight_mask_warm)
from td_fairseq.sparsity.masks import targeted_pattern_mask
from td_fairseq.sparsity.patterns import nm_mask


def reference_bottom(score, k):
    """Bottom-k by a full sort: the slow, obvious definition."""
    flat = score.reshape(score.shape[0], -1)
    index = flat.argsort(dim=1, stable=True)[:, :k]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, index, True).view(score.shape)


@pytest.mark.parametrize("shape", [(16, 40), (7, 3), (32, 8, 3, 3), (5, 256)])
@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
def test_weight_mask_is_exactly_bottom_gamma_per_unit(shape, gamma):
    torch.manual_seed(0)
    w = torch.randn(shape)
    mask = targeted_weight_mask(w, gamma)
    n_in = w[0].numel()
    k = targeted_count(gamma, n_in)
    assert mask.shape == w.shape
    assert (mask.reshape(shape[0], -1).sum(1) == k).all()
    assert torch.equal(mask, reference_bottom(w.abs(), k))


def test_targeted_count_floors_like_the_official_code():
    assert targeted_count(0.75, 256) == 192
    assert targeted_count(0.9, 256) == 230
    assert targeted_count(0.29, 100) == 29  # 0.29 * 100 is 28.999... in floating point
    assert targeted_count(0.1, 5) == 0      # tiny layers: nothing targeted
    assert targeted_count(1.0, 7) == 7


def test_ties_still_give_exact_counts():
    w = torch.zeros(4, 10)
    w[:, 7:] = 1.0
    mask = targeted_weight_mask(w, 0.5)
    assert (mask.sum(1) == 5).all()
    assert not mask[:, 7:].any()  # the large weights are never among the targeted


def test_warm_start_matches_fresh_selection_while_weights_move():
    torch.manual_seed(1)
    w = torch.randn(64, 50)
    threshold = None
    for step in range(120):
        mask, threshold = targeted_weight_mask_warm(w, 0.75, None, threshold)
        assert torch.equal(mask, targeted_weight_mask(w, 0.75)), step
        if step == 60:
            w[:, :20] = 0.0  # a pruned block: ties at the threshold
        w = w + (1e-3 if step % 7 else 5e-2) * torch.randn_like(w)


def test_warm_start_handles_ties_created_after_warmup():
    torch.manual_seed(2)
    w = torch.randn(8, 20)
    _, threshold = bottom_k_rows_warm(w.abs(), 10)
    w[:, :15] = 0.0
    mask, _ = bottom_k_rows_warm(w.abs(), 10, threshold)
    assert (mask.sum(1) == 10).all() and not mask[:, 15:].any()


def test_unit_mask_targets_lowest_norm_units_whole():
    torch.manual_seed(3)
    w = torch.randn(10, 6, 3, 3)
    mask = targeted_unit_mask(w, 0.3)
    assert mask.shape == (10, 1, 1, 1)
    norms = w.flatten(1).norm(dim=1)
    assert set(mask.flatten().nonzero().flatten().tolist()) == set(norms.argsort()[:3].tolist())


def test_random_score_replaces_magnitude():
    w = torch.randn(4, 10)
    score = torch.arange(40.0).view(4, 10)
    mask = targeted_weight_mask(w, 0.3, score)
    assert mask[:, :3].all() and not mask[:, 3:].any()


def test_bernoulli_mask_rates():
    torch.manual_seed(4)
    assert not bernoulli_mask((100, 100), 0.0).any()
    assert bernoulli_mask((100, 100), 1.0).all()
    for p in (0.01, 0.33, 0.66, 0.99):
        frac = bernoulli_mask((1000, 1000), p).float().mean().item()
        assert abs(frac - p) < 3e-3, (p, frac)


def test_drop_alpha_zero_and_one():
    torch.manual_seed(5)
    targeted = targeted_weight_mask(torch.randn(20, 30), 0.5)
    assert not dropped_mask(targeted, 0.0).any()
    assert torch.equal(dropped_mask(targeted, 1.0), targeted)


def test_dropped_fraction_approaches_gamma_alpha():
    torch.manual_seed(6)
    w = torch.randn(64, 64)
    targeted = targeted_weight_mask(w, 0.75)
    draws = torch.stack([dropped_mask(targeted, 0.66) for _ in range(200)]).float()
    assert abs(draws.mean().item() - 0.75 * 0.66) < 0.005
    assert not draws[:, ~targeted].any()  # only targeted weights are ever dropped
    # fresh every draw: two draws differ
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("shape", [(8, 16), (6, 4, 3, 4), (3, 8)])
@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (3, 8), (0, 4)])
def test_pattern_mask_targets_the_smallest_of_each_group(shape, pattern):
    torch.manual_seed(7)
    w = torch.randn(shape)
    mask = targeted_pattern_mask(w, pattern)
    n, m = pattern
    groups = mask.reshape(shape[0], -1, m)
    assert mask.shape == w.shape and (groups.sum(-1) == m - n).all()
    size = w.abs().reshape(shape[0], -1, m)
    largest_targeted = size.masked_fill(~groups, float("-inf")).amax(-1)
    smallest_kept = size.masked_fill(groups, float("inf")).amin(-1)
    assert (largest_targeted <= smallest_kept).all()
    assert follows_pattern(w.masked_fill(mask, 0), pattern)


def test_pattern_mask_exact_under_ties_and_with_a_random_score():
    zeros = torch.zeros(4, 8)
    assert (targeted_pattern_mask(zeros, (2, 4)).view(4, 2, 4).sum(-1) == 2).all()
    score = torch.arange(32.0).view(4, 8)
    mask = targeted_pattern_mask(torch.randn(4, 8), (1, 4), score)  # score ranks, not |w|
    assert mask.view(4, 2, 4)[..., :3].all() and not mask.view(4, 2, 4)[..., 3].any()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_pattern_mask_of_four_matches_the_shared_nm_mask(n):
    torch.manual_seed(8)
    w = torch.randn(64, 32)
    assert torch.equal(targeted_pattern_mask(w, (n, 4)), nm_mask(w.abs(), (n, 4)))


def test_pattern_mask_of_four_breaks_ties_by_position():
    score = torch.tensor([[1.0, 1.0, 1.0, 2.0, 0.0, 5.0, 0.0, 0.0]])
    mask = targeted_pattern_mask(torch.zeros(1, 8), (2, 4), score)
    assert mask.tolist() == [[True, True, False, False, True, False, True, False]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_warm_start_on_half_weights_stays_exact(dtype):
    torch.manual_seed(9)
    w = torch.randn(32, 64).to(dtype)
    threshold = None
    for step in range(30):
        mask, threshold = targeted_weight_mask_warm(w, 0.75, None, threshold)
        size = w.float().abs()
        assert (mask.sum(1) == 48).all(), step
        largest_in = size.masked_fill(~mask, float("-inf")).amax(1)
        smallest_out = size.masked_fill(mask, float("inf")).amin(1)
        assert (largest_in <= smallest_out).all(), step
        w = (w.float() + 2e-2 * torch.randn_like(w.float())).to(dtype)
