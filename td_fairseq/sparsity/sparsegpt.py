"""SparseGPT (Frantar and Alistarh 2023, Algorithm 1): prune a layer and update its remaining
weights so that the layer's output on calibration inputs changes as little as possible.

Written from the paper. For a row w of W and inputs X ([in, tokens]) the layer-wise error is
(w - w') H (w - w')^T with H = 2 X X^T. Columns are processed left to right; pruning column j
applies the optimal-brain-surgeon (OBS) update restricted to the columns not yet processed,
U_j = {j, ..., in-1}, with the inverse Hessian of that subset. All those inverses are rows of
one upper Cholesky factor of H^-1 (computed once, shared by every row), which is what makes
the method fast. Columns left of j are frozen, so for a fixed mask the result equals the
least-squares optimum only when no kept column precedes a pruned one in the row: in general
it is the sequential optimum (each pruning compensated by the columns to its right), the
paper's approximation. Updates of columns beyond the current block of B columns are batched
(the paper's lazy updates): the same numbers, fewer passes over W.

Which weights are pruned (the saliency is w_j^2 / U_jj^2, the error OBS pays for column j when
it is processed, U the Cholesky factor):

- ``mask_groups="block"``, the paper's and its reference code's: at the start of each block of
  B columns, the floor(s * rows * B) lowest saliencies of the whole rows x B block, using the
  weights as already updated by earlier blocks. Rows end with different counts; the layer
  ends at sum over blocks of floor(s * rows * B_block).
- ``mask_groups="row"``: exactly floor(s * in) pruned in every row (TD's targeted set shape).
  At the start of each block, each row ranks the saliencies of all its columns not yet
  processed and prunes, in this block, those of its k lowest that fall in the block (k: what
  the row still has to prune). The last block then holds exactly the remainder, so every row
  ends at exactly floor(s * in), and the choice still adapts to earlier updates as the
  paper's does.
- N:M (either group): at each group of M columns, per row, the M-N lowest saliencies, with
  the weights as updated by the columns before (the paper's adaptive N:M).

Inputs never seen in calibration (diagonal of H zero) get H_jj = 1, which decouples them, and
saliency 0: removing them costs nothing on the calibration data, so selection takes them
first, and they count towards the exact count (unlike the reference code, which zeroes them
all, beyond the requested sparsity). H's scale does not matter (the dampening is relative),
so callers may pass sum(x x^T) or its mean.
"""
import torch

from .masks import targeted_count
from .patterns import check_pattern_shape, nm_mask

MASK_GROUPS = ("row", "block")


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float = 0.01, dtype=torch.float32):
    """(upper Cholesky factor U of (H + lambda I)^-1, mask of dead inputs).

    lambda = percdamp * mean(diag(H)), after dead inputs' diagonal is set to 1. Row j of U,
    divided by U_jj, is the OBS update of the columns j.. for removing weight j once the
    columns before j are frozen; U_jj^2 = [H_{U_j}^-1]_jj.
    """
    h = hessian.detach().to(dtype).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    h.diagonal().add_(percdamp * h.diagonal().mean())
    lower, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        raise ValueError(f"the calibration Hessian is not positive definite (percdamp={percdamp}); "
                         f"use more calibration tokens or a larger percdamp")
    inverse = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(inverse, upper=True), dead


def _saliency(w: torch.Tensor, diag: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """OBS error of removing each weight when its column is processed; 0 for dead inputs."""
    return (w / diag).square().masked_fill(dead, 0)


def _ranks(score: torch.Tensor) -> torch.Tensor:
    """Rank (0 = smallest) of each entry of each row; ties by position."""
    order = score.argsort(dim=1, stable=True)
    positions = torch.arange(score.shape[1], device=score.device).expand_as(order).contiguous()
    return torch.empty_like(order).scatter_(1, order, positions)


def _block_mask(weight, diag, dead, start, end, sparsity, mask_groups, remaining):
    """Unstructured mask of columns [start, end) chosen at the block's start (see module doc).
    ``remaining`` (row groups) is each row's count still to prune; updated in place."""
    if mask_groups == "block":
        score = _saliency(weight[:, start:end], diag[start:end], dead[start:end]).flatten()
        k = targeted_count(sparsity, score.numel())
        mask = torch.zeros_like(score, dtype=torch.bool)
        mask[score.topk(k, largest=False).indices] = True
        return mask.view(weight.shape[0], end - start)
    ranks = _ranks(_saliency(weight[:, start:], diag[start:], dead[start:]))
    mask = ranks[:, : end - start] < remaining[:, None]
    remaining -= mask.sum(dim=1)
    return mask


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.0, pattern=None,
                    mask_groups: str = "row", mask: torch.Tensor = None, blocksize: int = 128,
                    percdamp: float = 0.01):
    """(new weight, bool mask of the pruned entries) for a 2-D ``weight`` [out, in].

    ``hessian`` [in, in]: X X^T up to scale, X the layer's calibration inputs. ``pattern``
    (N, M) replaces ``sparsity`` by N:M. A given ``mask`` fixes which entries are pruned and
    only the OBS update runs. Math in float32 (float64 for float64 weights); the result is
    cast back to the weight's dtype. The inputs are not modified.
    """
    if weight.dim() != 2 or hessian.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"weight must be 2-D [out, in] and hessian [in, in], got {tuple(weight.shape)} "
                         f"and {tuple(hessian.shape)}")
    if mask_groups not in MASK_GROUPS:
        raise ValueError(f"mask_groups must be one of {', '.join(MASK_GROUPS)}, got {mask_groups!r}")
    if pattern is not None:
        check_pattern_shape(weight.shape, pattern)
        if blocksize % pattern[1]:
            raise ValueError(f"blocksize {blocksize} must be a multiple of M={pattern[1]}")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(dtype).clone()
    rows, columns = w.shape
    upper, dead = inverse_hessian_factor(hessian.to(w.device), percdamp, dtype)
    diag = upper.diagonal()
    pruned = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    remaining = torch.full((rows,), targeted_count(sparsity, columns), device=w.device)
    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        block, factor = w[:, start:end].clone(), upper[start:end, start:end]
        errors = torch.zeros_like(block)
        if mask is not None:
            block_mask = mask[:, start:end].to(w.device)
        elif pattern is None:
            block_mask = _block_mask(w, diag, dead, start, end, sparsity, mask_groups, remaining)
        else:
            block_mask = torch.zeros(block.shape, dtype=torch.bool, device=w.device)
        for j in range(end - start):
            if pattern is not None and j % pattern[1] == 0:
                group = slice(j, j + pattern[1])
                score = _saliency(block[:, group], diag[start:end][group], dead[start:end][group])
                block_mask[:, group] = nm_mask(score, pattern)
            error = errors[:, j]
            torch.mul(block[:, j], block_mask[:, j], out=error).div_(factor[j, j])
            block[:, j:].addr_(error, factor[j, j:], alpha=-1)
            block[:, j].masked_fill_(block_mask[:, j], 0)  # exactly zero, not a rounding residue
        w[:, start:end] = block
        pruned[:, start:end] = block_mask
        w[:, end:] -= errors @ upper[start:end, end:]
    return w.to(weight.dtype), pruned
