"""Long-tailed pools: the exponential class profile with imbalance ratio ρ, and its seeded draw.

The profile is the one of CIFAR-10-LT (Cui et al., "Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019; Cao et al., LDAM, NeurIPS 2019): class ``c`` of ``C`` (in label order, class 0 the
largest) gets a share proportional to ``ρ^(−c/(C−1))``, so the largest class holds ρ times as many
images as the smallest. Only the pool is drawn this way; the evaluation set stays as the dataset gives it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError, shown


def long_tail_counts(pool_size: int, num_classes: int, imbalance: float) -> list[int]:
    """Images of each class (C,) in a pool of ``pool_size`` whose class ``c`` has a share ∝ ``ρ^(−c/(C−1))``.

    The shares are rounded by largest remainder, so the counts sum to ``pool_size`` exactly and each
    is within one image of ``pool_size`` × its share. Raises ConfigError when ``num_classes`` < 2,
    ``imbalance`` < 1, or the pool is too small to give the smallest class an image.
    """
    if num_classes < 2:
        raise ConfigError(f"a long-tailed pool needs at least 2 classes, got {num_classes}.")
    if not imbalance >= 1:
        raise ConfigError(f"pool_imbalance must be ≥ 1 (largest over smallest class), got {shown(imbalance)}.")
    shares = imbalance ** (-np.arange(num_classes, dtype=np.float64) / (num_classes - 1))
    exact = pool_size * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    # Largest remainder; ties go to the larger class (lower index), as argsort is stable.
    counts[np.argsort(-(exact - counts), kind="stable")[:pool_size - int(counts.sum())]] += 1
    if counts[-1] < 1:  # the smallest class
        raise ConfigError(f"a pool of {pool_size} images at pool_imbalance={imbalance:g} leaves class "
                          f"{num_classes - 1}, the smallest, no image ({exact[-1]:.1g} expected); raise pool_size to "
                          f"at least {shown(int(np.ceil(shares.sum() / shares[-1])))} or lower pool_imbalance.")
    return counts.tolist()


def draw_long_tailed(labels: Tensor, counts: list[int], class_names: tuple[str, ...], pool_size: int,
                     imbalance: float, generator: torch.Generator, dataset: str) -> Tensor:
    """Indices (pool_size,) of a pool with ``counts[c]`` images of class ``c``, drawn without replacement.

    ``labels`` (N,) int64 are the classes of the split drawn from. One ``torch.randperm`` of the split
    from ``generator`` orders it; each class keeps its first ``counts[c]`` images in that order, and the
    pool keeps the permutation's order (classes interleaved). Raises ConfigError, naming the class,
    the count it needs and the count the split has, when a class has too few images.
    """
    available = torch.bincount(labels, minlength=len(counts)).tolist()
    short = [c for c, (need, have) in enumerate(zip(counts, available, strict=True)) if need > have]
    if short:
        c, largest = short[0], largest_pool(available, imbalance)
        fix = f"lower pool_size to at most {largest}" if largest else "no pool fits: a class has no image"
        raise ConfigError(f"pool_imbalance={imbalance:g} needs {counts[c]} images of class {c} "
                          f"({class_names[c]!r}) for a pool of {pool_size}, but {dataset}'s train split has "
                          f"{available[c]}; {fix}, or lower pool_imbalance.")
    order = torch.randperm(len(labels), generator=generator)
    ordered = labels[order]
    # Rank of each image among the earlier images of its class in the permutation.
    by_class = torch.argsort(ordered, stable=True)
    sizes = torch.bincount(ordered, minlength=len(counts))
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty_like(ordered)
    rank[by_class] = torch.arange(len(ordered)) - starts[ordered[by_class]]
    return order[rank < torch.tensor(counts)[ordered]]


def largest_pool(available: list[int], imbalance: float) -> int:
    """The largest pool whose :func:`long_tail_counts` fit ``available`` images per class; 0 when none does."""
    def fits(size: int) -> bool:
        counts = long_tail_counts(size, len(available), imbalance)
        return all(need <= have for need, have in zip(counts, available, strict=True))

    # A pool with more than (available[c] + 1) / share[c] images gives class c more than it has, even rounded down.
    shares = imbalance ** (-np.arange(len(available), dtype=np.float64) / (len(available) - 1))
    size = int(min((np.array(available) + 1) / (shares / shares.sum())))
    try:
        while size > 0 and not fits(size):
            size -= 1
    except ConfigError:  # too small to give the smallest class an image
        return 0
    return size
