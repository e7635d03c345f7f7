import pytest

from td_fairseq.sparsity import cubic_sparsity, td_rates


def test_constant_schedule():
    assert td_rates(0, 0.75, 0.66) == (0.75, 0.66)
    assert td_rates(10**6, 0.75, 0.66, 0) == (0.75, 0.66)


@pytest.mark.parametrize("step, gamma_t, alpha_t", [
    (0, 0.0, 0.0),
    (50, 0.95 * 0.9 * 0.5, 0.99 * 0.25),
    (100, 0.95 * 0.9, 0.99 * 0.5),
    (150, 0.95 * 0.9 + 0.05 * 0.9 * 0.5, 0.99 * 0.75),
    (200, 0.9, 0.99),
    (10_000, 0.9, 0.99),
])
def test_ramp_values(step, gamma_t, alpha_t):
    g, a = td_rates(step, 0.9, 0.99, ramp_updates=100)
    assert g == pytest.approx(gamma_t) and a == pytest.approx(alpha_t)


def test_cubic_schedule():
    kw = dict(final=0.9, initial=0.0, start=100, steps=10, interval=10)
    assert cubic_sparsity(0, **kw) == 0.0
    assert cubic_sparsity(100, **kw) == 0.0
    assert cubic_sparsity(150, **kw) == pytest.approx(0.9 + (0 - 0.9) * 0.5 ** 3)
    # frozen between mask updates
    assert cubic_sparsity(151, **kw) == cubic_sparsity(159, **kw) == cubic_sparsity(150, **kw)
    assert cubic_sparsity(200, **kw) == pytest.approx(0.9)
    assert cubic_sparsity(10**6, **kw) == pytest.approx(0.9)
