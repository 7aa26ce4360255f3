"""The float32 passes of core-set and MedAL (issue 22): their bounds hold, they are taken only where the bounds
are proven, and they leave the float64 decisions to few points, so the picks are those of the float64 path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alvae_utils.selection import kcenter, medal
from alvae_utils.selection.distances import centered_norms, lower_min_dist, prepare, round_off, stream_rows
from alvae_utils.selection.float32_bounds import (
    centroid_score_bound, float32_pass_allowed, ieee_float32_matmul, squared_distance_bound,
)


def features_of(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(11)
    if case == "issue":  # the clusters: ||x||² ≈ 1,400 after centring, gaps below 1
        centers = rng.standard_normal((20, 64)) * 5
        x = centers[rng.integers(0, 20, 1500)] + 0.05 * rng.standard_normal((1500, 64))
    elif case == "offset":  # far from the origin: ||x||² ≈ 3·10⁷ before centring
        x = rng.standard_normal((1500, 32)) + 1000.0
    else:  # the task model's ReLU features next to a VAE's means, as bench_selection.py builds them
        x = np.concatenate([np.maximum(rng.standard_normal((1500, 512)), 0), rng.standard_normal((1500, 32))], 1)
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[torch.as_tensor(rng.choice(len(x), 300, replace=False))] = True
    return torch.from_numpy(x.astype(np.float32)), mask


@pytest.mark.parametrize("case", ["issue", "offset", "relu"])
def test_squared_distance_bound_holds_and_is_useful(case):
    features, mask = features_of(case)
    rows = stream_rows(features, 256)
    mean, unlabeled, labeled = prepare(features, mask, rows)
    norms = centered_norms(features, unlabeled, mean, rows, "coreset")
    largest = max(float(norms.max()), float(centered_norms(features, labeled, mean, rows, "coreset").max()))
    tol = round_off(features.shape[1], largest)
    exact = torch.full_like(norms, math.inf)
    lower_min_dist(exact, features, mean, unlabeled, norms, None, labeled, None, 256, tol)
    mean32 = mean.float()
    norms32 = centered_norms(features, unlabeled, mean32, rows, "coreset")
    fast = torch.full_like(norms32, math.inf)
    lower_min_dist(fast, features, mean32, unlabeled, norms32, None, labeled, None, 256)
    bound = squared_distance_bound(features.shape[1], largest, float(mean.norm()), tol)
    error = float((fast.double() - exact).abs().max())
    assert error <= bound
    assert bound < 1e-3 * largest  # worst case, yet far below the values it separates (≈ d·2⁻²⁴ relative)


@pytest.mark.parametrize("case", ["issue", "offset", "relu"])
def test_centroid_score_bound_holds(case):
    features, mask = features_of(case)
    x = features.double()
    mean = x.mean(0)
    centroid = x[mask].mean(0) - mean + 0.3  # off the labeled centroid, as after some picks
    base = ((x - mean) ** 2).sum(1)
    exact = base - 2.0 * (x - mean) @ centroid
    fast = base - 2.0 * (features.mv(centroid.float()).double() - mean.dot(centroid))
    bound = centroid_score_bound(x.shape[1], float(base.max()), float(mean.norm()), float(centroid.norm()))
    assert float((fast - exact).abs().max()) <= bound


def test_ieee_float32_matmul_follows_the_precision_setting():
    before = torch.get_float32_matmul_precision()
    assert before == "highest" and ieee_float32_matmul(torch.device("cpu"))
    try:
        for precision in ("high", "medium"):
            torch.set_float32_matmul_precision(precision)
            assert not ieee_float32_matmul(torch.device("cpu"))
            assert not ieee_float32_matmul(torch.device("cuda"))
    finally:
        torch.set_float32_matmul_precision(before)
    assert ieee_float32_matmul(torch.device("cpu"))
    assert not ieee_float32_matmul(torch.device("meta"))  # unknown rounding: the float64 path


def test_float32_pass_only_where_its_bound_is_proven():
    x = torch.randn(10, 8)
    assert float32_pass_allowed(x, 8.0) and float32_pass_allowed(x.half(), 8.0)
    assert not float32_pass_allowed(x.double(), 8.0)  # float32 would round float64 features
    assert not float32_pass_allowed(x, 1e-30) and not float32_pass_allowed(x, 1e30)  # subnormals, overflow


def test_kcenter_first_pass_is_float32_and_float64_only_near_the_top(monkeypatch):
    features, mask = features_of("relu")
    calls: list[tuple[torch.dtype, int]] = []
    original = kcenter.lower_min_dist

    def recording(min_dist, features_, mean, unlabeled, norms_u, rows, *args, **kwargs):
        calls.append((mean.dtype, len(unlabeled) if rows is None else len(rows)))
        return original(min_dist, features_, mean, unlabeled, norms_u, rows, *args, **kwargs)

    monkeypatch.setattr(kcenter, "lower_min_dist", recording)
    picks = kcenter.kcenter_greedy(features, mask, 50, chunk_size=64)
    assert calls[0] == (torch.float64, 1200 // 8)  # the sample that says a float32 pass pays
    assert [rows for dtype, rows in calls if dtype == torch.float32] == [1200]  # all of U against L
    refreshed = sum(rows for dtype, rows in calls[1:] if dtype == torch.float64)
    assert refreshed < 1200 / 2  # float64 only for the points near the top
    monkeypatch.setattr(kcenter, "float32_pass_allowed", lambda *args: False)
    assert torch.equal(picks, kcenter.kcenter_greedy(features, mask, 50, chunk_size=64))


def test_medal_rescores_few_candidates_in_float64(monkeypatch):
    features, mask = features_of("relu")
    rescored: list[int] = []
    original = medal.centered

    def recording(features_, index, mean):
        rescored.append(len(index))
        return original(features_, index, mean)

    monkeypatch.setattr(medal, "centered", recording)
    picks = medal.medal_greedy(features, mask, 50, chunk_size=64)
    assert len(rescored) >= 50 and float(np.median(rescored)) < 64 / 4  # a few near the best, not all 64
    monkeypatch.setattr(medal, "float32_pass_allowed", lambda *args: False)
    assert torch.equal(picks, medal.medal_greedy(features, mask, 50, chunk_size=64))


def test_kcenter_skips_the_float32_pass_where_its_bound_exceeds_the_gaps(monkeypatch):
    # The clusters at d = 544: R ≈ 2 against in-cluster distances ≈ 3, so nearly every point near
    # the top would be recomputed in float64 after the float32 pass; the sample says so first.
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 544)) * 5
    x = (centers[rng.integers(0, 20, 2000)] + 0.05 * rng.standard_normal((2000, 544))).astype(np.float32)
    mask = torch.zeros(2000, dtype=torch.bool)
    mask[torch.as_tensor(rng.choice(2000, 200, replace=False))] = True
    dtypes = []
    original = kcenter.lower_min_dist
    monkeypatch.setattr(kcenter, "lower_min_dist", lambda *args, **kwargs: (dtypes.append(args[2].dtype),
                                                                            original(*args, **kwargs))[1])
    kcenter.kcenter_greedy(torch.from_numpy(x), mask, 20)
    assert torch.float32 not in dtypes
