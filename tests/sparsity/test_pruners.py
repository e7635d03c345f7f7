"""SparseGPT and Wanda as pure functions, checked against brute-force least squares.

The brute force never uses the inverse Hessian or a Cholesky factor: it solves the
reconstruction problem min ||(W - W') X||^2 by least squares on X itself.
"""
import pytest
import torch

from td_fairseq.sparsity import PruneRanking, targeted_count
from td_fairseq.sparsity.patterns import follows_pattern, nm_mask
from td_fairseq.sparsity.pruners import check_level, wanda_mask, wanda_scores
from td_fairseq.sparsity.sparsegpt import sparsegpt_prune

D = torch.float64


def correlated_inputs(features, tokens, seed=0, dtype=D):
    """X [features, tokens] with strongly correlated features of unequal scale."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g, dtype=dtype) + 2 * torch.eye(features, dtype=dtype)
    x = mix @ torch.randn(features, tokens, generator=g, dtype=dtype)
    return x * torch.exp(torch.randn(features, 1, generator=g, dtype=dtype))


def error(w, new, x):
    return float(((w - new) @ x).square().sum())


def joint_least_squares(w, x, mask):
    """The optimal row update for a fixed mask: kept weights re-fitted to reproduce w X."""
    out = torch.zeros_like(w)
    for r in range(w.shape[0]):
        keep = ~mask[r]
        out[r, keep] = torch.linalg.lstsq(x[keep].T, (w[r] @ x)[:, None]).solution[:, 0]
    return out


def sequential_least_squares(w, x, mask):
    """The paper's iterative view: columns in order; pruning column j zeroes it and re-fits
    only the columns right of j (those left of j are frozen) to reproduce the original w X."""
    out = w.clone()
    for r in range(w.shape[0]):
        for j in range(w.shape[1]):
            if mask[r, j]:
                out[r, j] = 0
                if j + 1 < w.shape[1]:
                    target = (w[r] @ x) - out[r, : j + 1] @ x[: j + 1]
                    out[r, j + 1:] = torch.linalg.lstsq(x[j + 1:].T, target[:, None]).solution[:, 0]
    return out


def layer(rows=3, features=8, tokens=200, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    x = correlated_inputs(features, tokens, seed)
    return torch.randn(rows, features, generator=g, dtype=D), x


@pytest.mark.parametrize("blocksize", [8, 4, 2])
def test_fixed_mask_with_pruned_columns_first_is_the_least_squares_optimum(blocksize):
    w, x = layer()
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[0, :1], mask[1, :3], mask[2, :2] = True, True, True
    new, pruned = sparsegpt_prune(w, x @ x.T, mask=mask, blocksize=blocksize, percdamp=0)
    best = joint_least_squares(w, x, mask)
    assert torch.equal(pruned, mask) and (new[mask] == 0).all()
    assert torch.allclose(new, best, atol=1e-8)
    assert error(w, new, x) == pytest.approx(error(w, best, x), rel=1e-5)


@pytest.mark.parametrize("blocksize", [8, 3])
def test_fixed_mask_anywhere_is_the_sequential_optimum_not_the_joint_one(blocksize):
    w, x = layer(seed=1)
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[0, [2, 5]], mask[1, [7]], mask[2, [1, 3, 4, 6]] = True, True, True
    new, _ = sparsegpt_prune(w, x @ x.T, mask=mask, blocksize=blocksize, percdamp=0)
    sequential = sequential_least_squares(w, x, mask)
    assert torch.allclose(new, sequential, atol=1e-8)
    assert error(w, new, x) == pytest.approx(error(w, sequential, x), rel=1e-5)
    # columns left of a pruned one are frozen: the joint optimum is better (the approximation)
    assert error(w, joint_least_squares(w, x, mask), x) < 0.99 * error(w, new, x)


def test_one_weight_per_row_is_the_brute_force_best_removal():
    w, x = layer(rows=4, seed=2)
    new, pruned = sparsegpt_prune(w, x @ x.T, sparsity=1 / 8, blocksize=4, percdamp=0)
    assert (pruned.sum(1) == 1).all()
    for r in range(w.shape[0]):
        costs = []
        for q in range(w.shape[1]):
            only = torch.zeros_like(w[r:r + 1], dtype=torch.bool)
            only[0, q] = True
            costs.append(error(w[r:r + 1], sequential_least_squares(w[r:r + 1], x, only), x))
        assert int(pruned[r].nonzero()) == min(range(len(costs)), key=costs.__getitem__)
        assert error(w[r:r + 1], new[r:r + 1], x) == pytest.approx(min(costs), rel=1e-5)


def magnitude(w, level, pattern=None):
    if pattern is not None:
        return w.masked_fill(nm_mask(w.abs(), pattern), 0)
    return PruneRanking({"w": w}).prune({"w": w}, level)["w"]


def random_layer(seed=3, rows=16, features=64, tokens=512):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, features, generator=g), correlated_inputs(features, tokens, seed, torch.float32)


@pytest.mark.parametrize("pattern", [None, (2, 4)])
@pytest.mark.parametrize("groups", ["row", "block"])
def test_sparsegpt_reconstructs_better_than_magnitude(pattern, groups):
    w, x = random_layer()
    new, pruned = sparsegpt_prune(w, x @ x.T, 0.5, pattern, groups, blocksize=32)
    assert error(w, new, x) < 0.7 * error(w, magnitude(w, 0.5, pattern), x)
    assert int(pruned.sum()) == w.numel() // 2 and (new[pruned] == 0).all()


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_wanda_reconstructs_better_than_magnitude_with_unequal_input_scales(pattern):
    w, x = random_layer(seed=4)
    new = w.masked_fill(wanda_mask(w, x.square().sum(1), 0.5, pattern), 0)
    assert error(w, new, x) < 0.7 * error(w, magnitude(w, 0.5, pattern), x)


def test_wanda_mask_is_the_lowest_scores_of_each_row():
    g = torch.Generator().manual_seed(5)
    w, norms = torch.randn(5, 12, generator=g), torch.rand(12, generator=g) * 4
    mask = wanda_mask(w, norms, 0.6)
    score = w.abs() * norms.sqrt()
    assert torch.equal(wanda_scores(w, norms), score)
    k = targeted_count(0.6, 12)
    for row, pruned in zip(score, mask):
        assert int(pruned.sum()) == k and row[pruned].max() < row[~pruned].min()
    # equal input norms: Wanda is magnitude
    assert torch.equal(wanda_mask(w, torch.ones(12), 0.5), magnitude(w, 0.5) == 0)
    nm = wanda_mask(w, norms, 0.5, (2, 4))
    assert follows_pattern(w.masked_fill(nm, 0), (2, 4)) and int(nm.sum()) == w.numel() // 2


@pytest.mark.parametrize("level", [0.3, 0.5, 0.77])
def test_row_groups_prune_exactly_floor_s_in_per_row_and_update_the_rest(level):
    w, x = random_layer(seed=6, rows=8, features=40)
    x = x * 1e-3  # small inputs: a dead input's stand-in H_jj = 1 alone would not make it cheap
    x[7] = 0  # a dead input: pruned first, at no cost
    new, pruned = sparsegpt_prune(w, x @ x.T, level, mask_groups="row", blocksize=16)
    assert (pruned.sum(1) == targeted_count(level, 40)).all()
    assert pruned[:, 7].all()
    assert torch.equal(new == 0, pruned)
    assert not torch.allclose(new[~pruned], w[~pruned])  # weights are updated, not only masked


def test_block_groups_prune_floor_s_of_each_block():
    w, x = random_layer(seed=7, rows=6, features=40)
    new, pruned = sparsegpt_prune(w, x @ x.T, 0.45, mask_groups="block", blocksize=16)
    for start, width in ((0, 16), (16, 16), (32, 8)):
        assert int(pruned[:, start:start + width].sum()) == targeted_count(0.45, 6 * width)
    assert len(set(pruned.sum(1).tolist())) > 1  # the paper's groups: rows differ


@pytest.mark.parametrize("groups", ["row", "block"])
@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (4, 8)])
def test_nm_pattern_on_every_row(groups, pattern):
    w, x = random_layer(seed=8, rows=8, features=32)
    new, pruned = sparsegpt_prune(w, x @ x.T, pattern=pattern, mask_groups=groups, blocksize=8)
    assert follows_pattern(new, pattern)
    n, m = pattern
    assert (pruned.view(8, -1, m).sum(-1) == m - n).all()
    assert not torch.allclose(new[~pruned], w[~pruned])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtype_kept_and_input_untouched(dtype):
    w, x = random_layer(seed=9, rows=4, features=16)
    w = w.to(dtype)
    before = w.clone()
    new, _ = sparsegpt_prune(w, x @ x.T, 0.5)
    assert new.dtype == dtype and torch.equal(w, before)


def test_bad_arguments():
    w, x = random_layer(rows=2, features=12)
    with pytest.raises(ValueError, match="mask_groups"):
        sparsegpt_prune(w, x @ x.T, 0.5, mask_groups="layer")
    with pytest.raises(ValueError, match="multiple of M"):
        sparsegpt_prune(w, x @ x.T, pattern=(2, 4), blocksize=6)
    with pytest.raises(ValueError, match="positive definite"):
        sparsegpt_prune(w, torch.ones(12, 12) - 2 * torch.eye(12), 0.5, percdamp=0)
    assert check_level(None, "2:4") == (0.5, (2, 4))
    assert check_level(0, "2:4") == (0.0, None)
    assert check_level(0.7, "unstructured") == (0.7, None)
    with pytest.raises(ValueError, match="prunes 0.5"):
        check_level(0.6, "2:4")
    with pytest.raises(ValueError):
        check_level(1.0, None)
