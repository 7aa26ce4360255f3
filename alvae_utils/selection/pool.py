"""The pool's labeled set: checks of a mask and a budget, and Algorithm 1's initial labels.

Every selection function takes ``labeled_mask``, a bool (N,) tensor marking L (U is its complement),
and returns int64 pool indices **in pick order**: unique, never labeled, exactly ``budget`` long.
"""

from __future__ import annotations

import operator

import torch

from ..seeds import INITIAL_LABELS, derive_seed


def check_pool(labeled_mask: torch.Tensor, budget: int, n: int | None = None) -> int:
    """Validate the mask and β against the pool; return β as an int."""
    if not isinstance(labeled_mask, torch.Tensor) or labeled_mask.dtype != torch.bool or labeled_mask.dim() != 1:
        raise ValueError("labeled_mask must be a 1-D bool tensor (True = labeled); "
                         "build it with torch.zeros(N, dtype=torch.bool) and set L to True.")
    if n is not None and labeled_mask.shape[0] != n:
        raise ValueError(f"labeled_mask has {labeled_mask.shape[0]} entries but there are {n} points; "
                         "pass one mask entry per pool point.")
    try:
        budget = operator.index(budget)
    except TypeError:
        raise ValueError(f"budget must be an integer, got {budget!r}.") from None
    if budget <= 0:
        raise ValueError(f"budget β must be positive, got {budget}.")
    n_unlabeled = int(labeled_mask.numel() - labeled_mask.sum())
    if budget > n_unlabeled:
        raise ValueError(f"budget β={budget} is larger than the {n_unlabeled} unlabeled points; "
                         "lower the budget or enlarge the pool.")
    return budget

def initial_labeled_indices(pool_size: int, initial_labels: int, seed: int) -> torch.Tensor:
    """Step 1 of Algorithm 1: the ξ initial labels (int64 pool indices), a function of the seed alone."""
    generator = torch.Generator().manual_seed(derive_seed(INITIAL_LABELS, seed))
    return torch.randperm(pool_size, generator=generator)[:initial_labels]

