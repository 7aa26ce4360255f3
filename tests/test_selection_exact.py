"""Core-set (Eq. 1) and MedAL (Eq. 2) pick exactly in float32: the picks of the float64 computation and of
brute force, on clustered features where float32 round-off of ||x||² + ||y||² − 2x·y exceeds the gaps
between candidates, whatever the matmul precision; and core-set's picks are scikit-activeml's
k_greedy_center's. Ties, constant and tiny or huge features stay fast (the issue-22 review)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skactiveml.pool import k_greedy_center

from alvae_utils.selection import distances, kcenter
from alvae_utils.selection.kcenter import kcenter_greedy
from alvae_utils.selection.medal import medal_greedy

GREEDY = [kcenter_greedy, medal_greedy]


def mask_of(n: int, labeled: np.ndarray) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.as_tensor(labeled)] = True
    return mask


def issue_reproduction() -> tuple[np.ndarray, torch.Tensor]:
    """The issue's clustered features: 20 centres × 0.05 noise, ||x||² ≈ 1,400 after centring."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 64)) * 5
    x = (centers[rng.integers(0, 20, 3000)] + 0.05 * rng.standard_normal((3000, 64))).astype(np.float32)
    return x, mask_of(3000, rng.choice(3000, 300, replace=False))


def clusters(seed: int, n: int, d: int, n_centers: int, spread: float, noise: float, relu: bool = False
             ) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_centers, d))[rng.integers(0, n_centers, n)] * spread
    x = x + noise * rng.standard_normal((n, d))
    return (np.maximum(x, 0) if relu else x).astype(np.float32), mask_of(n, rng.choice(n, n // 10, replace=False))


def brute_force(x: np.ndarray, mask: torch.Tensor, budget: int, reduce: str) -> list[int]:
    """Eq. 1 (min) or Eq. 2 (mean, as the distance to the centroid) from float64 differences, pick by pick."""
    a = x.astype(np.float64)
    labeled = mask.nonzero().squeeze(1).tolist()
    closest = np.min([((a - a[j]) ** 2).sum(1) for j in labeled], axis=0)
    picks: list[int] = []
    for _ in range(budget):
        if reduce == "min":
            score = closest.copy()
        else:
            centroid = a[labeled + picks].mean(0)
            score = ((a - centroid) ** 2).sum(1)
        score[labeled + picks] = -np.inf
        pick = int(np.argmax(score))
        picks.append(pick)
        closest = np.minimum(closest, ((a - a[pick]) ** 2).sum(1))
    return picks


@pytest.mark.parametrize("greedy", GREEDY)
def test_issue_reproduction_picks_as_float64(greedy):
    x, mask = issue_reproduction()
    picks = greedy(torch.from_numpy(x), mask, 100).tolist()
    assert picks == greedy(torch.from_numpy(x).double(), mask, 100).tolist()
    assert picks == brute_force(x, mask, 100, "min" if greedy is kcenter_greedy else "mean")


def clustered_case(case: str) -> tuple[np.ndarray, torch.Tensor]:
    if case == "issue":
        return issue_reproduction()
    if case == "offset":  # a common +1000: ||x||² ≈ 6·10⁷ before centring
        x, mask = clusters(1, 1000, 32, 15, 3.0, 0.02)
        return x + np.float32(1000.0), mask
    if case == "relu544":  # post-ReLU features of the task model's width
        return clusters(2, 800, 544, 12, 1.0, 0.02, relu=True)
    # every point 3 times: exact ties everywhere, broken by the lowest index
    base, _ = clusters(3, 300, 48, 10, 4.0, 0.05)
    return np.concatenate([base, base, base]), mask_of(900, np.random.default_rng(3).choice(900, 60, replace=False))


@pytest.mark.parametrize("greedy", GREEDY)
@pytest.mark.parametrize("case", ["offset", "relu544", "duplicates"])
def test_clustered_float32_picks_as_float64(greedy, case):
    x, mask = clustered_case(case)
    picks = greedy(torch.from_numpy(x), mask, 100).tolist()
    assert picks == greedy(torch.from_numpy(x).double(), mask, 100).tolist()
    if case != "relu544":
        assert picks == brute_force(x, mask, 100, "min" if greedy is kcenter_greedy else "mean")


@pytest.mark.parametrize("case", ["issue", "offset", "relu544", "duplicates"])
def test_kcenter_float32_pass_forced_where_its_bound_exceeds_the_gaps(monkeypatch, case):
    # Core-set skips its float32 pass where R exceeds the gaps near the top (kcenter.NEAR_LIMIT); forced,
    # nearly every bound is recomputed in float64, near ties included, and the picks must not change.
    x, mask = clustered_case(case)
    monkeypatch.setattr(kcenter, "NEAR_LIMIT", 1.0)
    for chunk_size in (2048, 16):  # 16: refreshes at most picks, so bounds are made exact again and again
        picks = kcenter_greedy(torch.from_numpy(x), mask, 100, chunk_size).tolist()
        if case == "duplicates" and chunk_size == 16:  # > 16 points within round-off: exact ties go either way
            assert_farthest_up_to_ties(x, mask, picks)
        else:
            assert picks == kcenter_greedy(torch.from_numpy(x).double(), mask, 100, chunk_size).tolist()
    if case != "relu544":
        assert kcenter_greedy(torch.from_numpy(x), mask, 100).tolist() == brute_force(x, mask, 100, "min")


def assert_farthest_up_to_ties(x: np.ndarray, mask: torch.Tensor, picks: list[int]) -> None:
    """Each pick is at the largest exact (float64 differences) distance to L and the earlier picks, ties aside."""
    a = x.astype(np.float64)
    chosen = mask.nonzero().squeeze(1).tolist()
    closest = np.min([((a - a[j]) ** 2).sum(1) for j in chosen], axis=0)
    for pick in picks:
        closest[chosen] = -np.inf
        assert closest[pick] >= closest.max() * (1 - 1e-12), pick
        chosen.append(pick)
        closest = np.minimum(closest, ((a - a[pick]) ** 2).sum(1))


@pytest.mark.parametrize("greedy", GREEDY)
def test_small_chunks_force_refreshes_and_stay_exact(greedy):
    # 8 candidates: refreshes at most picks, and contenders outside them, so the candidates double.
    x, mask = clusters(7, 400, 16, 6, 3.0, 0.02)
    x = x + np.float32(300.0)
    picks = greedy(torch.from_numpy(x), mask, 80, chunk_size=8).tolist()
    assert picks == brute_force(x, mask, 80, "min" if greedy is kcenter_greedy else "mean")


@pytest.mark.parametrize("greedy", GREEDY)
@pytest.mark.parametrize("precision", ["high", "medium"])
def test_picks_ignore_the_matmul_precision(greedy, precision):
    # "high"/"medium" let float32 products run in TF32/bfloat16 (bfloat16 on CPUs with AVX512-BF16).
    x, mask = issue_reproduction()
    expected = greedy(torch.from_numpy(x), mask, 60).tolist()
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        picks = greedy(torch.from_numpy(x), mask, 60).tolist()
    finally:
        torch.set_float32_matmul_precision(before)
    assert picks == expected


def skactiveml_picks(x: np.ndarray, mask: torch.Tensor, budget: int) -> list[int]:
    y = np.full(len(x), np.nan)
    y[mask.numpy()] = 0.0
    picks, _ = k_greedy_center(x.astype(np.float64), y, batch_size=budget, random_state=0)
    return picks.tolist()


@pytest.mark.parametrize("case", ["random", "clustered", "duplicated"])
def test_kcenter_matches_skactiveml_k_greedy_center(case):
    rng = np.random.default_rng(5)
    if case == "random":
        x = rng.standard_normal((300, 20))
    elif case == "clustered":
        x, _ = clusters(6, 300, 20, 8, 3.0, 0.1)
    else:
        x = np.repeat(rng.standard_normal((100, 12)), 3, axis=0)
    mask = mask_of(len(x), rng.choice(len(x), 20, replace=False))
    ours = kcenter_greedy(torch.from_numpy(x.astype(np.float64)), mask, 50).tolist()
    theirs = skactiveml_picks(x, mask, 50)
    if case == "duplicated":  # copies are exact ties: compare which distinct point is picked, in order
        ours, theirs = [i // 3 for i in ours], [i // 3 for i in theirs]
    assert ours == theirs


@pytest.mark.parametrize("greedy", GREEDY)
@pytest.mark.parametrize("case", ["constant", "few_values", "tiny", "huge"])
def test_degenerate_features_pick_as_brute_force_without_blowing_up(greedy, case):
    # Found by the review of issue 22: all-equal or few distinct rows made every candidate a near tie (minutes,
    # GiB); squared distances of 1e-22 features underflow float32, those of 1e19 features overflow it.
    rng = np.random.default_rng(8)
    if case == "constant":
        x = np.zeros((3000, 8), dtype=np.float32)
    elif case == "few_values":
        x = rng.standard_normal((5, 16)).astype(np.float32)[rng.integers(0, 5, 3000)]
    elif case == "tiny":
        x = (rng.standard_normal((500, 16)) * 1e-22).astype(np.float32)
    else:
        x = np.repeat(np.array([-1.2e19, -1.1e19, 0.0, 1.0e19, 1.15e19, 1.2e19, 5e18, -5e18], np.float32)[:, None]
                      / np.float32(1.2), 2, axis=1)
    mask = mask_of(len(x), np.arange(min(len(x) // 10, 300)) if case != "huge" else np.array([2]))
    budget = min(60, len(x) - int(mask.sum()))
    picks = greedy(torch.from_numpy(x), mask, budget).tolist()
    assert picks == brute_force(x, mask, budget, "min" if greedy is kcenter_greedy else "mean")


def chunk_by_chunk(min_dist, x, mean, unlabeled, norms_u, rows, points, chunk, tol):
    """lower_min_dist as it was before the points were grouped: each chunk of points against every chunk of U."""
    positions = unlabeled if rows is None else unlabeled[rows]
    for q in points.split(chunk):
        block = x[q].double() - mean
        block_norms = torch.einsum("ij,ij->i", block, block)
        for start in range(0, len(positions), chunk):
            u = x[positions[start:start + chunk]].double() - mean
            part = slice(start, start + chunk) if rows is None else rows[start:start + chunk]
            dist = torch.addmm(block_norms.unsqueeze(0), u, block.T, alpha=-2.0).amin(1)
            dist = dist.add_(norms_u[part]).clamp_(min=0.0)
            dist[dist <= tol] = 0.0
            min_dist[part] = torch.minimum(min_dist[part], dist)


@pytest.mark.parametrize("stream_bytes", [1, 64 << 20])
@pytest.mark.parametrize("subset", [False, True])
def test_grouped_lower_min_dist_is_chunk_by_chunk_to_the_bit(monkeypatch, stream_bytes, subset):
    # Points in groups of one chunk (STREAM_BYTES = 1) or all in one group, with partial chunks at both ends,
    # a row subset (a core-set refresh) or all of U: every value as the chunk-by-chunk loop gives it.
    monkeypatch.setattr(distances, "STREAM_BYTES", stream_bytes)
    x, mask = clusters(11, 700, 40, 9, 2.0, 0.05)
    x = torch.from_numpy(x + np.float32(50.0))
    mean, unlabeled, labeled = distances.prepare(x, mask, 64)
    norms_u = distances.centered_norms(x, unlabeled, mean, 64, "coreset")
    rows = torch.arange(3, len(unlabeled), 7) if subset else None
    expected = torch.full_like(norms_u, float("inf"))
    chunk_by_chunk(expected, x, mean, unlabeled, norms_u, rows, labeled, 16, 1e-9)
    got = torch.full_like(norms_u, float("inf"))
    distances.lower_min_dist(got, x, mean, unlabeled, norms_u, rows, labeled, None, 16, 1e-9)
    assert torch.equal(got, expected)
    exact = torch.cdist(x[unlabeled].double(), x[labeled].double()).min(1).values ** 2
    touched = slice(None) if rows is None else rows
    torch.testing.assert_close(got[touched], exact[touched], rtol=1e-9, atol=1e-9)
    if subset:
        assert bool(torch.isinf(got[torch.arange(len(unlabeled)) % 7 != 3]).all())


def test_kcenter_picks_do_not_depend_on_the_point_groups(monkeypatch):
    # 120 labeled points in 8-row chunks: 15 groups with STREAM_BYTES = 1, one by default; refreshes use both.
    x, mask = clusters(12, 1200, 24, 10, 3.0, 0.05)
    expected = kcenter_greedy(torch.from_numpy(x), mask, 90, chunk_size=8).tolist()
    monkeypatch.setattr(distances, "STREAM_BYTES", 1)
    assert kcenter_greedy(torch.from_numpy(x), mask, 90, chunk_size=8).tolist() == expected
    assert expected == brute_force(x, mask, 90, "min")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_outlier_does_not_make_clear_gaps_ties(dtype):
    # One far labeled point makes the pool-wide float64 round-off bound ≈ 0.94 (review of issue 22): a tie
    # window of that width would call 2.0 and 3.5 a tie and pick A; Eq. 1 picks B.
    x = torch.tensor([[2.0 ** 0.5, 0.0], [0.0, 3.5 ** 0.5], [0.0, 0.0], [0.0, 0.0], [1e7, 1e7]], dtype=dtype)
    mask = torch.tensor([False, False, False, True, True])
    assert kcenter_greedy(x, mask, 1).tolist() == [1]
    y, mask = issue_reproduction()
    y[int(mask.nonzero()[0])] += np.float32(1e4)  # the issue's clusters, one labeled point far away
    assert kcenter_greedy(torch.from_numpy(y).to(dtype), mask, 60).tolist() == brute_force(y, mask, 60, "min")


@pytest.mark.parametrize("greedy", GREEDY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [64, 2048])
def test_copies_of_the_farthest_point_go_to_the_lowest_index(greedy, dtype, chunk_size):
    # 40 copies of one far point and 30 of another: whatever the last bits of their float64 values, the
    # first pick of each is its lowest-index copy, as brute force (exact ties → lowest index) picks.
    rng = np.random.default_rng(3)
    for d in (7, 33, 129):
        x = rng.standard_normal((400, d)).astype(np.float32)
        first = np.sort(rng.choice(400, 40, replace=False))
        second = np.sort(rng.choice(np.setdiff1d(np.arange(400), first), 30, replace=False))
        x[first], x[second] = rng.standard_normal(d) * 4, rng.standard_normal(d) * 4
        mask = mask_of(400, rng.choice(np.setdiff1d(np.arange(400), np.concatenate([first, second])), 10,
                                       replace=False))
        expected = brute_force(x, mask, 20, "min" if greedy is kcenter_greedy else "mean")
        assert greedy(torch.from_numpy(x).to(dtype), mask, 20, chunk_size).tolist() == expected, d
