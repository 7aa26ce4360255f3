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


MAX_ALPHA: float = 1e6
"""The largest numeric α accepted. Core-set and MedAL compare squared distances of the scaled block,
α²·‖V_i − V_j‖², in float32 (largest 3.4e38): α = 1e300 overflows to inf and the selection sees NaN,
after the VAE and the first step were trained. Already at 1e6 the family's block outweighs the task
features by twelve orders of magnitude in those distances, so no larger α selects differently. It bounds an α
given in a method (:func:`alvae_utils.selection.methods.check_alpha`) and a balanced α estimated at selection
time (:func:`ratio_alpha`) alike; it lives here, with the estimate, so that both can import it."""


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
    """α = √(msd_T / msd_V); ValueError when the family's block is constant on the pairs (msd_V = 0), or when α is
    above :data:`MAX_ALPHA` (a family block that barely varies next to the task's: scaled to balance, its squared
    distances would overflow float32 and the selection would see NaN or inf)."""
    if msd_family == 0:
        raise ValueError("the family's features are the same for every pair of pool points used, so no α "
                         "balances them (a constant block changes no distance); check the family's fit, or "
                         "give a numeric α.")
    alpha = (msd_task / msd_family) ** 0.5
    if not alpha <= MAX_ALPHA:
        raise ValueError(f"the balanced α estimated at this step is {alpha:.6g}, above the largest accepted α, "
                         f"{MAX_ALPHA:g}: the family's features barely vary between pool points (mean squared "
                         f"distance {msd_family:.6g}, against {msd_task:.6g} for the task's), and scaled that far "
                         "their squared distances overflow float32. Check the family's fit (a collapsed encoder "
                         f"maps every image alike), or give a numeric α ≤ {MAX_ALPHA:g}.")
    return alpha
