"""Pairs of pool points and their mean squared distances: what a balanced α (Eq. 6) is estimated from.

Shared by core-set's and MedAL's balanced α (:mod:`alvae_utils.selection.alpha`) and BADGE's
(:mod:`alvae_utils.selection.badge`), so that all draw the same pairs.
"""

from __future__ import annotations

import torch

from ..seeds import ALPHA, derive_seed

BALANCED_PAIRS = 20_000
"""Pairs of pool points that :func:`~alvae_utils.selection.alpha.balanced_alpha` samples. Each mean squared
distance then has a relative standard error of CV/√20,000, CV being the coefficient of variation of ||x_i − x_j||² over
pairs (√(2/d) for Gaussian features of dimension d: 0.18% at d = 32); α's is about half of that."""


def mean_squared_pair_distance(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean of ||x_i − x_j||² over the index pairs (first[p], second[p]), summed in float64."""
    difference = x.index_select(0, first.to(x.device)) - x.index_select(0, second.to(x.device))
    return float(difference.square().sum(1, dtype=torch.float64).mean())


def pool_pairs(n: int, generator: torch.Generator | None, pairs: int = BALANCED_PAIRS
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs (first, second) of :func:`~alvae_utils.selection.alpha.balanced_alpha` among n ≥ 2 points (see
    there), int64 on the CPU."""
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pairs must be a positive integer, got {pairs!r}.")
    if generator is None:
        generator = torch.Generator().manual_seed(derive_seed(ALPHA))
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("a balanced α samples its pairs with a seeded CPU generator: "
                         "pass generator=torch.Generator().manual_seed(seed).")
    if n * (n - 1) // 2 <= pairs:
        first, second = torch.triu_indices(n, n, offset=1)
        return first, second
    first = torch.randint(n, (pairs,), generator=generator)
    return first, (first + torch.randint(1, n, (pairs,), generator=generator)) % n


def ratio_alpha(msd_task: float, msd_family: float) -> float:
    """α = √(msd_T / msd_V); ValueError when the family's block is constant on the pairs (msd_V = 0)."""
    if msd_family == 0:
        raise ValueError("the family's features are the same for every pair of pool points used, so no α "
                         "balances them (a constant block changes no distance); check the family's fit, or "
                         "give a numeric α.")
    return (msd_task / msd_family) ** 0.5
