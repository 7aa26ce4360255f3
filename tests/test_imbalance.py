"""Long-tailed pools (``pool_imbalance`` ρ): the profile, the seeded draw, the refusals, and the setting everywhere."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alvae_utils.config import ConfigError, ExperimentConfig
from alvae_utils.data.datasets import ImbalanceNotApplicable, load_dataset, load_experiment_data
from alvae_utils.data.imbalance import draw_long_tailed, largest_pool, long_tail_counts
from alvae_utils.experiment import overrides
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.workflow import notebooks, papermill


def _profile_counts(pool_size: int, num_classes: int, rho: float) -> np.ndarray:
    """Brute force: n_c = pool_size · ρ^(−c/(C−1)) / Σ_k ρ^(−k/(C−1)), unrounded."""
    shares = [rho ** (-c / (num_classes - 1)) for c in range(num_classes)]
    return np.array([pool_size * share / sum(shares) for share in shares])


@pytest.mark.parametrize(("pool_size", "num_classes", "rho"), [(200, 10, 10.0), (3000, 10, 100.0), (57, 2, 3.5),
                                                               (1000, 7, 1.0)])
def test_long_tail_counts_round_the_exponential_profile(pool_size, num_classes, rho):
    counts = np.array(long_tail_counts(pool_size, num_classes, rho))
    exact = _profile_counts(pool_size, num_classes, rho)
    assert counts.sum() == pool_size
    assert np.all(np.abs(counts - exact) < 1), "each class within one image of its share"
    assert np.all(np.diff(counts) <= 0), "class 0 largest, the last class smallest"
    # The realised ratio is ρ up to the rounding of the two end classes.
    low, high = (exact[0] - 1) / (exact[-1] + 1), (exact[0] + 1) / (exact[-1] - 1)
    assert low <= counts[0] / counts[-1] <= high


def test_an_imbalanced_pool_has_the_profile_class_counts_and_the_evaluation_set_as_given():
    pool, evaluation = load_experiment_data("mnist-sample", 200, 100, seed=3, imbalance=10)
    counts = torch.bincount(pool.labels, minlength=10).numpy()
    assert counts.tolist() == long_tail_counts(200, 10, 10)
    assert np.all(np.abs(counts - _profile_counts(200, 10, 10)) < 1)
    assert counts[0] == 49 and counts[-1] == 5
    # Drawn from the training split, each image once.
    train = load_dataset("mnist-sample", "train")
    rows = {bytes(image.numpy()) for image in train.images}
    assert len({bytes(image.numpy()) for image in pool.images}) == 200 and all(
        bytes(image.numpy()) in rows for image in pool.images)
    # Seeded: the same seed gives the same pool, another seed another one; the evaluation set is ρ = 1's.
    again, _ = load_experiment_data("mnist-sample", 200, 100, seed=3, imbalance=10)
    other, _ = load_experiment_data("mnist-sample", 200, 100, seed=4, imbalance=10)
    plain_pool, plain_evaluation = load_experiment_data("mnist-sample", 200, 100, seed=3)
    assert again.fingerprint == pool.fingerprint != other.fingerprint != plain_pool.fingerprint
    assert evaluation.fingerprint == plain_evaluation.fingerprint


def test_the_draw_takes_each_class_in_the_order_of_one_permutation():
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0, 2, 1, 0])
    picked = draw_long_tailed(labels, [4, 2, 1], ("a", "b", "c"), 7, 4.0, torch.Generator().manual_seed(5), "toy")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(5)).tolist()
    expected, taken = [], {0: 0, 1: 0, 2: 0}
    for index in order:  # brute force: walk the permutation, keep a class's image while it has room
        label = int(labels[index])
        if taken[label] < [4, 2, 1][label]:
            expected.append(index)
            taken[label] += 1
    assert picked.tolist() == expected


def test_a_rho_the_dataset_cannot_supply_is_refused_naming_the_class_and_the_count():
    have = int((load_dataset("mnist-sample", "train").labels == 0).sum())
    need = long_tail_counts(3000, 10, 10)[0]
    available = torch.bincount(load_dataset("mnist-sample", "train").labels).tolist()
    largest = largest_pool(available, 10)
    with pytest.raises(ConfigError, match=rf"pool_imbalance=10 needs {need} images of class 0 \('0'\) for a pool of "
                                          rf"3000, but mnist-sample's train split has {have}; lower pool_size to at "
                                          rf"most {largest}, or lower pool_imbalance"):
        load_experiment_data("mnist-sample", 3000, 100, seed=0, imbalance=10)
    # The largest pool is exact: it fits, one more image does not (brute force over the counts).
    assert all(n <= h for n, h in zip(long_tail_counts(largest, 10, 10), available, strict=True))
    assert any(n > h for n, h in zip(long_tail_counts(largest + 1, 10, 10), available, strict=True))
    assert len(load_experiment_data("mnist-sample", largest, 100, seed=0, imbalance=10)[0]) == largest
    assert largest_pool([50, 0, 30], 2) == 0
    with pytest.raises(ConfigError, match=r"leaves class 9, the smallest, no image \(0.01 expected\); raise "
                                          r"pool_size to at least 1866 or lower"):
        long_tail_counts(20, 10, 1000)


def test_multilabel_data_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    from alvae_utils.data import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("data read before the check"))
    with pytest.raises(ImbalanceNotApplicable, match=r"pool_imbalance=10 applies to multi-class data only: "
                                                     r"chestmnist is multi-label"):
        load_experiment_data("chestmnist", 100, 50, seed=0, root=tmp_path, download=False, imbalance=10)


def test_the_key_names_rho_only_when_it_is_not_one():
    base = get_profile("ci").experiment("mnist-sample")
    pinned = json.loads((Path(__file__).parent / "ci_profile_keys.json").read_text())["config_keys"]
    assert base.pool_imbalance == 1 and "pool_imbalance" not in base.key_fields()
    assert base.key() == pinned["mnist-sample"], "a pool drawn as given keeps its key"
    skewed = overrides.apply(get_profile("ci"), {"pool_imbalance": 10}).experiment("mnist-sample")
    assert skewed.pool_imbalance == 10.0 and skewed.key_fields()["pool_imbalance"] == 10.0
    assert len({base.key(), skewed.key(), ExperimentConfig(**{**vars(base), "pool_imbalance": 2.0}).key()}) == 3


def test_the_setting_works_where_settings_work(offline_ci):
    assert overrides.parse_assignments(["pool_imbalance=10"]) == {"pool_imbalance": 10.0}
    with pytest.raises(ConfigError, match=r"pool_imbalance must be ≥ 1, got 0.5"):
        overrides.apply(get_profile("ci"), {"pool_imbalance": 0.5})
    for notebook in ("01_vae_training", "02_active_learning", "03_significance_tests", "05_beyond_the_paper"):
        profile = notebooks.notebook_profile(notebook, "ci", {"pool_imbalance": 10})
        assert {e.pool_imbalance for e in profile.experiments} == {10.0}
    # The footers name it; make figures runs the multi-class data and skips multi-label data, saying why.
    profile = overrides.apply(get_profile("ci"), {"pool_imbalance": 10})
    assert profile.label == "ci [pool_imbalance=10.0]"
    plan = papermill._plan(profile, only=["01_vae_training", "02_active_learning"])
    assert [(name, params["dataset"]) for name, params in plan.jobs] == [
        ("01_vae_training", "mnist-sample"), ("02_active_learning", "mnist-sample")]
    assert "applies to multi-class data only: chestmnist is multi-label" in plan.skipped["chestmnist"]


@pytest.fixture
def offline_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_OFFLINE", "1")
    monkeypatch.setenv("ALVAE_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path
