import torch
from torch.nn import functional as F

from td_fairseq.vision import (FlatLoss, delta_e, hessian, mlp_selector, one_hidden_layer_mlp,
                               quadratic_delta_e, weighted_hessian)
from td_fairseq.vision.dependence import analyse
from td_fairseq.vision.data import Dataset


def tiny_problem(seed=0):
    torch.manual_seed(seed)
    model = one_hidden_layer_mlp(in_features=4, hidden=3, num_classes=3).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, x, y


def brute_force_loss(model, x, y, hidden_weight):
    """E written out by hand with the given hidden-layer weights: no helper involved."""
    h = torch.relu(x @ hidden_weight.T + model.hidden.bias)
    return float(F.cross_entropy(h @ model.out.weight.T + model.out.bias, y).detach())


def test_delta_e_matches_brute_force():
    model, x, y = tiny_problem()
    w = model.hidden.weight.detach()
    removed = torch.zeros_like(w, dtype=torch.bool)
    removed[0, 1] = removed[2, 3] = removed[1, 0] = True
    expected = abs(brute_force_loss(model, x, y, w.masked_fill(removed, 0)) - brute_force_loss(model, x, y, w))
    assert expected > 1e-4  # the removal matters, so the comparison is not 0 == 0
    loss = FlatLoss(model, x, y, ["hidden.weight"])
    assert abs(delta_e(loss, removed.flatten()) - expected) < 1e-10


def test_hessian_matches_finite_differences():
    model, x, y = tiny_problem(1)
    loss = FlatLoss(model, x, y, ["hidden.weight", "out.weight"])
    theta = loss.theta.clone().requires_grad_(True)

    def grad_at(t):
        t = t.detach().requires_grad_(True)
        return torch.autograd.grad(loss(t), t)[0]

    eps, n = 1e-5, len(theta)
    numeric = torch.stack([(grad_at(theta + eps * e) - grad_at(theta - eps * e)) / (2 * eps)
                           for e in torch.eye(n, dtype=torch.float64)])
    exact = hessian(loss)
    assert exact.shape == (n, n)
    assert torch.allclose(exact, numeric, atol=1e-6)
    assert torch.allclose(exact, exact.T, atol=1e-12)


def test_quadratic_form_and_its_matrix():
    model, x, y = tiny_problem(2)
    loss = FlatLoss(model, x, y, ["hidden.weight"])
    removed = torch.zeros(12, dtype=torch.bool)
    removed[[1, 4, 5, 10]] = True
    h = hessian(loss)
    d = loss.theta * removed
    by_hand = 0.5 * sum(float(d[i] * h[i, j] * d[j]) for i in range(12) for j in range(12))
    assert abs(quadratic_delta_e(loss, removed, h) - by_hand) < 1e-12
    assert abs(quadratic_delta_e(loss, removed) - by_hand) < 1e-10  # Hessian-vector product path
    matrix, kept = weighted_hessian(loss.theta, h, removed)
    assert kept == 8
    assert abs(0.5 * float(matrix[kept:, kept:].sum()) - by_hand) < 1e-12
    theta = loss.theta
    order = [0, 2, 3, 6, 7, 8, 9, 11, 1, 4, 5, 10]  # important first, then the removed
    assert torch.allclose(matrix[0, 8], theta[0] * h[0, 1] * theta[1])
    assert torch.allclose(matrix, (theta[:, None] * h * theta[None, :])[order][:, order])


def test_second_order_expansion_matches_the_exact_change():
    # E(theta - d) - E(theta) = -g.d + 1/2 d'Hd + O(|d|^3): with the removed weights
    # shrunk so that d is small (no ReLU changes sign: E is smooth along d), the
    # quadratic term must account for what -g.d misses.
    model, x, y = tiny_problem(3)
    removed = torch.zeros(12, dtype=torch.bool)
    removed[[0, 5, 7]] = True
    with torch.no_grad():
        model.hidden.weight.view(-1)[removed] *= 0.01
    loss = FlatLoss(model, x, y, ["hidden.weight"])
    theta = loss.theta.clone().requires_grad_(True)
    gradient = torch.autograd.grad(loss(theta), theta)[0]
    d = loss.theta * removed
    with torch.no_grad():
        exact = float(loss(loss.theta - d) - loss(loss.theta))
    first_order = -float(gradient @ d)
    second_order = quadratic_delta_e(loss, removed)
    assert abs(exact - first_order) > 0.5 * abs(second_order) > 0
    assert abs(exact - first_order - second_order) < 0.02 * abs(second_order)


def test_analyse_reports_pruning_on_digits_like_data():
    torch.manual_seed(0)
    x = torch.randn(60, 1, 2, 2)
    y = (x.flatten(1).sum(1) > 0).long()
    data = Dataset("toy", x, y, x, y, 2, augment=False)
    model = one_hidden_layer_mlp(4, 3, 2)
    result = analyse(model, data, mlp_selector, fraction=0.5)
    assert result["weights"] == 12 and result["removed_weights"] == 6  # 2 of 4 per unit
    assert result["kept"] == 6 and result["matrix"].shape == (12, 12)
    assert abs(result["quadratic_delta_e"] - 0.5 * result["block_sums"]["removed_removed"]) < 1e-10
