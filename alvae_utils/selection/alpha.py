"""Eq. 6: a feature family's block appended to the task model's features, scaled by α.

:func:`augment_features` builds [T_f(u) ⁀ α·V(u)]; :func:`balanced_alpha` is the α that gives both
blocks the same mean squared distance between pool points (α = ``balanced``). α itself is parsed and
checked by :mod:`alvae_utils.selection.methods`.
"""

from __future__ import annotations


import torch

from ..config import ConfigError
from .methods import BALANCED, check_alpha
from .pairs import BALANCED_PAIRS, mean_squared_pair_distance, pool_pairs, ratio_alpha


def balanced_alpha(task_features: torch.Tensor, family_features: torch.Tensor,
                   generator: torch.Generator | None = None, pairs: int = BALANCED_PAIRS) -> float:
    """The α of Eq. 6 under which both blocks of [T ⁀ α·V] have the same mean squared pair distance.

    With T = ``task_features`` (N, d_T) and V = ``family_features`` (N, d_V), rows in
    pool order, and the same P pairs (i, j), i ≠ j, for both blocks::

        msd_T = (1/P) Σ ||T_i − T_j||²,   msd_V = (1/P) Σ ||V_i − V_j||²,   α = √(msd_T / msd_V),

    so α²·msd_V = msd_T: in the distances of core-set (Eq. 1) and MedAL (Eq. 2) between
    random pool points, the family's block weighs as much as the task model's.

    Pairs: P = ``pairs`` ordered pairs drawn uniformly, with replacement, from the N(N − 1)
    with i ≠ j (i uniform, j = i + r mod N with r uniform in 1 … N − 1), by ``generator``
    (a CPU generator; None: one seeded from the stream ALPHA alone, so the same features
    always give the same α). When N(N − 1)/2 ≤ P, each of the N(N − 1)/2 pairs i < j is
    used once instead, which gives the exact means. Memory: a few P × d blocks.

    Returns α ≥ 0 as a float (0 when T is constant). Raises ValueError for fewer than two
    points, rows that do not match, non-finite features, or a V that is constant on the
    pairs used (msd_V = 0: no scale makes a constant block comparable, and it adds
    nothing to any distance).
    """
    for name, features in (("task_features", task_features), ("family_features", family_features)):
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor (N, d).")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{name} contain NaN or inf; a balanced α needs finite features.")
    n = task_features.shape[0]
    if family_features.shape[0] != n:
        raise ValueError(f"task features have {n} rows but the family features {family_features.shape[0]}; "
                         "encode the same pool points in the same order.")
    if n < 2:
        raise ValueError(f"a balanced α needs pairs of pool points; got {n} point(s).")
    first, second = pool_pairs(n, generator, pairs)
    msd_task, msd_family = (mean_squared_pair_distance(x, first, second) for x in (task_features, family_features))
    return ratio_alpha(msd_task, msd_family)


def augment_features(task_features: torch.Tensor, family_features: torch.Tensor | None,
                     alpha: float | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 6's [T_f(u) ⁀ α·V(u)]: α scales the feature family's block (V, the VAE means) only.

    ``task_features`` (N, d) and ``family_features`` (N, k) give (N, d + k). α is a
    number ≥ 0 or :data:`BALANCED`, which is replaced by :func:`balanced_alpha` of
    these features (its pairs drawn by ``generator``). With ``family_features=None``
    or α = 0 the task features are returned unchanged (the same tensor): a zero block
    adds nothing to any distance, and returning the plain features makes α = 0
    reproduce the plain heuristic bit for bit. The block is cast to the task
    features' dtype and device. Raises ValueError for a bad α or mismatched rows.
    """
    if not isinstance(task_features, torch.Tensor) or task_features.dim() != 2:
        raise ValueError("task_features must be a 2-D tensor (N, d).")
    try:
        alpha = check_alpha(alpha)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    if alpha == BALANCED:
        if family_features is None:
            return task_features
        alpha = balanced_alpha(task_features, family_features, generator)
    if family_features is None or alpha == 0:
        return task_features
    if not isinstance(family_features, torch.Tensor) or family_features.dim() != 2:
        raise ValueError("family_features must be a 2-D tensor (N, k), e.g. the VAE means μ.")
    if family_features.shape[0] != task_features.shape[0]:
        raise ValueError(f"task features have {task_features.shape[0]} rows but the family features "
                         f"{family_features.shape[0]}; encode the same pool points in the same order.")
    block = family_features.to(device=task_features.device, dtype=task_features.dtype)
    return torch.cat([task_features, alpha * block], dim=1)
