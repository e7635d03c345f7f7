"""Schedules as pure functions of the update number (like nanoGPT's ``get_lr``)."""


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def td_rates(step: int, gamma: float, alpha: float, ramp_updates: int = 0):
    """(gamma_t, alpha_t) at update ``step``.

    ``ramp_updates`` R = 0 keeps both constant. Otherwise the official ramp: gamma reaches
    95 % of its value over R updates and the rest over the next R; alpha grows linearly
    over 2R updates.
    """
    if ramp_updates <= 0:
        return gamma, alpha
    r = float(ramp_updates)
    gamma_t = 0.95 * gamma * min(1.0, step / r) + 0.05 * gamma * _clip01((step - r) / r)
    alpha_t = alpha * min(1.0, step / (2 * r))
    return gamma_t, alpha_t


def cubic_sparsity(step: int, final: float, initial: float = 0.0, start: int = 0,
                   steps: int = 1, interval: int = 1) -> float:
    """Zhu and Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3.

    ``steps`` is n, ``interval`` is dt: the value changes only every dt updates so that
    masks stay frozen between mask updates.
    """
    if step < start:
        return initial
    span = steps * interval
    t = min(span, ((step - start) // interval) * interval)
    return final + (initial - final) * (1.0 - t / span) ** 3
