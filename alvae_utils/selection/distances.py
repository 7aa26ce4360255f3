"""What core-set (:mod:`.kcenter`) and MedAL (:mod:`.medal`) share: checked features, centred, in row blocks.

Both compare every unlabeled point with the labeled set at every pick. Features are centred on the
pool's mean first (distances are unchanged, and the squared norms in ||x||² + ||y||² − 2x·y stay
small), streamed in blocks of at most :data:`STREAM_BYTES`, so memory stays O(N) beyond the input.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .pool import check_pool

def check_features(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int, chunk_size: int,
                    heuristic: str) -> int:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError(f"{heuristic}: features must be a 2-D tensor (N, d), got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)}.")
    budget = check_pool(labeled_mask, budget, features.shape[0])
    if not bool(labeled_mask.any()):
        raise ValueError(f"{heuristic} measures distances to the labeled set, so at least one labeled "
                         "point is needed; label some points first (Algorithm 1 starts from ξ ≥ 1).")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    # A finite sum proves every entry finite without an (N, d) temporary; only check row blocks if not.
    if not bool(torch.isfinite(features.sum())) and not all(
            bool(torch.isfinite(block).all()) for block in features.split(chunk_size)):
        raise ValueError(f"{heuristic}: features contain NaN or inf; check the feature extractor "
                         "(e.g. a diverged model) before selecting.")
    return budget


STREAM_BYTES = 64 << 20
"""Largest row block of the passes over all of U (squared norms, MedAL's refreshes). Each op on
a block costs milliseconds of thread hand-off on a busy CPU, so few large blocks are much
faster than many small ones; no block holds more than 1/16 of the rows."""


def stream_rows(features: torch.Tensor, chunk_size: int, dtype: torch.dtype) -> int:
    """Rows per block of a pass over all points: ≤ STREAM_BYTES and ≤ N/16, but ≥ chunk_size."""
    n, d = features.shape
    row_bytes = max(d, 1) * max(features.element_size(), dtype.itemsize)  # rows are widened to ``dtype``
    return max(chunk_size, min(n // 16, STREAM_BYTES // row_bytes))


def prepare(features: torch.Tensor, labeled_mask: torch.Tensor, rows: int, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean of the features in ``dtype``, indices of U, indices of L), on the features' device; nothing of size N × d.

    The mean is summed ``rows`` rows at a time because a whole-tensor reduction
    with a dtype converts the whole tensor first. Callers subtract it from the
    rows they gather (:func:`centered_blocks`): distances are translation
    invariant, and centering shrinks ||x||², which is what the rounding error
    of ||x||² + ||y||² − 2x·y scales with. An approximate mean does as well as the exact one.
    """
    mean = sum(block.sum(0, dtype=dtype) for block in features.split(rows)) / features.shape[0]
    mask = labeled_mask.to(features.device)
    return mean, (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


def centered(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """features[index] − mean, in the mean's dtype, as a new (|index|, d) tensor."""
    return features.index_select(0, index).to(mean.dtype).sub_(mean)


def centered_blocks(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, rows: int
                     ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (part, features[index[part]] − mean) for consecutive parts of a non-empty ``index``, ``rows`` at a time.

    Every block is written into the same buffer, allocated once (no page faults
    per block), so each must be used before the next is asked for.
    """
    rows = min(rows, len(index))
    raw = torch.empty(rows, features.shape[1], dtype=features.dtype, device=features.device)
    centered = raw if raw.dtype == mean.dtype else torch.empty_like(raw, dtype=mean.dtype)
    for start in range(0, len(index), rows):
        part = slice(start, start + rows)
        size = min(rows, len(index) - start)
        torch.index_select(features, 0, index[part], out=raw[:size])
        yield part, torch.sub(raw[:size], mean, out=centered[:size])


def squared_norms(x: torch.Tensor, heuristic: str) -> torch.Tensor:
    norms = torch.einsum("ij,ij->i", x, x)  # row-wise dot products without an (N, d) temporary
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(f"{heuristic}: squared feature norms overflow {x.dtype}; "
                         "rescale the features or pass float64.")
    return norms


def centered_norms(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, rows: int,
                    heuristic: str) -> torch.Tensor:
    """||features[i] − mean||² for i in ``index``."""
    norms = torch.empty(len(index), dtype=mean.dtype, device=mean.device)
    for part, block in centered_blocks(features, index, mean, rows):
        norms[part] = squared_norms(block, heuristic)
    return norms


SERIAL_ELEMENTS = 32_768
"""PyTorch's grain size: smaller ops run on one thread. The exact distances come in small batches,
and on a busy CPU an op split over threads waits milliseconds for them, so they stay below it."""


def exact_squared_distances(features: torch.Tensor, index: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """||features[index[p]] − other[p]||² in float64 from explicit differences (``other``: pool
    indices, or one float64 row): exact up to float64 round-off, whatever the features' dtype."""
    rows = max(1, SERIAL_ELEMENTS // max(features.shape[1], 1))
    parts = []
    for start in range(0, len(index), rows):
        part = slice(start, start + rows)
        y = other if other.dtype == torch.float64 else features.index_select(0, other[part]).to(torch.float64)
        parts.append(features.index_select(0, index[part]).to(torch.float64).sub_(y).square_().sum(1))
    if len(parts) == 1:  # the usual case
        return parts[0]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=features.device)


def row_blocks(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, chunk_size: int,
                norms: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (rows, their squared norms, their pool indices) of ``features[index] − mean`` chunk by chunk.

    ``norms`` are those of ``index``, in the same order.
    """
    for part, rows in centered_blocks(features, index, mean, chunk_size):
        yield rows, norms[part], index[part]


def top_candidates(values: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    """(positions of k largest values, ascending; τ, the smallest of them): no other value exceeds τ."""
    top = torch.topk(values, k, sorted=False)
    return top.indices.sort().values, float(top.values.min())
