"""Selection heuristics H of Algorithm 1 (step 6): which β unlabeled points to label next.

Every function takes tensors on any device, works on that device, and returns
int64 pool indices **in pick order**: unique, never labeled, exactly ``budget``
long. ``labeled_mask`` is a bool (N,) tensor marking L; U is its complement.

* :func:`kcenter_greedy` — core-set, Eq. 1 (greedy k-center).
* :func:`medal_greedy` — MedAL, Eq. 2 (mean squared distance = distance to the centroid).
* :func:`initial_labeled_indices` — Algorithm 1's ξ initial labels, from the seed alone.
* :func:`random_select`, :func:`entropy_scores` + :func:`top_k_select` — baselines;
  :func:`top_k_select` also ranks loss prediction's predicted losses (Eq. 3–4).
* :func:`augment_features` — Eq. 6's [T_f(u) ⁀ α·V(u)]; :func:`balanced_alpha` — the α that
  gives both blocks the same mean squared distance between pool points.

These are the algorithms; :mod:`alvae_utils.heuristics` registers each under its name.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator

import torch

from .data import MULTICLASS, MULTILABEL
from .seeds import ALPHA, INITIAL_LABELS, derive_seed


def _check_pool(labeled_mask: torch.Tensor, budget: int, n: int | None = None) -> int:
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


def _check_features(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int, chunk_size: int,
                    heuristic: str) -> int:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError(f"{heuristic}: features must be a 2-D tensor (N, d), got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)}.")
    budget = _check_pool(labeled_mask, budget, features.shape[0])
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


_STREAM_BYTES = 64 << 20
"""Largest row block of the passes over all of U (squared norms, MedAL's refreshes). Each op on
a block costs milliseconds of thread hand-off on a busy CPU, so few large blocks are much
faster than many small ones; no block holds more than 1/16 of the rows."""


def _stream_rows(features: torch.Tensor, chunk_size: int) -> int:
    """Rows per block of a pass over all points: ≤ _STREAM_BYTES and ≤ N/16, but ≥ chunk_size."""
    n, d = features.shape
    row_bytes = max(d, 1) * max(features.element_size(), 4)  # narrower rows are widened to float32
    return max(chunk_size, min(n // 16, _STREAM_BYTES // row_bytes))


def _prepare(features: torch.Tensor, labeled_mask: torch.Tensor, rows: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean of the features, indices of U, indices of L), on the features' device; nothing of size N × d.

    The mean is in the working dtype: the features' own, or float32 for narrower
    or integer ones (half precision cannot hold squared norms of real features).
    It is summed ``rows`` rows at a time because a whole-tensor reduction with a
    dtype converts the whole tensor first. Callers subtract it from the rows
    they gather (:func:`_centered_blocks`): distances are translation invariant,
    and centering shrinks ||x||², which is what the rounding error of
    ||x||² + ||y||² − 2x·y scales with. An approximate mean does as well as the exact one.
    """
    is_wide = features.is_floating_point() and torch.finfo(features.dtype).bits >= 32
    dtype = features.dtype if is_wide else torch.float32
    mean = sum(block.sum(0, dtype=dtype) for block in features.split(rows)) / features.shape[0]
    mask = labeled_mask.to(features.device)
    return mean, (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


def _centered(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """features[index] − mean, in the mean's dtype, as a new (|index|, d) tensor."""
    return features.index_select(0, index).to(mean.dtype).sub_(mean)


def _centered_blocks(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, rows: int
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


def _squared_norms(x: torch.Tensor, heuristic: str) -> torch.Tensor:
    norms = torch.einsum("ij,ij->i", x, x)  # row-wise dot products without an (N, d) temporary
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(f"{heuristic}: squared feature norms overflow {x.dtype}; "
                         "rescale the features or pass float64.")
    return norms


def _centered_norms(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, rows: int,
                    heuristic: str) -> torch.Tensor:
    """||features[i] − mean||² for i in ``index``."""
    norms = torch.empty(len(index), dtype=mean.dtype, device=mean.device)
    for part, block in _centered_blocks(features, index, mean, rows):
        norms[part] = _squared_norms(block, heuristic)
    return norms


def _row_blocks(features: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, chunk_size: int,
                norms: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (rows, their squared norms) of ``features[index] − mean`` chunk by chunk.

    ``norms``, if given, are those of ``index`` in the same order; otherwise they are computed.
    """
    for part, rows in _centered_blocks(features, index, mean, chunk_size):
        yield rows, (_squared_norms(rows, "coreset") if norms is None else norms[part])


def _lower_min_dist(min_dist: torch.Tensor, features: torch.Tensor, mean: torch.Tensor, unlabeled: torch.Tensor,
                    norms_u: torch.Tensor, rows: torch.Tensor | None,
                    points: Iterable[tuple[torch.Tensor, torch.Tensor]], chunk_size: int) -> None:
    """min_dist[r] ← min(min_dist[r], min_q ||u_r − q||²) for r in ``rows`` (None: all), q in ``points``.

    u_r = features[unlabeled[r]] − mean, gathered chunk_size rows at a time.
    Works in chunk_size × chunk_size blocks of ||u||² + ||q||² − 2u·q (clamped at 0),
    so no |rows| × d copy and no |rows| × |points| matrix is ever formed.
    """
    positions = unlabeled if rows is None else unlabeled.index_select(0, rows)
    for block, block_norms in points:
        for part, x_part in _centered_blocks(features, positions, mean, chunk_size):
            if rows is None:
                norms_part, current = norms_u[part], min_dist[part]
            else:
                part = rows[part]
                norms_part, current = norms_u.index_select(0, part), min_dist.index_select(0, part)
            # min over q of (||q||² − 2u·q), then + ||u||²: one addition per row instead of per pair.
            dist = torch.addmm(block_norms.unsqueeze(0), x_part, block.T, alpha=-2.0).amin(1)
            torch.minimum(current, dist.add_(norms_part).clamp_(min=0.0), out=current)
            if rows is not None:
                min_dist.index_copy_(0, part, current)


def _top_candidates(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _beats_the_rest(score: torch.Tensor, bound: torch.Tensor, position: torch.Tensor, first_left: torch.Tensor) -> bool:
    """Whether a candidate's ``score`` at ``position`` is the exact argmax (ties → lowest position)
    when no point outside the candidates scores above ``bound``, and any at ``bound`` sits at
    ``first_left`` or later. One host synchronisation."""
    return bool((score > bound) | ((score == bound) & (position < first_left)))


def kcenter_greedy(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int,
                   chunk_size: int = 2048) -> torch.Tensor:
    """Core-set (Sener & Savarese 2018), Eq. 1: greedy k-center on squared L2.

    ``features`` is (N, d), any real dtype, on any device; ``labeled_mask`` a bool
    (N,) tensor; returns the ``budget`` picked pool indices (int64, (budget,)) in
    pick order. Each pick is u* = argmax_{u∈U} min_{ℓ∈L} ||T_f(u) − T_f(ℓ)||² and
    then joins L before the next pick. Squaring does not change the argmax, so
    this is also the pick under plain L2. Ties go to the lowest pool index.

    Memory: ``features`` is only read, never copied, converted or modified
    (narrower dtypes such as float16 are widened to float32 block by block).
    The extra memory is a few O(N) vectors (distances, norms, indices: about
    30 bytes per unlabeled point) plus row blocks: chunk_size gathered rows, the
    chunk_size candidates, one chunk_size × chunk_size block of distances, and
    one block of at most 64 MiB (and N/16 rows) for the pass over all of U. No
    N × N, |U| × |L| or |U| × d matrix is formed: at N = 1,000,000, d = 544 in
    float32 the peak is about 0.05× the input. Distances use ||x||² + ||y||² −
    2x·y on rows centered by the pool mean as they are gathered (4× faster than
    explicit differences on CPU; centering keeps float32 exact when the features
    share a large offset) and are clamped at 0, so duplicates (small negative
    round-off) never give NaN.

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
    budget = _check_features(features, labeled_mask, budget, chunk_size, "coreset")
    rows = _stream_rows(features, chunk_size)
    mean, unlabeled, labeled = _prepare(features, labeled_mask, rows)
    norms_u = _centered_norms(features, unlabeled, mean, rows, "coreset")
    min_dist = torch.full_like(norms_u, float("inf"))
    _lower_min_dist(min_dist, features, mean, unlabeled, norms_u, None,
                    _row_blocks(features, labeled, mean, chunk_size), chunk_size)

    picks = torch.empty(budget, dtype=torch.long, device=features.device)  # positions in U, in pick order
    # min_dist[r] is exact for L and picks[:applied[r]]: an upper bound once later picks exist.
    applied = torch.zeros(len(unlabeled), dtype=torch.long, device=features.device)
    # Set at the first refresh (candidates is None until then).
    candidates = cand_x = cand_norms = cand_dist = threshold = first_left = None
    complete = False
    for i in range(budget):
        if candidates is not None:
            best = torch.argmax(cand_dist).view(1)  # first maximal = lowest index (candidates are sorted)
        if candidates is None or (not complete and not _beats_the_rest(
                cand_dist.index_select(0, best), threshold, candidates.index_select(0, best), first_left)):
            if candidates is not None:
                min_dist.index_copy_(0, candidates, cand_dist)
                applied.index_fill_(0, candidates, i)
            # Candidates: the k highest stored values (k ≤ points not yet picked, so τ ≥ 0), brought up
            # to date until none is stale; every other point's true value is then ≤ its stored one ≤ τ.
            k = min(chunk_size, len(unlabeled) - i)
            complete = k == len(unlabeled) - i  # every remaining point is a candidate: nothing is stale
            while True:
                candidates, threshold, first_left = _top_candidates(min_dist, k)
                stale = candidates[applied.index_select(0, candidates) < i]
                if len(stale) == 0:
                    break
                missed = picks[int(applied.index_select(0, stale).min()):i]  # a pick applied twice is harmless
                missed_blocks = _row_blocks(features, unlabeled.index_select(0, missed), mean, chunk_size,
                                            norms=norms_u.index_select(0, missed))
                _lower_min_dist(min_dist, features, mean, unlabeled, norms_u, stale, missed_blocks, chunk_size)
                applied.index_fill_(0, stale, i)
            cand_x = _centered(features, unlabeled.index_select(0, candidates), mean)
            cand_norms = norms_u.index_select(0, candidates)
            cand_dist = min_dist.index_select(0, candidates)
            best = torch.argmax(cand_dist).view(1)
        picks[i:i + 1] = candidates.index_select(0, best)
        cand_dist.index_fill_(0, best, float("-inf"))  # picked: never again, and stays −inf below
        dist = torch.addmv(cand_norms, cand_x, cand_x.index_select(0, best).squeeze(0), alpha=-2.0)
        dist.add_(cand_norms.index_select(0, best)).clamp_(min=0.0)
        torch.minimum(cand_dist, dist, out=cand_dist)
    return unlabeled.index_select(0, picks)


_MEDAL_SLACK = 1e-3
"""Relative safety margin of medal_greedy's bound test: far above float32 round-off of the
squared distances (~1e-6 relative), so a rounded value never passes a test it should fail."""


def _centroid_scores(features: torch.Tensor, unlabeled: torch.Tensor, mean: torch.Tensor, base: torch.Tensor,
                     centroid: torch.Tensor, rows: int) -> torch.Tensor:
    """base − 2(u − mean)·centroid for every u = features[unlabeled[r]], ``rows`` rows at a time."""
    score = torch.empty_like(base)
    for part, block in _centered_blocks(features, unlabeled, mean, rows):
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
    64 MiB): about 0.05× a 1,000,000 × 544 float32 input.

    Lazy updates, as in :func:`kcenter_greedy`: a refresh computes every
    ||u − c_r|| (one pass over U, centering the rows block by block as they
    are gathered) and keeps the ``chunk_size`` farthest points (all ≥ τ) as
    candidates; later picks score only the candidates. By the triangle
    inequality no other point can be farther than τ + ||c − c_r|| from the
    current centroid c, so while the best candidate beats that bound (with a
    small safety margin against round-off) it is the exact Eq. 2 argmax;
    otherwise the next refresh comes first.
    """
    budget = _check_features(features, labeled_mask, budget, chunk_size, "medal")
    rows = _stream_rows(features, chunk_size)
    mean, unlabeled, labeled = _prepare(features, labeled_mask, rows)
    base = _centered_norms(features, unlabeled, mean, rows, "medal")  # ||u||², −inf once u is picked
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
        if candidates is None or (not complete and not _beats_the_rest(
                score.index_select(0, best).double() + centroid64.dot(centroid64),
                (threshold + torch.linalg.vector_norm(centroid64 - refresh_centroid)) ** 2 * (1 + _MEDAL_SLACK),
                candidates.index_select(0, best), first_left)):
            score = _centroid_scores(features, unlabeled, mean, base, centroid, rows)
            k = min(chunk_size, len(base) - i)  # ≤ points not yet picked, so the k-th score is finite
            complete = k == len(base) - i  # every remaining point is a candidate: no bound to check
            candidates, kth, first_left = _top_candidates(score, k)
            # τ: no other point is farther than τ from this centroid.
            threshold = (kth.double() + centroid64.dot(centroid64)).clamp(min=0.0).sqrt()
            refresh_centroid = centroid64
            cand_x = _centered(features, unlabeled.index_select(0, candidates), mean)
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


def initial_labeled_indices(pool_size: int, initial_labels: int, seed: int) -> torch.Tensor:
    """Step 1 of Algorithm 1: the ξ initial labels (int64 pool indices), a function of the seed alone."""
    generator = torch.Generator().manual_seed(derive_seed(INITIAL_LABELS, seed))
    return torch.randperm(pool_size, generator=generator)[:initial_labels]


def random_select(labeled_mask: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random β unlabeled points, without replacement.

    ``generator`` is a CPU ``torch.Generator`` (so a seed gives the same picks
    on every device); the result is moved to the mask's device.
    """
    budget = _check_pool(labeled_mask, budget)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("random selection needs a seeded CPU generator: "
                         "pass generator=torch.Generator().manual_seed(seed).")
    unlabeled = (~labeled_mask).nonzero().squeeze(1).cpu()
    order = torch.randperm(len(unlabeled), generator=generator)[:budget]
    return unlabeled[order].to(labeled_mask.device)


def entropy_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Predictive entropy per point (N,) from logits (N, C).

    multi-class: Shannon entropy of softmax(logits) (maximal, log C, for uniform logits).
    multi-label: Σ_c of the binary entropies of sigmoid(logits_c) (labels treated as independent).
    Log-probabilities come from log_softmax / logsigmoid, and 0·log 0 is taken
    as 0, so extreme finite logits give no NaN.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a 2-D tensor (N, C) of the task model's outputs.")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or inf; check the task model before selecting.")
    if not logits.is_floating_point() or torch.finfo(logits.dtype).bits < 32:
        logits = logits.float()

    def plogp(log_p: torch.Tensor) -> torch.Tensor:
        p = log_p.exp()
        return torch.where(p > 0, p * log_p, torch.zeros_like(p))

    if task == MULTICLASS:
        return -plogp(torch.log_softmax(logits, dim=1)).sum(1)
    if task == MULTILABEL:
        log_p, log_q = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
        return -(plogp(log_p) + plogp(log_q)).sum(1)
    raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")


def top_k_select(scores: torch.Tensor, labeled_mask: torch.Tensor, budget: int) -> torch.Tensor:
    """The β unlabeled points of highest score, highest first; ties → lowest index first."""
    if not isinstance(scores, torch.Tensor):
        raise ValueError("scores must be a tensor with one score per pool point.")
    scores = scores.reshape(-1) if scores.dim() == 2 and scores.shape[1] == 1 else scores
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (N,) or (N, 1), got {tuple(scores.shape)}.")
    budget = _check_pool(labeled_mask, budget, scores.shape[0])
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN; check the model that produced them.")
    unlabeled = (~labeled_mask.to(scores.device)).nonzero().squeeze(1)
    # A stable descending sort keeps equal scores in index order: deterministic ties.
    order = torch.sort(scores.index_select(0, unlabeled), descending=True, stable=True).indices[:budget]
    return unlabeled.index_select(0, order)


BALANCED = "balanced"
"""The α (Eq. 6) given as ``"balanced"``: estimated at every selection by :func:`balanced_alpha`."""

BALANCED_PAIRS = 20_000
"""Pairs of pool points that :func:`balanced_alpha` samples. Each mean squared distance then has a
relative standard error of CV/√20,000, CV being the coefficient of variation of ||x_i − x_j||² over
pairs (√(2/d) for Gaussian features of dimension d: 0.18% at d = 32); α's is about half of that."""


def _mean_squared_pair_distance(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean of ||x_i − x_j||² over the index pairs (first[p], second[p]), summed in float64."""
    difference = x.index_select(0, first.to(x.device)) - x.index_select(0, second.to(x.device))
    return float(difference.square().sum(1, dtype=torch.float64).mean())


def balanced_alpha(task_features: torch.Tensor, family_features: torch.Tensor,
                   generator: torch.Generator | None = None, pairs: int = BALANCED_PAIRS) -> float:
    """The α of Eq. 6 under which both blocks of [T ⁀ α·V] have the same mean squared pair distance.

    With T = ``task_features`` (N, d_T) and V = ``family_features`` (N, d_V), rows in
    pool order, and the same P pairs (i, j), i ≠ j, for both blocks::

        msd_T = (1/P) Σ ||T_i − T_j||²,   msd_V = (1/P) Σ ||V_i − V_j||²,   α = √(msd_T / msd_V),

    so α²·msd_V = msd_T: in the distances of core-set (Eq. 1) and MedAL (Eq. 2) between
    random pool points, the family's block weighs as much as the task model's.

    Pairs: P = ``pairs`` ordered pairs drawn uniformly, with replacement, from the N(N − 1)
    with i ≠ j (i uniform, j = i + r mod N with r uniform in 1 … N − 1), by ``generator``
    (a CPU generator; None: one seeded from the stream ALPHA alone, so the same features
    always give the same α). When N(N − 1)/2 ≤ P, each of the N(N − 1)/2 pairs i < j is
    used once instead, which gives the exact means. Memory: a few P × d blocks.

    Returns α ≥ 0 as a float (0 when T is constant). Raises ValueError for fewer than two
    points, rows that do not match, non-finite features, or a V that is constant on the
    pairs used (msd_V = 0: no scale makes a constant block comparable, and it adds
    nothing to any distance).
    """
    for name, features in (("task_features", task_features), ("family_features", family_features)):
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor (N, d).")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{name} contain NaN or inf; a balanced α needs finite features.")
    n = task_features.shape[0]
    if family_features.shape[0] != n:
        raise ValueError(f"task features have {n} rows but the family features {family_features.shape[0]}; "
                         "encode the same pool points in the same order.")
    if n < 2:
        raise ValueError(f"a balanced α needs pairs of pool points; got {n} point(s).")
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pairs must be a positive integer, got {pairs!r}.")
    if generator is None:
        generator = torch.Generator().manual_seed(derive_seed(ALPHA))
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("a balanced α samples its pairs with a seeded CPU generator: "
                         "pass generator=torch.Generator().manual_seed(seed).")
    if n * (n - 1) // 2 <= pairs:
        first, second = torch.triu_indices(n, n, offset=1)
    else:
        first = torch.randint(n, (pairs,), generator=generator)
        second = (first + torch.randint(1, n, (pairs,), generator=generator)) % n
    msd_task, msd_family = (_mean_squared_pair_distance(x, first, second) for x in (task_features, family_features))
    if msd_family == 0:
        raise ValueError("the family's features are the same for every pair of pool points used, so no α "
                         "balances them (a constant block changes no distance); check the family's fit, or "
                         "give a numeric α.")
    return (msd_task / msd_family) ** 0.5


def augment_features(task_features: torch.Tensor, family_features: torch.Tensor | None,
                     alpha: float | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 6's [T_f(u) ⁀ α·V(u)]: α scales the feature family's block (V, the VAE means) only.

    ``task_features`` (N, d) and ``family_features`` (N, k) give (N, d + k). α is a
    number ≥ 0 or :data:`BALANCED`, which is replaced by :func:`balanced_alpha` of
    these features (its pairs drawn by ``generator``). With ``family_features=None``
    or α = 0 the task features are returned unchanged (the same tensor): a zero block
    adds nothing to any distance, and returning the plain features makes α = 0
    reproduce the plain heuristic bit for bit. The block is cast to the task
    features' dtype and device. Raises ValueError for a bad α or mismatched rows.
    """
    if not isinstance(task_features, torch.Tensor) or task_features.dim() != 2:
        raise ValueError("task_features must be a 2-D tensor (N, d).")
    if isinstance(alpha, str):
        if alpha != BALANCED:
            raise ValueError(f"α must be a finite number ≥ 0 or {BALANCED!r}, got {alpha!r}.")
        if family_features is None:
            return task_features
        alpha = balanced_alpha(task_features, family_features, generator)
    alpha = float(alpha)
    if not alpha >= 0 or alpha == float("inf"):
        raise ValueError(f"α must be a finite number ≥ 0 (it scales the VAE features), got {alpha}.")
    if family_features is None or alpha == 0:
        return task_features
    if not isinstance(family_features, torch.Tensor) or family_features.dim() != 2:
        raise ValueError("family_features must be a 2-D tensor (N, k), e.g. the VAE means μ.")
    if family_features.shape[0] != task_features.shape[0]:
        raise ValueError(f"task features have {task_features.shape[0]} rows but the family features "
                         f"{family_features.shape[0]}; encode the same pool points in the same order.")
    block = family_features.to(device=task_features.device, dtype=task_features.dtype)
    return torch.cat([task_features, alpha * block], dim=1)
