"""Sparsity patterns: unstructured, or N:M (in each group of M consecutive input weights of a
row, exactly N are kept). 2:4 is the pattern NVIDIA GPUs run faster (semi-structured sparse).

One parser and one mask function serve pruning (``prune``, ``pruners``) and targeted dropout
(``--td-pattern``), so a pattern means the same thing everywhere.
"""
import torch

UNSTRUCTURED = "unstructured"


def parse_pattern(text):
    """'unstructured' -> None; 'N:M' -> (N, M) with 0 <= N < M. ValueError otherwise."""
    if text is None or text == UNSTRUCTURED:
        return None
    if isinstance(text, tuple):
        n, m = text
    else:
        try:
            n, m = (int(part) for part in str(text).split(":"))
        except ValueError:
            raise ValueError(f"pattern must be 'unstructured' or N:M such as 2:4, got {text!r}") from None
    if not 0 <= n < m:
        raise ValueError(f"pattern N:M needs 0 <= N < M, got {n}:{m}")
    return n, m


def pattern_sparsity(pattern) -> float:
    """The fraction an N:M pattern prunes, (M-N)/M; 0 for unstructured (None)."""
    if pattern is None:
        return 0.0
    n, m = pattern
    return (m - n) / m


def pattern_name(pattern) -> str:
    return UNSTRUCTURED if pattern is None else f"{pattern[0]}:{pattern[1]}"


def check_pattern_shape(shape, pattern, name: str = "weight") -> None:
    """An N:M pattern needs the input size (all axes but the first) to be a multiple of M."""
    if pattern is None:
        return
    n_in = 1
    for size in shape[1:]:
        n_in *= size
    if n_in % pattern[1]:
        raise ValueError(f"{name} has {n_in} inputs per row, not a multiple of M={pattern[1]} "
                         f"(pattern {pattern_name(pattern)})")


def nm_mask(score: torch.Tensor, pattern) -> torch.Tensor:
    """Boolean mask of the M-N smallest scores in each group of M consecutive inputs of a row.

    ``score`` has the weight's shape (rows first); groups run along the flattened input axis.
    Exactly M-N entries per group are selected (ties broken by topk's order, never more).
    """
    n, m = pattern
    check_pattern_shape(score.shape, pattern)
    groups = score.reshape(score.shape[0], -1, m)
    drop = m - n
    if drop == 0:
        return torch.zeros(score.shape, dtype=torch.bool, device=score.device)
    index = groups.topk(drop, dim=-1, largest=False).indices
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=score.device).scatter_(-1, index, True)
    return mask.view(score.shape)


def follows_pattern(weight: torch.Tensor, pattern) -> bool:
    """True if every group of M consecutive inputs of every row has at most N non-zeros."""
    if pattern is None:
        return True
    n, m = pattern
    groups = weight.reshape(weight.shape[0], -1, m)
    return bool(((groups != 0).sum(dim=-1) <= n).all())
