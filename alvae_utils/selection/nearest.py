"""The few nearest labeled points of each unlabeled point, tracked for core-set's exact picks.

Fast float32 distances only shortlist; exact float64 distances decide whenever two candidates are
closer than the fast form's proven error (:mod:`.precision`). Tracking each point's nearest few
keeps those exact distances to a handful per point instead of a pass over L.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .distances import centered_blocks, exact_squared_distances, row_blocks


TRACKED = 3
"""Nearest points tracked per unlabeled point. When the last tracked one is more than 2R beyond the
nearest, the exact nearest is among the others: a few exact distances instead of a pass over L.
Near-duplicates can leave several within 2R; 3 makes passes over L rare (8 would have none on the
clustered benchmarks) while the lists stay small next to the features."""

Nearest = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Per unlabeled point, over the points seen so far: the TRACKED smallest fast squared distances
(ascending, inf-padded), the pool indices of their points, and the exact min distance (float64;
NaN when not known, or when a point seen since may be nearer)."""


def merge_nearest(near: Nearest, dist: torch.Tensor, ids: torch.Tensor, radius: float, features: torch.Tensor,
                   row_ids: torch.Tensor, everything: bool) -> Nearest:
    """``near`` of the points ``row_ids`` with the fast distances ``dist`` (rows × c, ascending if not
    ``everything``) to the points ``ids`` (rows × c) folded in; new tensors.

    A new point within radius of a known exact value may be nearer: it is measured exactly. When
    ``dist`` holds only the nearest of the new points (not ``everything``) and its last is within
    reach too, more may be: the exact value is forgotten.
    """
    values, points, exact = near
    top = torch.cat([values, dist], 1).topk(TRACKED, dim=1, largest=False)
    points = torch.cat([points, ids], 1).gather(1, top.indices)
    reach = exact.unsqueeze(1) + radius
    close = (dist < reach).nonzero()
    if len(close):
        found = exact_squared_distances(features, row_ids.index_select(0, close[:, 0]), ids[close[:, 0], close[:, 1]])
        exact = exact.scatter_reduce(0, close[:, 0], found, "amin")
    if not everything:
        exact = exact.masked_fill(dist[:, -1] < reach.squeeze(1), float("nan"))
    return top.values, points, exact


def limit(near: Nearest, radius: float) -> torch.Tensor:
    """Per point, the fast distance below which a new point changes ``near``: it takes a tracked
    place, or comes within radius of the known exact value and may be nearer than it."""
    return torch.fmax(near[0][:, -1], near[2] + radius)


def lower_nearest(near: Nearest, features: torch.Tensor, mean: torch.Tensor, ids: torch.Tensor,
                   norms: torch.Tensor, rows: torch.Tensor | None,
                   points: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], chunk_size: int,
                   radius: float, seen: torch.Tensor | None = None) -> None:
    """Fold the squared distances from u_r to the points of ``points`` into ``near``, for r in ``rows`` (None: all).

    u_r = features[ids[r]] − mean (squared norm norms[r]), gathered chunk_size rows at a time.
    ``seen[j]``, if given, is how many of the first points row rows[j] has already folded in.
    Works in chunk_size × chunk_size blocks of ||u||² + ||q||² − 2u·q (clamped at 0),
    so no |rows| × d copy and no |rows| × |points| matrix is ever formed.
    """
    positions = ids if rows is None else ids.index_select(0, rows)
    offset = 0
    for block, block_norms, block_ids in points:
        for part, x_part in centered_blocks(features, positions, mean, chunk_size):
            where = part if rows is None else rows[part]
            dist = torch.addmm(block_norms.unsqueeze(0), x_part, block.T, alpha=-2.0)
            if seen is not None:  # folding a point in twice would take two of the tracked places
                order = torch.arange(offset, offset + len(block), device=dist.device)
                dist.masked_fill_(order < seen[part].unsqueeze(1), float("inf"))
            # The smallest ||q||² − 2u·q of each row, then + ||u||²: additions per row, not per pair.
            top = dist.topk(min(TRACKED, dist.shape[1]), dim=1, largest=False)
            row_norms = norms[where] if rows is None else norms.index_select(0, where)
            smallest = top.values.add_(row_norms.unsqueeze(1)).clamp_(min=0.0)
            current = tuple(t[where] if rows is None else t.index_select(0, where) for t in near)
            merged = merge_nearest(current, smallest, block_ids[top.indices], radius, features,
                                    positions[part], everything=dist.shape[1] <= TRACKED)
            for target, values in zip(near, merged, strict=True):
                if rows is None:
                    target[where] = values
                else:
                    target.index_copy_(0, where, values)
        offset += len(block)


def catch_up(near: Nearest, features: torch.Tensor, mean: torch.Tensor, ids: torch.Tensor, norms: torch.Tensor,
              rows: torch.Tensor, seen: torch.Tensor, picked: tuple[torch.Tensor, torch.Tensor], chunk_size: int,
              radius: float) -> None:
    """Fold into near[rows] the picks each has missed: row rows[j] has seen the first seen[j] of
    ``picked`` (pool indices and squared norms of the picks so far, in pick order)."""
    start = int(seen.min())
    missed = row_blocks(features, picked[0][start:], mean, chunk_size, picked[1][start:])
    lower_nearest(near, features, mean, ids, norms, rows, missed, chunk_size, radius, seen - start)


def exact_min_dist(features: torch.Tensor, mean: torch.Tensor, ids: torch.Tensor, x: torch.Tensor,
                    norms: torch.Tensor, near: Nearest, centers: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    radius: float, chunk_size: int, required: torch.Tensor) -> torch.Tensor:
    """min over the centers q of the exact ||features[ids] − q||² (float64), for points whose ``near``
    over all centers is current; ``x``, ``norms``: their centered rows and squared norms.

    The nearest center's fast distance is at most its exact one + radius ≤ the fast smallest + 2·radius.
    Every center within that reach is measured exactly: the tracked ones, when the last tracked is
    beyond it; otherwise, for the ``required`` points only (the others stay NaN), the fast distances
    to all ``centers`` ((pool indices, squared norms) pairs: L, the picks) are recomputed to find them.
    """
    values, points, _ = near
    reach = values[:, :1] + 2 * radius
    closest = torch.full((len(ids),), float("inf"), dtype=torch.float64, device=values.device)
    sure = values[:, -1:] > reach
    pairs = ((values <= reach) & sure).nonzero()
    closest.scatter_reduce_(0, pairs[:, 0], exact_squared_distances(
        features, ids.index_select(0, pairs[:, 0]), points[pairs[:, 0], pairs[:, 1]]), "amin")
    closest.masked_fill_(~sure.squeeze(1) & ~required, float("nan"))
    unsure = (~sure.squeeze(1) & required).nonzero().squeeze(1)
    if len(unsure) == 0:
        return closest
    ids, x, norms, reach = (t.index_select(0, unsure) for t in (ids, x, norms, reach))
    for center_ids, center_norms in filter(lambda pair: len(pair[0]), centers):
        for block, block_norms, block_ids in row_blocks(features, center_ids, mean, chunk_size, center_norms):
            dist = torch.addmm(block_norms.unsqueeze(0), x, block.T, alpha=-2.0).add_(norms.unsqueeze(1))
            for pairs in (dist <= reach).nonzero().split(chunk_size):
                found = exact_squared_distances(features, ids.index_select(0, pairs[:, 0]),
                                                 block_ids.index_select(0, pairs[:, 1]))
                closest.scatter_reduce_(0, unsure.index_select(0, pairs[:, 0]), found, "amin")
    return closest
