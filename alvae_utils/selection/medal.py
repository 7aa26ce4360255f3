"""MedAL (Smailagic et al., 2018), the paper's Eq. 2: the point of largest mean squared distance to L.

The mean squared distance to the labeled set equals the squared distance to its centroid plus a
constant, so it is computed from a running centroid; each pick joins L before the next.
"""

from __future__ import annotations

import math

import torch

from .distances import (
    centered, centered_blocks, centered_norms, check_features, exact_squared_distances, prepare, stream_rows,
    top_candidates,
)
from .precision import fast_form_error, working_dtype

def _centroid_scores(features: torch.Tensor, unlabeled: torch.Tensor, mean: torch.Tensor, base: torch.Tensor,
                     centroid: torch.Tensor, rows: int) -> torch.Tensor:
    """base − 2(u − mean)·centroid for every u = features[unlabeled[r]], ``rows`` rows at a time."""
    score = torch.empty_like(base)
    for part, block in centered_blocks(features, unlabeled, mean, rows):
        torch.addmv(base[part], block, centroid, alpha=-2.0, out=score[part])
    return score


def medal_greedy(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int,
                 chunk_size: int = 2048) -> torch.Tensor:
    """MedAL (Smailagic et al. 2018), the paper's Eq. 2: greedy max mean *squared* L2 distance to L.

    Squared L2 is used, as Eq. 2 is written. With c = (1/|L|) Σ_ℓ T_f(ℓ),

        (1/|L|) Σ_ℓ ||u − ℓ||² = ||u − c||² + (1/|L|) Σ_ℓ ||ℓ − c||²

    (expand ||(u − c) − (ℓ − c)||²; the cross term vanishes since Σ_ℓ (ℓ − c) = 0).
    The second term does not depend on u, so each pick is the unlabeled point
    farthest from the labeled centroid; the pick then joins L and the running
    centroid (a float64 sum) is updated. Plain (unsquared) L2 would average
    distances, not squared ones, and can pick differently; it is not what Eq. 2
    says. Ties go to the lowest pool index. Shapes, dtypes and errors as in
    :func:`.kcenter.kcenter_greedy`; likewise ``features`` is never copied or modified,
    and the extra memory is a few O(N) vectors plus row blocks (at most
    64 MiB): about 0.05× a 1,000,000 × 544 float32 input.

    Exact as :func:`.kcenter.kcenter_greedy` is: scores are computed fast, as
    ||ũ||² − 2ũ·c̃ (ũ = u − mean, c̃ = c − mean, in the working dtype), within
    R = κ(max ||ũ||² + ||c̃||²) of ||u − c||² − ||c̃||² (:func:`.precision.fast_form_error`);
    when several candidates are within 2R of the best, their exact ||u − c||²,
    from float64 differences, decide.

    Lazy updates: a refresh scores all of U against the current centroid c_r
    (one pass, centering rows block by block as they are gathered) and keeps the
    ``chunk_size`` farthest points as candidates; later picks score only the
    candidates. By the triangle inequality no other point is farther from the
    current centroid c than ρ + ||c − c_r||, ρ being the largest exact distance
    to c_r the fast scores allow outside the candidates. While the pick's exact
    value beats that bound it is the exact Eq. 2 argmax; otherwise a refresh
    comes first (twice the candidates if they were fresh).
    """
    budget = check_features(features, labeled_mask, budget, chunk_size, "medal")
    dtype = working_dtype(features)
    rows = stream_rows(features, chunk_size, dtype)
    mean, unlabeled, labeled = prepare(features, labeled_mask, rows, dtype)
    base = centered_norms(features, unlabeled, mean, rows, "medal")  # ||ũ||², −inf once u is picked
    kappa, norm_bound = fast_form_error(dtype, features.shape[1]), float(base.max())
    mean64 = mean.to(torch.float64)
    count = len(labeled)
    # The running sum of L is kept in float64 so the centroid does not drift and is exact to float64 round-off.
    total = sum(features.index_select(0, part).sum(0, dtype=torch.float64) for part in labeled.split(rows))

    picks = torch.empty(budget, dtype=torch.long, device=features.device)  # positions in U, in pick order
    candidates = refresh_centroid = None  # set, with cand_*, reach and complete, at the first refresh
    k = chunk_size
    for i in range(budget):
        centroid = total / count
        shift = centroid - mean64
        drift = (centroid - refresh_centroid) if candidates is not None else torch.zeros_like(shift)
        spread, moved = torch.stack([shift.dot(shift), torch.linalg.vector_norm(drift)]).tolist()
        radius = kappa * (norm_bound + spread)
        shift_w = shift.to(dtype)
        fresh = False
        while True:
            if candidates is None:
                score = _centroid_scores(features, unlabeled, mean, base, shift_w, rows)
                k = min(k, len(unlabeled) - i)  # ≤ points not yet picked, so the k-th score is finite
                complete = k == len(unlabeled) - i  # every remaining point is a candidate: no bound to check
                candidates, kth = top_candidates(score, k)
                # ρ: no other point's exact squared distance to this centroid exceeds kth + ||c̃||² + R.
                reach, refresh_centroid, moved = math.sqrt(max(kth + spread + radius, 0.0)), centroid, 0.0
                cand_ids = unlabeled.index_select(0, candidates)
                cand_x = centered(features, cand_ids, mean)
                cand_base = base.index_select(0, candidates)
                score = score.index_select(0, candidates)
                fresh = True
            else:
                score = torch.addmv(cand_base, cand_x, shift_w, alpha=-2.0)
            best_fast = float(score.max())
            contenders = (score >= best_fast - 2 * radius).nonzero().squeeze(1)
            if len(contenders) == 1:
                best, value = contenders, best_fast + spread - radius  # a lower bound of its exact value
            else:
                exact = exact_squared_distances(features, cand_ids.index_select(0, contenders), centroid)
                top = torch.argmax(exact)  # first maximal = lowest index (candidates are sorted)
                best, value = contenders[top].view(1), float(exact[top])
            if complete or value > (reach + moved) ** 2:
                break
            k *= 2 if fresh else 1  # twice the candidates, from then on, if they were fresh
            candidates = None
        pick = candidates.index_select(0, best)
        picks[i:i + 1] = pick
        cand_base.index_fill_(0, best, float("-inf"))
        base.index_fill_(0, pick, float("-inf"))
        total += features.index_select(0, cand_ids.index_select(0, best)).squeeze(0).to(torch.float64)
        count += 1
    return unlabeled.index_select(0, picks)
