"""MedAL (Smailagic et al., 2018), the paper's Eq. 2: the point of largest mean squared distance to L.

The mean squared distance to the labeled set equals the squared distance to its centroid plus a
constant, so it is computed from a running centroid; each pick joins L before the next.
"""

from __future__ import annotations


import torch
from .distances import (
    beats_the_rest, centered, centered_blocks, check_features, prepare, squared_norms, stream_rows, top_candidates,
)



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
    64 MiB): about 0.06× a 1,000,000 × 544 float32 input. Scores are computed in float64
    whatever the features' dtype, as :func:`.kcenter.kcenter_greedy`'s distances are, so
    float32 and float64 features give the same picks (issue 22).

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
    # Set at the first refresh (candidates is None until then).
    candidates = cand_x = cand_base = threshold = first_left = refresh_centroid = None
    complete = False
    for i in range(budget):
        centroid64 = total / count
        centroid = centroid64.to(mean.dtype)
        # ||u||² − 2u·c = ||u − c||² − ||c||²: the same order as ||u − c||², computed in one product.
        if candidates is not None:
            score = torch.addmv(cand_base, cand_x, centroid, alpha=-2.0)
            best = torch.argmax(score).view(1)  # first maximal = lowest index (candidates are sorted)
        if candidates is None or (not complete and not beats_the_rest(
                score.index_select(0, best).double() + centroid64.dot(centroid64),
                (threshold + torch.linalg.vector_norm(centroid64 - refresh_centroid)) ** 2 * (1 + _MEDAL_SLACK),
                candidates.index_select(0, best), first_left)):
            score = _centroid_scores(features, unlabeled, mean, base, centroid, rows, fill_base=candidates is None)
            k = min(chunk_size, len(base) - i)  # ≤ points not yet picked, so the k-th score is finite
            complete = k == len(base) - i  # every remaining point is a candidate: no bound to check
            candidates, kth, first_left = top_candidates(score, k)
            # τ: no other point is farther than τ from this centroid.
            threshold = (kth.double() + centroid64.dot(centroid64)).clamp(min=0.0).sqrt()
            refresh_centroid = centroid64
            cand_x = centered(features, unlabeled.index_select(0, candidates), mean)
            cand_base = base.index_select(0, candidates)
            score = score.index_select(0, candidates)
            best = torch.argmax(score).view(1)
        pick = candidates.index_select(0, best)
        picks[i:i + 1] = pick
        cand_base.index_fill_(0, best, float("-inf"))
        base.index_fill_(0, pick, float("-inf"))
        total += cand_x.index_select(0, best).squeeze(0)
        count += 1
    return unlabeled.index_select(0, picks)


