"""Each method's own pruning score, and PruneRanking with scores for some tensors."""
import torch

from td_fairseq.sparsity import PruneRanking
from td_fairseq.sparsity.scores import own_scores


def test_l0_weight_gates_score_weights_by_log_alpha_and_no_units():
    w, log_alpha = torch.randn(3, 4), torch.randn(3, 4)
    state = {"fc.weight": w, "fc.bias": torch.zeros(3), "fc.td.log_alpha": log_alpha}
    label, score = own_scores(state, "weight")["fc.weight"]
    assert label == "l0_log_alpha" and torch.equal(score, log_alpha)
    assert own_scores(state, "unit") == {}


def test_l0_unit_gates_score_units_only():
    state = {"fc.weight": torch.randn(3, 4), "fc.td.log_alpha": torch.tensor([[0.5], [-2.0], [1.0]])}
    label, score = own_scores(state, "unit")["fc.weight"]
    assert label == "l0_log_alpha" and score.tolist() == [0.5, -2.0, 1.0]
    assert own_scores(state, "weight") == {}  # one gate per row cannot order a row's weights


def test_variational_scores_weights_by_minus_log_alpha_unclamped():
    w = torch.tensor([[1.0, 0.1], [1e-3, 2.0]])
    log_sigma2 = torch.tensor([[0.0, -30.0], [-1.0, 30.0]])
    label, score = own_scores({"weight": w, "td.log_sigma2": log_sigma2}, "weight")["weight"]
    expected = torch.log(w * w + 1e-8) - log_sigma2
    assert label == "vd_neg_log_alpha" and torch.allclose(score, expected)
    assert score.max() > 10 and score.min() < -10  # no clamp: no ties at the ends
    assert own_scores({"weight": w, "td.log_sigma2": log_sigma2}, "unit") == {}


def test_smallify_scores_live_units_by_switch_and_pruned_units_lowest():
    state = {"fc.weight": torch.randn(3, 4), "fc.td.switch": torch.tensor([[-0.8], [0.3], [2.0]]),
             "fc.td.pruned": torch.tensor([[False], [False], [True]])}
    label, score = own_scores(state, "unit")["fc.weight"]
    assert label == "smallify_switch" and score.tolist() == [0.800000011920929, 0.30000001192092896, 0.0]
    assert own_scores(state, "weight") == {}


def test_methods_without_a_score_and_plain_weights_give_nothing():
    state = {"fc.weight": torch.randn(3, 4), "fc.td.mask": torch.zeros(3, 4, dtype=torch.bool),
             "fc.td.random_score": torch.rand(3, 4)}
    assert own_scores(state, "weight") == {} and own_scores(state, "unit") == {}


def test_ranking_uses_given_scores_where_present_and_magnitude_elsewhere():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    ranking = PruneRanking({"a": a, "b": b}, "weight", "unit", scores={"a": -a})
    masks = ranking.masks(0.5)
    assert masks["a"].tolist() == [[False, False, True, True]]  # the largest, by the given score
    assert masks["b"].tolist() == [[True, True, False, False]]


def test_unit_ranking_takes_one_score_per_unit():
    w = torch.tensor([[5.0, 5.0], [0.1, 0.1], [1.0, 1.0]])
    masks = PruneRanking({"w": w}, "unit", scores={"w": torch.tensor([0.0, 9.0, 1.0])}).masks(0.34)
    assert masks["w"].all(dim=1).tolist() == [True, False, False]
