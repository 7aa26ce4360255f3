"""Core-set (Sener & Savarese, ICLR 2018): greedy k-center, the paper's Eq. 1.

Each unlabeled point keeps its few nearest labeled points (O(N) memory, :mod:`.nearest`), filled
with chunked distances to the labeled set, then updated after each pick, which joins the labeled
set before the next. Picks are exact in float32: fast distances shortlist, exact ones decide.
"""

from __future__ import annotations

import torch

from .distances import centered, centered_norms, check_features, prepare, row_blocks, stream_rows, top_candidates
from .nearest import TRACKED, catch_up, exact_min_dist, limit, lower_nearest, merge_nearest
from .precision import fast_form_error, working_dtype

_LOOKAHEAD = 8
"""Unknown exact values are measured for every candidate within _LOOKAHEAD · 2R of the best fast
value, not only for the contenders (2R), where that takes no pass over L: one batch then also
serves the next picks' contenders."""


def kcenter_greedy(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int,
                   chunk_size: int = 2048) -> torch.Tensor:
    """Core-set (Sener & Savarese 2018), the paper's Eq. 1: greedy k-center on squared L2.

    ``features`` is (N, d), any real dtype, on any device; ``labeled_mask`` a bool
    (N,) tensor; returns the ``budget`` picked pool indices (int64, (budget,)) in
    pick order. Each pick is u* = argmax_{u∈U} min_{ℓ∈L} ||T_f(u) − T_f(ℓ)||² and
    then joins L before the next pick. Squaring does not change the argmax, so
    this is also the pick under plain L2. Ties go to the lowest pool index.

    **Exact in any precision.** Every pick is the argmax of the exact distances
    (up to float64 round-off), so float32, float16 and float64 features holding
    the same numbers give the same picks, whatever the matmul precision settings.
    Distances are computed fast, as ||x̃||² + ||ỹ||² − 2x̃·ỹ on rows centered by
    the pool mean (x̃ = x − mean), clamped at 0: in float32 for float32 and
    narrower features; in float64 for others, and whenever PyTorch may round
    float32 products to TF32 or bfloat16. Each fast value is within a proven
    radius R = 2κ · max ||x̃||² of the exact one (κ ≈ 3.3 d·2⁻²⁴ in float32, see
    :func:`.precision.fast_form_error`), so only points whose fast value is within 2R of the
    best can be the argmax. When there are several, their exact min distances,
    from float64 differences, decide. Each point tracks its 3 nearest points by
    fast distance: when the third is more than 2R beyond the first, the nearest
    is among the first two, and two exact distances give the exact value; only
    otherwise are all points within reach found by a pass over L and the picks.
    A known exact value is kept up to date as picks land within reach of it.

    Memory: ``features`` is only read, never copied, converted or modified
    (narrower dtypes are widened block by block). The extra memory is a few O(N)
    vectors (the 3 nearest distances and points, the exact value, norms, indices:
    about 64 bytes per unlabeled point) plus row blocks: chunk_size gathered rows,
    the chunk_size candidates, one chunk_size × chunk_size block of distances,
    and one block of at most 64 MiB (and N/16 rows) for the pass over all of U.
    No N × N, |U| × |L| or |U| × d matrix is formed: at N = 1,000,000, d = 544
    in float32 the peak is well under 0.25× the input.

    Exact lazy updates: a point's min distance only decreases as L grows, so
    a stale value is an upper bound. After each pick only the ``chunk_size``
    *candidates* (the highest values at the last refresh, all ≥ τ) are updated,
    with one chunk_size × d matrix-vector product. While the pick's exact value
    exceeds τ + R, no other point (stale value ≤ τ) can beat it. Otherwise a
    refresh takes the ``chunk_size`` highest stored values and brings the stale
    ones among them up to date, repeating until the highest are all current (and
    doubling the candidates if even that leaves the pick undecided). After the
    first pass against L only points near the top are ever updated, which
    matters on clustered features (e.g. near-duplicates), where picks use up the
    candidates within a few picks and refreshes are frequent.

    Raises ValueError for a budget larger than |U| or not positive, an empty L,
    a mask of the wrong length, chunk_size ≤ 0, non-finite features, or squared
    norms that overflow the working dtype.
    """
    budget = check_features(features, labeled_mask, budget, chunk_size, "coreset")
    dtype = working_dtype(features)
    rows = stream_rows(features, chunk_size, dtype)
    mean, unlabeled, labeled = prepare(features, labeled_mask, rows, dtype)
    norms_u = centered_norms(features, unlabeled, mean, rows, "coreset")
    norms_l = centered_norms(features, labeled, mean, rows, "coreset")
    # Every fast squared distance between two points is within `radius` of the exact one.
    radius = 2 * fast_form_error(dtype, features.shape[1]) * float(torch.maximum(norms_u.max(), norms_l.max()))
    near = (torch.full((len(unlabeled), TRACKED), float("inf"), dtype=dtype, device=features.device),
            torch.zeros((len(unlabeled), TRACKED), dtype=torch.long, device=features.device),
            torch.full((len(unlabeled),), float("nan"), dtype=torch.float64, device=features.device))
    lower_nearest(near, features, mean, unlabeled, norms_u, None,
                   row_blocks(features, labeled, mean, chunk_size, norms_l), chunk_size, radius)

    picks = torch.empty(budget, dtype=torch.long, device=features.device)  # positions in U, in pick order
    # near[·][r] is exact for L and the first applied[r] picks; its distances are upper bounds after later picks.
    applied = torch.zeros(len(unlabeled), dtype=torch.long, device=features.device)
    candidates = None  # set, with cand_*, threshold and complete, at the first refresh
    k = chunk_size
    for i in range(budget):
        fresh = False
        while True:
            if candidates is None:
                # Candidates: the k highest stored values (k ≤ points not yet picked, so τ ≥ 0), brought up
                # to date until none is stale; every other point's exact value is then ≤ τ + radius.
                k = min(k, len(unlabeled) - i)
                complete = k == len(unlabeled) - i  # every remaining point is a candidate: nothing to bound
                while True:
                    candidates, threshold = top_candidates(near[0][:, 0], k)
                    seen = applied.index_select(0, candidates)
                    behind = (seen < i).nonzero().squeeze(1)
                    if len(behind) == 0:
                        break
                    stale = candidates.index_select(0, behind)
                    picked = unlabeled.index_select(0, picks[:i]), norms_u.index_select(0, picks[:i])
                    catch_up(near, features, mean, unlabeled, norms_u, stale, seen.index_select(0, behind), picked,
                              chunk_size, radius)
                    applied.index_fill_(0, stale, i)
                cand_ids = unlabeled.index_select(0, candidates)
                cand_x = centered(features, cand_ids, mean)
                cand_norms = norms_u.index_select(0, candidates)
                cand_near = tuple(t.index_select(0, candidates) for t in near)
                cand_limit = limit(cand_near, radius)
                fresh = True
            first, cand_exact = cand_near[0][:, 0], cand_near[2]
            head = torch.topk(first, min(2, k))
            best_fast, *runner_up = head.values.tolist()
            if not runner_up or runner_up[0] < best_fast - 2 * radius:  # one contender: the fast argmax
                best, value = head.indices[:1], best_fast - radius  # a lower bound of its exact value
            else:
                # Contenders: within 2R of the best fast value. Their exact values decide; an unknown
                # one counts as +inf, so that the argmax finds it, and the unknown ones are measured.
                contender = first >= best_fast - 2 * radius
                key = torch.where(contender, cand_exact.nan_to_num(nan=float("inf")), float("-inf"))
                best = torch.argmax(key).view(1)  # first maximal = lowest index (candidates are sorted)
                value = float(key.index_select(0, best))
                if value == float("inf"):
                    ahead = first >= best_fast - 2 * _LOOKAHEAD * radius
                    unknown = (ahead & cand_exact.isnan()).nonzero().squeeze(1)
                    required = contender.index_select(0, unknown)
                    picked = unlabeled.index_select(0, picks[:i]), norms_u.index_select(0, picks[:i])
                    cand_exact.index_copy_(0, unknown, exact_min_dist(
                        features, mean, cand_ids.index_select(0, unknown), cand_x.index_select(0, unknown),
                        cand_norms.index_select(0, unknown), tuple(t.index_select(0, unknown) for t in cand_near),
                        ((labeled, norms_l), picked), radius, chunk_size, required))
                    cand_limit.index_copy_(0, unknown, limit(tuple(t.index_select(0, unknown) for t in cand_near),
                                                              radius))
                    key = torch.where(contender, cand_exact, float("-inf"))
                    best = torch.argmax(key).view(1)
                    value = float(key.index_select(0, best))
            if complete or value > threshold + radius:
                break
            # A point outside the candidates may be as far: refresh, with twice the candidates (from
            # then on) if they were fresh.
            for target, values in zip(near, cand_near, strict=True):
                target.index_copy_(0, candidates, values)
            applied.index_fill_(0, candidates, i)
            k *= 2 if fresh else 1
            candidates = None
        picks[i:i + 1] = candidates.index_select(0, best)
        cand_near[0][:, 0].index_fill_(0, best, float("-inf"))  # picked: never again, and stays −inf below
        dist = torch.addmv(cand_norms, cand_x, cand_x.index_select(0, best).squeeze(0), alpha=-2.0)
        dist.add_(cand_norms.index_select(0, best)).clamp_(min=0.0).index_fill_(0, best, float("inf"))
        touched = (dist < cand_limit).nonzero().squeeze(1)  # the rows the pick changes
        if len(touched):
            merged = merge_nearest(tuple(t.index_select(0, touched) for t in cand_near),
                                    dist.index_select(0, touched).unsqueeze(1),
                                    cand_ids.index_select(0, best).expand(len(touched), 1), radius, features,
                                    cand_ids.index_select(0, touched), everything=True)
            for target, changed in zip(cand_near, merged, strict=True):
                target.index_copy_(0, touched, changed)
            cand_limit.index_copy_(0, touched, limit(merged, radius))
    return unlabeled.index_select(0, picks)
