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


WORKING_DTYPE = torch.float64
"""The dtype of every distance, whatever the features': in float32, the rounding error of
||x||² + ||y||² − 2x·y (about d·2⁻²⁴·||x||²) is as large as the gaps between close points on
clustered features, and core-set then picks a near-tied point that is not the farthest (issue 22).
In float64 that error is 2⁻²⁹ times smaller, the picks are the exact argmax up to float64 round-off,
and float32 matmul settings (TF32, bfloat16) cannot touch them. Widening is exact for every real dtype
up to 32 bits, so float16, float32 and float64 features holding the same numbers give the same picks."""


STREAM_BYTES = 64 << 20
"""Largest row block of the passes over all of U (squared norms, MedAL's refreshes). Each op on
a block costs milliseconds of thread hand-off on a busy CPU, so few large blocks are much
faster than many small ones; no block holds more than 1/16 of the rows."""


def stream_rows(features: torch.Tensor, chunk_size: int) -> int:
    """Rows per block of a pass over all points: ≤ STREAM_BYTES and ≤ N/16, but ≥ chunk_size."""
    n, d = features.shape
    row_bytes = max(d, 1) * max(features.element_size(), WORKING_DTYPE.itemsize)  # rows are widened to float64
    return max(chunk_size, min(n // 16, STREAM_BYTES // row_bytes))


def prepare(features: torch.Tensor, labeled_mask: torch.Tensor, rows: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean of the features in float64, indices of U, indices of L), on the features' device; nothing of size N × d.

    Everything downstream works in float64 (:data:`WORKING_DTYPE`), whatever the features' dtype.
    Callers subtract the mean from the rows they gather (:func:`centered_blocks`): distances are
    translation invariant, and centering shrinks ||x||², which is what the rounding error of
    ||x||² + ||y||² − 2x·y scales with. An approximate mean does as well as the exact one.
    """
    # Float32 features are summed in float32, whole (no copy: 15× faster than row blocks, which a sum
    # in another dtype needs, since it converts every element first); in float64 if that overflows.
    mean = features.sum(0).to(WORKING_DTYPE) if features.dtype == torch.float32 else None
    if mean is None or not bool(torch.isfinite(mean).all()):
        mean = sum(block.sum(0, dtype=WORKING_DTYPE) for block in features.split(rows))
    mean = mean / features.shape[0]
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
        # Widen, then subtract in one dtype: the same numbers as a mixed-dtype subtraction (widening is
        # exact), about 3× faster on the CPU, where mixed dtypes take a slow per-element cast.
        yield part, centered[:size].copy_(raw[:size]).sub_(mean)


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


def round_off(d: int, largest_norm: float) -> float:
    """A bound on the float64 round-off of ||x||² + ||y||² − 2x·y for centred rows of squared norm ≤
    ``largest_norm``: an inner product of length n errs by at most γ_n ||x||·||y|| (Higham 2002, §3.1),
    and three of them meet here. A distance below it cannot be told from 0."""
    return 6.6 * (d + 8) * 2.0 ** -53 * largest_norm


def zero_below(dist: torch.Tensor, tol: float) -> torch.Tensor:
    """``dist`` (squared distances, clamped at 0) with values ≤ ``tol`` set to exactly 0, in place: copies of
    one point are then at distance 0 from each other whatever the round-off, and tie."""
    return dist.masked_fill_(dist <= tol, 0.0)


def lower_min_dist(min_dist: torch.Tensor, features: torch.Tensor, mean: torch.Tensor, unlabeled: torch.Tensor,
                   norms_u: torch.Tensor, rows: torch.Tensor | None, points: torch.Tensor,
                   point_norms: torch.Tensor | None, chunk_size: int, tol: float = 0.0) -> None:
    """min_dist[r] ← min(min_dist[r], min_q ||u_r − q||²) for r in ``rows`` (None: all), q in ``points``.

    ``points`` are indices into ``features`` (1-D int64) and q = features[p] − mean; u_r =
    features[unlabeled[r]] − mean; ``min_dist`` and ``norms_u`` (||u||²) are float64 (|U|,) in the order
    of ``unlabeled``, ``rows`` positions in it; ``point_norms`` are the ||q||² of ``points`` in order
    (None: computed here). Values are squared distances in squared feature units. Works in
    chunk_size × chunk_size blocks of ||u||² + ||q||² − 2u·q (clamped at 0, and 0 up to ``tol``), so no
    |rows| × d copy and no |rows| × |points| matrix is ever formed.

    The points are gathered up to :data:`STREAM_BYTES` at a time, so each chunk of u is gathered once
    per such group rather than once per chunk of points, and every block product goes into one buffer
    (no page faults per block). Each block is the same product of the same chunks, with the same
    norms, as one chunk of points at a time, and a minimum does not depend on the order it is taken
    in, so the result is the same to the bit (``tests/test_selection_exact.py`` checks it).
    """
    positions = unlabeled if rows is None else unlabeled.index_select(0, rows)
    group = max(1, STREAM_BYTES // (max(features.shape[1], 1) * mean.element_size() * chunk_size)) * chunk_size
    products = torch.empty(min(chunk_size, len(positions)) * min(chunk_size, len(points)),
                           dtype=mean.dtype, device=mean.device)
    for start in range(0, len(points), group):
        x_points = centered(features, points[start:start + group], mean)
        chunks = x_points.split(chunk_size)
        chunk_norms = ([squared_norms(block, "coreset") for block in chunks] if point_norms is None
                       else point_norms[start:start + group].split(chunk_size))
        for part, x_part in centered_blocks(features, positions, mean, chunk_size):
            if rows is None:
                norms_part, current = norms_u[part], min_dist[part]
            else:
                part = rows[part]
                norms_part, current = norms_u.index_select(0, part), min_dist.index_select(0, part)
            for block, block_norms in zip(chunks, chunk_norms, strict=True):
                out = products[:len(x_part) * len(block)].view(len(x_part), len(block))
                # min over q of (||q||² − 2u·q), then + ||u||²: one addition per row instead of per pair.
                dist = torch.addmm(block_norms.unsqueeze(0), x_part, block.T, alpha=-2.0, out=out).amin(1)
                torch.minimum(current, zero_below(dist.add_(norms_part).clamp_(min=0.0), tol), out=current)
            if rows is not None:
                min_dist.index_copy_(0, part, current)


def top_candidates(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions of k largest values, sorted; τ, the k-th largest value; first position at τ left out).

    Ties at τ go to the lowest positions, and the first one left out is returned
    (len(values) if none is), so that the lazy loops stay exact on ties: a point
    left out at τ can only be beaten by a candidate at τ with a lower position.
    Capping the ties keeps the candidates at k rows even when many duplicates tie.
    """
    n = len(values)
    top = torch.topk(values, min(k + 1, n), sorted=True)
    threshold = top.values[k - 1]
    if k == n or bool(top.values[k] < threshold):  # no tie across the cut: the usual case, no O(N) scan
        return top.indices[:k].sort().values, threshold, torch.tensor(n, device=values.device)
    above = (values > threshold).nonzero().squeeze(1)
    tied = (values == threshold).nonzero().squeeze(1)
    taken = k - len(above)
    first_left = tied[taken] if len(tied) > taken else torch.tensor(n, device=values.device)
    return torch.cat([above, tied[:taken]]).sort().values, threshold, first_left


def beats_the_rest(score: torch.Tensor, bound: torch.Tensor, position: torch.Tensor, first_left: torch.Tensor) -> bool:
    """Whether a candidate's ``score`` at ``position`` is the exact argmax (ties → lowest position)
    when no point outside the candidates scores above ``bound``, and any at ``bound`` sits at
    ``first_left`` or later. One host synchronisation."""
    return bool((score > bound) | ((score == bound) & (position < first_left)))


