"""Core-set (Sener & Savarese, ICLR 2018): greedy k-center, the paper's Eq. 1.

One float64 min-distance vector over the pool is kept (O(N) memory): filled with chunked distances to the
labeled set (in float32 with a proven bound where allowed, :mod:`.float32_bounds`), then lowered after each
pick, which joins the labeled set before the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from .distances import (
    beats_the_rest, centered, centered_norms, check_features, lower_min_dist, prepare, round_off, stream_rows,
    top_candidates, zero_below,
)
from .float32_bounds import float32_pass_allowed, squared_distance_bound



def kcenter_greedy(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int,
                   chunk_size: int = 2048) -> torch.Tensor:
    """Core-set (Sener & Savarese 2018), Eq. 1: greedy k-center on squared L2.

    ``features`` is (N, d), any real dtype, on any device; ``labeled_mask`` a bool
    (N,) tensor; returns the ``budget`` picked pool indices (int64, (budget,)) in
    pick order. Each pick is u* = argmax_{u∈U} min_{ℓ∈L} ||T_f(u) − T_f(ℓ)||² and
    then joins L before the next pick. Squaring does not change the argmax, so
    this is also the pick under plain L2. Ties go to the lowest pool index: copies of a point
    always tie (:meth:`_Candidates.best`), other points when their float64 values are equal.

    **Exact in float32.** Every pick is decided on float64 distances whatever the features' dtype
    (:data:`.distances.WORKING_DTYPE`), so the picks are the exact argmax up to float64 round-off:
    float16, float32 and float64 features holding the same numbers give the same picks. In float32 the
    fast form below erred by as much as the gaps between close points of clustered features (issue 22;
    ``tests/test_selection_exact.py`` checks brute force and scikit-activeml). Only the first pass,
    every point of U against L (most of the time at the paper's scale), runs in float32 where
    :func:`.float32_bounds.float32_pass_allowed`: its values plus a proven bound R
    (:func:`.float32_bounds.squared_distance_bound`) are upper bounds, and a point is recomputed in
    float64 against L before it can be a candidate (below), together with every point whose bound
    comes within 2R of τ. On clustered features whose R exceeds the gaps near the top, that is most of
    U, and the pass costs about 1.5× the float64 one; with TF32 or bfloat16 matmuls in force the pass
    is float64 from the start, so those settings cannot change the picks.

    Memory: ``features`` is only read, never copied, converted or modified
    (rows are widened to float64 block by block). The extra memory is a few
    O(N) vectors (distances, norms, indices: about 32 bytes per unlabeled point)
    plus row blocks: chunk_size gathered rows, the chunk_size candidates, one
    chunk_size × chunk_size block of distances, one block of at most 64 MiB
    (and N/16 rows) for the pass over all of U, and the labeled points (or the
    picks a refresh catches up on) gathered at most 64 MiB at a time. No N × N, |U| × |L| or |U| × d
    matrix is formed: at N = 1,000,000, d = 544 in float32 the peak is well under
    0.25× the input. Distances use ||x||² + ||y||² − 2x·y on rows centered by the
    pool mean as they are gathered (4× faster than explicit differences on CPU;
    centering shrinks the norms the round-off scales with) and are clamped at 0,
    so duplicates (small negative round-off) never give NaN; a distance within the float64
    round-off bound (:func:`.distances.round_off`) is 0, so copies of a point tie exactly.

    Exact lazy updates: a point's min distance only decreases as L grows, so
    a stale value is an upper bound. After each pick only the ``chunk_size``
    *candidates* (the highest values at the last refresh, all ≥ τ) are updated,
    with one chunk_size × d matrix-vector product. While the best candidate is
    still above τ, no other point (stale value ≤ τ) can beat it, so the pick is
    the exact Eq. 1 argmax. Otherwise a refresh takes the ``chunk_size``
    highest stored values and brings the stale ones among them up to date,
    repeating until the highest are all current. After the first pass against
    L only points near the top are ever updated, which matters on clustered
    features (e.g. near-duplicates), where picks use up the candidates within
    a few picks and refreshes are frequent.

    Raises ValueError for a budget larger than |U| or not positive, an empty L,
    a mask of the wrong length, chunk_size ≤ 0, non-finite features, or squared
    norms that overflow the working dtype.
    """
    budget = check_features(features, labeled_mask, budget, chunk_size, "coreset")
    rows = stream_rows(features, chunk_size)
    mean, unlabeled, labeled = prepare(features, labeled_mask, rows)
    norms_u = centered_norms(features, unlabeled, mean, rows, "coreset")
    largest = max(float(norms_u.max()), float(centered_norms(features, labeled, mean, rows, "coreset").max()))
    tol = round_off(features.shape[1], largest)
    # min_dist[r] is exact for L and picks[:applied[r]]: an upper bound once later picks exist. applied[r] = −1:
    # min_dist[r] is the float32 distance to L plus its bound, an upper bound too, made exact when r nears the top.
    min_dist, fast = _first_pass(features, mean, unlabeled, labeled, norms_u, largest, tol, rows, chunk_size)
    applied = torch.full_like(unlabeled, 0 if fast is None else -1)

    picks = torch.empty(budget, dtype=torch.long, device=features.device)  # positions in U, in pick order
    # Set at the first refresh (candidates is None until then).
    candidates = cand = cand_dist = threshold = first_left = None
    complete = False
    for i in range(budget):
        if candidates is not None:
            best, value = cand.best(cand_dist, tol, threshold)
        if candidates is None or (not complete and not beats_the_rest(
                value, threshold, candidates.index_select(0, best), first_left)):
            if candidates is not None:
                min_dist.index_copy_(0, candidates, cand_dist)
                applied.index_fill_(0, candidates, i)
            # Candidates: the k highest stored values (k ≤ points not yet picked, so τ ≥ 0), brought up
            # to date until none is stale; every other point's true value is then ≤ its stored one ≤ τ.
            k = min(chunk_size, len(unlabeled) - i)
            complete = k == len(unlabeled) - i  # every remaining point is a candidate: nothing is stale
            while True:
                candidates, threshold, first_left = top_candidates(min_dist, k)
                if fast is not None and bool((applied.index_select(0, candidates) < 0).any()):
                    # Exact distances to L for every bounded point that may still reach the top: each drops by
                    # at most 2R, so after this the candidates' values stay ≥ τ − 2R and no other bound reaches them.
                    near = ((applied < 0) & (min_dist >= threshold - 2.0 * fast.bound)).nonzero().squeeze(1)
                    min_dist.index_fill_(0, near, float("inf"))
                    lower_min_dist(min_dist, features, mean, unlabeled, norms_u, near, labeled, None, chunk_size, tol)
                    applied.index_fill_(0, near, 0)
                    continue
                stale = candidates[applied.index_select(0, candidates) < i]
                if len(stale) == 0:
                    break
                missed = picks[int(applied.index_select(0, stale).min()):i]  # a pick applied twice is harmless
                lower_min_dist(min_dist, features, mean, unlabeled, norms_u, stale, unlabeled.index_select(0, missed),
                               norms_u.index_select(0, missed), chunk_size, tol)
                applied.index_fill_(0, stale, i)
            cand = _Candidates(features, unlabeled.index_select(0, candidates), candidates, mean, norms_u, fast)
            cand_dist = min_dist.index_select(0, candidates)
            best, _ = cand.best(cand_dist, tol, threshold)
        picks[i:i + 1] = candidates.index_select(0, best)
        cand_dist.index_fill_(0, best, float("-inf"))  # picked: never again, and stays −inf below
        cand.lower(cand_dist, best, features, mean, tol)
    return unlabeled.index_select(0, picks)


@dataclass(frozen=True)
class _Float32Pass:
    """What the float32 first pass was computed with: R, the float32 mean its rows were centred on, and the
    float32 ||ũ||² of U; the candidates' per-pick distances are screened with the same."""

    bound: float
    mean32: torch.Tensor
    norms32: torch.Tensor


class _Candidates:
    """The candidates' centred rows and norms, and how a pick lowers their distances (``cand_dist``, float64).

    Without a float32 pass, one float64 matrix-vector product over the candidates, as in the float64 path.
    With one, the product is float32 and screens: a candidate whose float32 distance to the pick, less R,
    is not below its value cannot be lowered; the others (few, on most features) get their float64
    distance row by row, and are lowered by it.
    """

    def __init__(self, features: torch.Tensor, index: torch.Tensor, positions: torch.Tensor, mean: torch.Tensor,
                 norms_u: torch.Tensor, fast: _Float32Pass | None) -> None:
        self.index, self.fast = index, fast
        self.norms = norms_u.index_select(0, positions)
        if fast is None:
            self.rows = centered(features, index, mean)
        else:
            self.rows = centered(features, index, fast.mean32)
            self.norms32 = fast.norms32.index_select(0, positions)

    def best(self, cand_dist: torch.Tensor, tol: float, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index (1,) of the pick among the candidates, its value): the first largest value, or the first copy of
        it. Copies of a point (identical rows) are at the same distance, but their float64 values may differ
        in the last bits (a product's rounding depends on its shape), so the pick is the lowest-index copy of
        the largest. All its copies are candidates when the largest value less 2·tol clears τ (each is within
        2·tol of it); otherwise ties are exact equalities of the values, as :func:`.distances.top_candidates`
        cuts them."""
        best = torch.argmax(cand_dist).view(1)  # first maximal = lowest index (candidates are sorted)
        value = cand_dist.index_select(0, best)
        low = value - 2.0 * tol
        near = (cand_dist >= low).nonzero().squeeze(1)
        if len(near) > 1 and bool(low > threshold):
            copies = near[(self.rows.index_select(0, near) == self.rows.index_select(0, best)).all(1)]
            best = copies[:1]
        return best, value

    def lower(self, cand_dist: torch.Tensor, best: torch.Tensor, features: torch.Tensor, mean: torch.Tensor,
              tol: float) -> None:
        pick_norm = self.norms.index_select(0, best)
        if self.fast is None:
            dist = torch.addmv(self.norms, self.rows, self.rows.index_select(0, best).squeeze(0), alpha=-2.0)
            torch.minimum(cand_dist, zero_below(dist.add_(pick_norm).clamp_(min=0.0), tol), out=cand_dist)
            return
        screen = torch.addmv(self.norms32, self.rows, self.rows.index_select(0, best).squeeze(0), alpha=-2.0)
        screen = screen.add_(self.norms32.index_select(0, best)).to(cand_dist.dtype).sub_(self.fast.bound)
        maybe = (screen < cand_dist).nonzero().squeeze(1)
        if len(maybe) == 0:
            return
        pick = centered(features, self.index.index_select(0, best), mean).squeeze(0)
        rows = centered(features, self.index.index_select(0, maybe), mean)
        # Row by row: copies of a point must get the same distance to tie (a product's bits depend on its shape).
        dist = (rows * pick).sum(1).mul_(-2.0).add_(self.norms.index_select(0, maybe)).add_(pick_norm)
        dist = zero_below(dist.clamp_(min=0.0), tol)
        cand_dist.index_copy_(0, maybe, torch.minimum(cand_dist.index_select(0, maybe), dist))


SAMPLE = 256
"""Points of U whose exact distances to L estimate, before the first pass, how much of U a float32 pass would
leave to float64 (:func:`_near_fraction`); a few per cent of the pass at the paper's scale."""

NEAR_LIMIT = 0.4
"""Largest estimated fraction of U for the float32 pass: the float64 recomputation of that fraction plus the
float32 pass (about half a float64 one) must cost less than the float64 pass alone."""


def _first_pass(features: torch.Tensor, mean: torch.Tensor, unlabeled: torch.Tensor, labeled: torch.Tensor,
                norms_u: torch.Tensor, largest: float, tol: float, rows: int, chunk_size: int
                ) -> tuple[torch.Tensor, _Float32Pass | None]:
    """(min distance to L of every point of U, float64 (|U|,); the float32 pass, or None where the values are exact).

    In float32 when :func:`.float32_bounds.float32_pass_allowed` and it pays (:func:`_near_fraction` at
    most :data:`NEAR_LIMIT`): then each value is the float32 distance plus R =
    :func:`.float32_bounds.squared_distance_bound`, an upper bound of the float64 one. Else in float64
    with the float64 path's tolerance, as every later update is.
    """
    bound = None
    if float32_pass_allowed(features, largest):
        bound = squared_distance_bound(features.shape[1], largest, float(torch.linalg.vector_norm(mean)), tol)
        if _near_fraction(features, mean, unlabeled, labeled, norms_u, tol, bound, chunk_size) > NEAR_LIMIT:
            bound = None
    if bound is None:
        min_dist = torch.full_like(norms_u, float("inf"))
        lower_min_dist(min_dist, features, mean, unlabeled, norms_u, None, labeled, None, chunk_size, tol)
        return min_dist, None
    mean32 = mean.to(torch.float32)  # the bound's m₃₂: rows are centred on it, and their norms taken, in float32
    norms32 = centered_norms(features, unlabeled, mean32, rows, "coreset")
    min32 = torch.full_like(norms32, float("inf"))
    lower_min_dist(min32, features, mean32, unlabeled, norms32, None, labeled, None, chunk_size)
    return min32.to(mean.dtype).add_(bound), _Float32Pass(bound, mean32, norms32)


def _near_fraction(features: torch.Tensor, mean: torch.Tensor, unlabeled: torch.Tensor, labeled: torch.Tensor,
                   norms_u: torch.Tensor, tol: float, bound: float, chunk_size: int) -> float:
    """The fraction of :data:`SAMPLE` evenly spaced points of U (|U|/8 if fewer) whose exact distance to L
    is within 2R of the first refresh's τ (their chunk_size/|U| upper quantile): an estimate of the part of U
    that a float32 pass leaves to float64. Near 1 where R exceeds the gaps near the top (tight clusters)."""
    size = max(1, min(SAMPLE, len(unlabeled) // 8))  # an eighth of U at most: the estimate must stay cheap
    sample = torch.linspace(0, len(unlabeled) - 1, size, device=unlabeled.device).long()
    exact = torch.full_like(norms_u, float("inf"))
    lower_min_dist(exact, features, mean, unlabeled, norms_u, sample, labeled, None, chunk_size, tol)
    values = exact.index_select(0, sample)
    tau = torch.quantile(values, max(0.0, 1.0 - chunk_size / len(unlabeled)))
    return float((values >= tau - 2.0 * bound).double().mean())
