import pytest
import torch

from td_fairseq.sparsity import PruneRanking, sparsity_report, targeted_count


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(6, 40, generator=g), "b": torch.randn(10, 7, generator=g) * 3,
            "c": torch.randn(4, 3, 2, 2, generator=g)}


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_unit_scope_prunes_bottom_of_each_unit(s):
    t = tensors()
    pruned = PruneRanking(t, "weight", "unit").prune(t, s)
    for name, w in t.items():
        flat, out = w.reshape(w.shape[0], -1), pruned[name].reshape(w.shape[0], -1)
        k = targeted_count(s, flat.shape[1])
        assert ((out == 0).sum(1) == k).all()
        for row, prow in zip(flat.abs(), out):
            kept, gone = row[prow != 0], row[prow == 0]
            assert gone.numel() == 0 or kept.numel() == 0 or gone.max() <= kept.min()


def test_layer_scope_counts():
    t = tensors()
    pruned = PruneRanking(t, "weight", "layer").prune(t, 0.6)
    for name, w in t.items():
        assert (pruned[name] == 0).sum() == targeted_count(0.6, w.numel())


def test_global_scope_uses_one_threshold():
    t = tensors()
    pruned = PruneRanking(t, "weight", "global").prune(t, 0.5)
    total = sum(w.numel() for w in t.values())
    assert sum(int((p == 0).sum()) for p in pruned.values()) == targeted_count(0.5, total)
    kept = torch.cat([t[n][pruned[n] != 0].abs() for n in t])
    gone = torch.cat([t[n][pruned[n] == 0].abs() for n in t])
    assert gone.max() <= kept.min()
    # b is scaled up, so a global threshold prunes it less than a's share
    assert (pruned["b"] == 0).float().mean() < (pruned["a"] == 0).float().mean()


def test_unit_mode_zeros_whole_rows_by_l2_norm():
    t = tensors()
    pruned = PruneRanking(t, "unit").prune(t, 0.5)
    for name, w in t.items():
        rows = w.reshape(w.shape[0], -1)
        zero_rows = (pruned[name].reshape(w.shape[0], -1) == 0).all(dim=1)
        expected = rows.norm(dim=1).argsort()[: targeted_count(0.5, w.shape[0])]
        assert set(zero_rows.nonzero().flatten().tolist()) == set(expected.tolist())


def test_inputs_untouched_and_scores_respected():
    t = tensors()
    before = {k: v.clone() for k, v in t.items()}
    scores = {k: torch.arange(v.numel(), dtype=torch.float).view(v.shape) for k, v in t.items()}
    pruned = PruneRanking(t, "weight", "layer", scores=scores).prune(t, 0.25)
    assert all(torch.equal(t[k], before[k]) for k in t)
    flat = pruned["a"].flatten()
    assert (flat[:60] == 0).all() and (flat[60:] != 0).all()


def test_report():
    report = sparsity_report({"x": torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "y": torch.ones(2, 2)})
    assert report["global"] == pytest.approx(3 / 8)
    assert report["per_tensor"] == {"x": 0.75, "y": 0.0}


@pytest.mark.parametrize("kw", [dict(mode="magic"), dict(scope="magic")])
def test_bad_mode_or_scope(kw):
    with pytest.raises(ValueError):
        PruneRanking(tensors(), **kw)


@pytest.mark.parametrize("s", [1.0, -0.1, 1.5])
def test_bad_sparsity(s):
    with pytest.raises(ValueError, match="sparsity"):
        PruneRanking(tensors()).masks(s)
