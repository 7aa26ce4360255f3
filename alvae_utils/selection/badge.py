"""BADGE (Ash, Zhang, Krishnamurthy, Langford & Agarwal, ICLR 2020): k-means++ seeding on gradient embeddings.

The gradient embedding of a pool point is the gradient of the last layer's loss at T's own predicted label,
g(x) = (p − e_ŷ) ⊗ h(x): C·d numbers (5,120 for 10 classes and ResNet-18's 512 features). It is never
materialised: with a = p − e_ŷ, ⟨a ⊗ h, b ⊗ k⟩ = ⟨a, b⟩⟨h, k⟩, so a squared distance costs one C- and
one d-vector product, and the whole selection needs O(N) memory beyond the inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.datasets import MULTICLASS, MULTILABEL
from .pairs import mean_squared_pair_distance, pool_pairs, ratio_alpha
from .pool import check_pool
from .ranking import checked_logits

Draw = Callable[[torch.Tensor, torch.Generator], int]
"""(D² weights of the candidates (n,) float64, generator) → the position drawn."""


def gradient_factors(logits: torch.Tensor, task: str) -> torch.Tensor:
    """a (N, C) with g(x) = a ⊗ h(x) the last layer's loss gradient at the predicted label.

    multi-class (cross-entropy): a = softmax(z) − e_ŷ, ŷ = argmax z (Ash et al. 2020, Sec. 3).
    multi-label (the sum of the C binary cross-entropies, sigmoid outputs): a = σ(z) − ŷ, ŷ_c = [σ(z_c) > 0.5].
    """
    logits = checked_logits(logits)
    if task == MULTICLASS:
        p = torch.softmax(logits, dim=1)
        return p - torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).to(p.dtype)
    if task == MULTILABEL:
        p = torch.sigmoid(logits)
        return p - (p > 0.5).to(p.dtype)
    raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")


def inverse_cdf_draw(weights: torch.Tensor, generator: torch.Generator) -> int:
    """A position drawn with probability weights / Σ weights, by one uniform from the CPU ``generator``."""
    cumulative = weights.cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64).to(weights.device) * cumulative[-1]
    return min(int(torch.searchsorted(cumulative, u, right=True)), len(weights) - 1)


def badge_select(logits: torch.Tensor, features: torch.Tensor, task: str, labeled_mask: torch.Tensor, budget: int,
                 generator: torch.Generator, family: torch.Tensor | None = None,
                 draw: Draw = inverse_cdf_draw) -> torch.Tensor:
    """BADGE's β picks (int64 pool indices, pick order): k-means++ seeding over U on g(x) = [(p − e_ŷ) ⊗ h(x) ⁀ v(x)].

    ``logits`` (N, C) and ``features`` h = T_f (N, d) of T; ``family`` v (N, k) the feature family's block,
    already scaled by α (``badge+<family>``: appended to the gradient embedding, in the spirit of Eq. 6), or None.
    First pick: the largest ||g||² (Ash et al.'s code, as scikit-activeml; ties → lowest index). Each later
    pick is drawn with probability D²(x) / Σ_U D², D(x) the distance from x to its nearest pick so far
    (Arthur & Vassilvitskii 2007), by ``draw`` from ``generator`` (the run's selection generator; ``draw``
    is there for tests). Should every remaining D² be 0 (duplicates of the picks), the draw is uniform over
    the points not yet picked. ||g_i − g_j||² = |a_i|²|h_i|² + |a_j|²|h_j|² − 2⟨a_i,a_j⟩⟨h_i,h_j⟩
    + ||v_i − v_j||², clamped at 0; never an N × C·d matrix: per pick one (N, C) and one (N, d) product.
    Raises ValueError for mismatched or non-finite inputs, a bad mask or β.
    """
    a = gradient_factors(logits, task)
    budget = check_pool(labeled_mask, budget, a.shape[0])
    if features.dim() != 2 or features.shape[0] != a.shape[0] or not bool(torch.isfinite(features).all()):
        raise ValueError(f"BADGE needs finite features (N, d) for the N = {a.shape[0]} logits' rows, "
                         f"got {tuple(features.shape)}.")
    if family is not None and (family.dim() != 2 or family.shape[0] != a.shape[0]):
        raise ValueError(f"the family block must be (N, k) with N = {a.shape[0]}, got {tuple(family.shape)}.")
    unlabeled = (~labeled_mask.to(a.device)).nonzero().squeeze(1)
    a, h = a.index_select(0, unlabeled).float(), features.to(a.device).index_select(0, unlabeled).float()
    v = None if family is None else family.to(a.device).index_select(0, unlabeled).float()
    norms = a.square().sum(1, dtype=torch.float64) * h.square().sum(1, dtype=torch.float64)
    if v is not None:
        norms += v.square().sum(1, dtype=torch.float64)
    picks = torch.empty(budget, dtype=torch.long)
    picked = torch.zeros(len(unlabeled), dtype=torch.bool, device=a.device)
    d2 = torch.full_like(norms, float("inf"))
    for i in range(budget):
        if i == 0:
            pick = int(torch.argmax(norms))
        else:
            weights = torch.where(picked, 0.0, d2)
            if not bool((weights > 0).any()):
                weights = (~picked).double()
            pick = draw(weights, generator)
        picks[i], picked[pick] = pick, True
        cross = (a @ a[pick]).double() * (h @ h[pick]).double()
        if v is not None:
            cross += (v @ v[pick]).double()
        torch.minimum(d2, (norms + norms[pick] - 2 * cross).clamp_(min=0.0), out=d2)
    return unlabeled.index_select(0, picks.to(unlabeled.device))


def badge_balanced_alpha(logits: torch.Tensor, features: torch.Tensor, task: str, family: torch.Tensor,
                         generator: torch.Generator | None = None) -> float:
    """α = √(msd_G / msd_V) for ``badge+<family>(α=balanced)``: as core-set's balanced α
    (:func:`~alvae_utils.selection.alpha.balanced_alpha`, the same pool pairs), with the gradient embedding G in
    place of T_f, so the family's block weighs as much as the gradient embedding in the distances between random
    pool points. ||g_i − g_j||² is computed from the factors, never from the (N, C·d) embedding.
    """
    a = gradient_factors(logits, task)
    if family.shape[0] != a.shape[0] or features.shape[0] != a.shape[0] or a.shape[0] < 2:
        raise ValueError(f"a balanced α needs ≥ 2 rows, equal for logits ({a.shape[0]}), features "
                         f"({features.shape[0]}) and family ({family.shape[0]}).")
    first, second = pool_pairs(a.shape[0], generator)
    first, second = first.to(a.device), second.to(a.device)
    h = features.to(a.device).float()
    a_i, a_j, h_i, h_j = a[first], a[second], h[first], h[second]
    squared = (a_i.square().sum(1, dtype=torch.float64) * h_i.square().sum(1, dtype=torch.float64)
               + a_j.square().sum(1, dtype=torch.float64) * h_j.square().sum(1, dtype=torch.float64)
               - 2 * (a_i * a_j).sum(1, dtype=torch.float64) * (h_i * h_j).sum(1, dtype=torch.float64))
    return ratio_alpha(float(squared.clamp(min=0).mean()), mean_squared_pair_distance(family, first, second))
