"""MedAL (Smailagic et al., 2018), the paper's Eq. 2: the point of largest mean squared distance to L.

The mean squared distance to the labeled set equals the squared distance to its centroid plus a
constant, so it is computed from a running centroid; each pick joins L before the next.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from .distances import (
    beats_the_rest, centered, centered_blocks, check_features, prepare, squared_norms, stream_rows, top_candidates,
)
from .float32_bounds import centroid_score_bound, float32_pass_allowed, float64_score_bound



_MEDAL_SLACK = 1e-3
"""Relative safety margin of medal_greedy's bound test: far above the round-off of the
squared distances (~1e-6 relative), so a rounded value never passes a test it should fail."""


def _centroid_scores(features: torch.Tensor, unlabeled: torch.Tensor, mean: torch.Tensor, base: torch.Tensor,
                     centroid: torch.Tensor, rows: int, fill_base: bool = False) -> torch.Tensor:
    """base − 2(u − mean)·centroid for every u = features[unlabeled[r]], ``rows`` rows at a time: float64 (|U|,).

    With ``fill_base``, base[r] ← ||u − mean||² first, from the same gathered block (the first
    refresh: one pass over U instead of two, and the same norms as a separate pass)."""
    score = torch.empty_like(base)
    for part, block in centered_blocks(features, unlabeled, mean, rows):
        if fill_base:
            base[part] = squared_norms(block, "medal")
        torch.addmv(base[part], block, centroid, alpha=-2.0, out=score[part])
    return score


def medal_greedy(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int,
                 chunk_size: int = 2048) -> torch.Tensor:
    """MedAL (Smailagic et al. 2018), Eq. 2: greedy max mean *squared* L2 distance to L.

    Squared L2 is used, as Eq. 2 is written. With c = (1/|L|) Σ_ℓ T_f(ℓ),

        (1/|L|) Σ_ℓ ||u − ℓ||² = ||u − c||² + (1/|L|) Σ_ℓ ||ℓ − c||²

    (expand ||(u − c) − (ℓ − c)||²; the cross term vanishes since Σ_ℓ (ℓ − c) = 0).
    The second term does not depend on u, so each pick is the unlabeled point
    farthest from the labeled centroid; the pick then joins L and the running
    centroid is updated. Plain (unsquared) L2 would average distances, not
    squared ones, and can pick differently; it is not what Eq. 2 says. Ties go
    to the lowest pool index. Shapes, dtypes and errors as in
    :func:`kcenter_greedy`; likewise ``features`` is never copied or modified,
    and the extra memory is a few O(N) vectors plus row blocks (at most
    64 MiB): about 0.06× a 1,000,000 × 544 float32 input. Picks are decided on float64 scores
    whatever the features' dtype, as :func:`.kcenter.kcenter_greedy`'s are, so float32 and float64
    features give the same picks (issue 22). For float32 features (with IEEE float32 matmuls,
    :func:`.float32_bounds.float32_pass_allowed`), the refreshes after the first and the per-pick
    scoring of the candidates rank in float32 first, within a proven bound e
    (:func:`.float32_bounds.centroid_score_bound`); only the candidates within 2e of the best are
    scored again in float64 (row by row, so that copies of a point tie), and a refresh whose best
    float64 score does not beat every other point's float32 score plus e is done again in float64, as is
    the rest of the call (e then exceeds the gaps at the top, and float32 would only add work).

    Lazy updates, as in :func:`kcenter_greedy`: a refresh computes every
    ||u − c_r|| (one pass over U, centering the rows block by block as they
    are gathered) and keeps the ``chunk_size`` farthest points (all ≥ τ) as
    candidates; later picks score only the candidates. By the triangle
    inequality no other point can be farther than τ + ||c − c_r|| from the
    current centroid c, so while the best candidate beats that bound (with a
    small safety margin against round-off) it is the exact Eq. 2 argmax;
    otherwise the next refresh comes first.
    """
    budget = check_features(features, labeled_mask, budget, chunk_size, "medal")
    rows = stream_rows(features, chunk_size)
    mean, unlabeled, labeled = prepare(features, labeled_mask, rows)
    base = torch.empty(len(unlabeled), dtype=mean.dtype, device=mean.device)  # ||u||², −inf once u is picked
    count = len(labeled)
    # The running sum of L is kept in float64 so the centroid does not drift over many picks.
    total = sum(features.index_select(0, part).sum(0, dtype=torch.float64) for part in labeled.split(rows))
    total -= count * mean.double()

    picks = torch.empty(budget, dtype=torch.long, device=features.device)  # positions in U, in pick order
    cand = threshold = first_left = refresh_centroid = fast_bound = largest = None  # set at the first refresh
    complete = False
    for i in range(budget):
        centroid64 = total / count
        if cand is not None:
            best, best_score, best_row = cand.best(features, unlabeled, mean, centroid64, largest)
        if cand is None or (not complete and not _bound_holds(best_score, cand.positions.index_select(0, best),
                                                             centroid64, threshold, refresh_centroid, first_left)):
            k = min(chunk_size, len(base) - i)  # ≤ points not yet picked, so the k-th score is finite
            complete = k == len(base) - i  # every remaining point is a candidate: no bound to check
            refreshed = False
            if fast_bound is not None:
                # Float32 scores rank the pool; the best candidate, scored in float64, must beat every other
                # point's float32 score plus its bound, strictly (and first_left 0 keeps later tests strict),
                # or a float64 refresh decides.
                dots = features.mv(centroid64.to(torch.float32)).index_select(0, unlabeled).to(mean.dtype)
                score = dots.sub_(mean.dot(centroid64)).mul_(-2.0).add_(base)
                positions, kth, first_left = top_candidates(score, k)
                kth = kth + fast_bound(float(torch.linalg.vector_norm(centroid64)))  # ≥ every other point's score
                threshold, first_left = _radius(kth, centroid64), torch.zeros_like(first_left)
                cand = _Candidates(positions, base, features, unlabeled, mean, fast_bound)
                best, best_score, best_row = cand.best(features, unlabeled, mean, centroid64, largest)
                # Scores compared as they are (no square root to round): the bound needs no slack here.
                refreshed = complete or bool(best_score > kth)
                if not refreshed:  # the bound exceeds the gaps at the top: float32 would only cost from here on
                    fast_bound = None
            if not refreshed:
                score = _centroid_scores(features, unlabeled, mean, base, centroid64, rows,
                                         fill_base=cand is None)
                if cand is None:
                    largest = float(base.max())  # the largest ||u − m||² of U, which the bounds scale with
                    if features.dtype == torch.float32 and float32_pass_allowed(features, largest):
                        fast_bound = partial(centroid_score_bound, features.shape[1], largest,
                                             float(torch.linalg.vector_norm(mean)))
                positions, kth, first_left = top_candidates(score, k)
                threshold = _radius(kth, centroid64)  # no other point is farther than τ from this centroid
                cand = _Candidates(positions, base, features, unlabeled, mean, fast_bound)
                best, best_score, best_row = cand.best(features, unlabeled, mean, centroid64, largest)
            refresh_centroid = centroid64
        pick = cand.positions.index_select(0, best)
        picks[i:i + 1] = pick
        cand.base.index_fill_(0, best, float("-inf"))
        base.index_fill_(0, pick, float("-inf"))
        total += best_row
        count += 1
    return unlabeled.index_select(0, picks)


class _Candidates:
    """The points a refresh keeps (``positions`` in U, sorted) and how to score them against a centroid.

    Without a float32 bound their rows are kept centred in float64 and scored with one matrix-vector
    product. With one (``bound``: e as a function of ||c||), their raw float32 rows are scored in float32.
    Either way the candidates within twice the product's error bound of the best are scored again in
    float64 row by row, and the best of those is the pick: a matrix-vector product's rounding depends on
    where a row sits in the matrix, and copies of a point must score the same to tie (then the lowest
    index wins). Where that is more than a quarter of the candidates, float32 screening does not pay, and
    the candidates' rows are centred in float64 once."""

    def __init__(self, positions: torch.Tensor, base: torch.Tensor, features: torch.Tensor, unlabeled: torch.Tensor,
                 mean: torch.Tensor, bound: Callable[[float], float] | None) -> None:
        self.positions, self.bound = positions, bound
        self.base = base.index_select(0, positions)  # ||u − m||², −inf once picked
        self.index = unlabeled.index_select(0, positions)
        self.rows = features.index_select(0, self.index) if bound is not None else centered(features, self.index, mean)

    def best(self, features: torch.Tensor, unlabeled: torch.Tensor, mean: torch.Tensor, centroid64: torch.Tensor,
             largest: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(index of the best candidate (1,), its float64 score ||u − m||² − 2(u − m)·c, its centred float64 row).

        Ties go to the lowest index; ``centroid64`` is c, float64, centred on the mean; ``largest`` bounds
        ||u − m||²."""
        centroid_norm = float(torch.linalg.vector_norm(centroid64))
        if self.bound is not None:
            fast = self.rows.mv(centroid64.to(torch.float32)).to(mean.dtype)
            fast = fast.sub_(mean.dot(centroid64)).mul_(-2.0).add_(self.base)
            near = (fast >= fast.max() - 2.0 * self.bound(centroid_norm)).nonzero().squeeze(1)
            if 4 * len(near) <= len(self.positions):
                return self._rescored(near, None, features, mean, centroid64)
            self.rows, self.bound = centered(features, self.index, mean), None
        score = torch.addmv(self.base, self.rows, centroid64, alpha=-2.0)
        near = (score >= score.max() - 2.0 * float64_score_bound(features.shape[1], largest, centroid_norm))
        return self._rescored(near.nonzero().squeeze(1), self.rows, features, mean, centroid64)

    def _rescored(self, near: torch.Tensor, rows: torch.Tensor | None, features: torch.Tensor, mean: torch.Tensor,
                  centroid64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The best of the candidates ``near`` (sorted), scored row by row from their float64 centred rows."""
        rows = (centered(features, self.index.index_select(0, near), mean) if rows is None
                else rows.index_select(0, near))
        score = (rows * centroid64).sum(1).mul_(-2.0).add_(self.base.index_select(0, near))
        j = torch.argmax(score).view(1)
        return near.index_select(0, j), score.index_select(0, j), rows.index_select(0, j).squeeze(0)


def _radius(kth: torch.Tensor, centroid64: torch.Tensor) -> torch.Tensor:
    """τ = √(kth + ||c||²): a score ||u − m||² − 2(u − m)·c ≤ kth means ||u − c|| ≤ τ."""
    return (kth.double() + centroid64.dot(centroid64)).clamp(min=0.0).sqrt()


def _bound_holds(best_score: torch.Tensor, position: torch.Tensor, centroid64: torch.Tensor,
                 threshold: torch.Tensor, refresh_centroid: torch.Tensor, first_left: torch.Tensor) -> bool:
    """Whether the best candidate's ||u − c||² beats every other point's bound: no point outside the candidates
    is farther than τ from the refresh's centroid, so none is farther than τ + ||c − c_r|| from c."""
    return beats_the_rest(best_score.double() + centroid64.dot(centroid64),
                          (threshold + torch.linalg.vector_norm(centroid64 - refresh_centroid)) ** 2
                          * (1 + _MEDAL_SLACK), position, first_left)
