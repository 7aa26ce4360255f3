"""α of Eq. 6: the balanced α, α = 0, and the α and family time stored at every step."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from alvae_utils.experiment import loop
from alvae_utils.workflow.cli import main
from alvae_utils.config import ConfigError, ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.data.datasets import load_experiment_data
from alvae_utils.device import images_to_float
from alvae_utils.selection.features import FAMILIES, FeatureFamily, register_family
from alvae_utils.selection.heuristics import select
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.overrides import apply
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.results import ResultStore, data_fingerprint
from alvae_utils.selection.alpha import augment_features, balanced_alpha
from alvae_utils.selection.methods import BALANCED
from alvae_utils.selection.kcenter import kcenter_greedy
from alvae_utils.selection.medal import medal_greedy

TIMINGS = ["train_seconds", "select_seconds", "eval_seconds", "features_seconds"]
CONFIG = ExperimentConfig(
    "mnist-sample", pool_size=60, eval_size=30, initial_labels=10, budget=10, max_labels=30,
    train=TrainConfig(initial_epochs=1, epoch_increment=0, batch_size=10), vae=VAEConfig(latent_dim=4, epochs=1),
)


def _blocks(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two blocks on very different scales: T like non-negative ResNet features, V like VAE means."""
    generator = torch.Generator().manual_seed(seed)
    task = torch.relu(torch.randn(n, 32, generator=generator, dtype=torch.float64)) * 5
    family = torch.randn(n, 4, generator=generator, dtype=torch.float64) * torch.tensor([0.2, 1.0, 0.5, 3.0],
                                                                                         dtype=torch.float64)
    return task, family


def _all_pairs(x: torch.Tensor) -> torch.Tensor:
    """||x_i − x_j||² for every pair i < j, by brute force."""
    first, second = torch.triu_indices(len(x), len(x), offset=1)
    return (x[first] - x[second]).square().sum(1)


def test_balanced_alpha_equalises_the_blocks_mean_squared_pair_distances():
    task, family = _blocks(300)  # 44,850 pairs: more than the 20,000 sampled
    a, b = _all_pairs(task), _all_pairs(family)
    exact = math.sqrt(a.mean() / b.mean())
    # Delta method: the ratio of the sampled means has variance Var(a − R b) / (P b̄²); α = √R halves it relatively.
    ratio = a.mean() / b.mean()
    standard_error = exact * float((a - ratio * b).std() / (b.mean() * math.sqrt(20_000))) / 2

    estimate = balanced_alpha(task, family, torch.Generator().manual_seed(1))
    assert abs(estimate - exact) < 4 * standard_error
    assert abs(estimate ** 2 * b.mean() / a.mean() - 1) < 8 * standard_error / exact, "α²·msd_V ≈ msd_T"
    assert estimate == balanced_alpha(task, family, torch.Generator().manual_seed(1)), "seeded: reproducible"
    assert estimate != balanced_alpha(task, family, torch.Generator().manual_seed(2)), "sampled: seeds differ"
    assert balanced_alpha(task, family) == balanced_alpha(task, family), "no generator: a fixed seed"
    # Scaling a block scales α accordingly; float32 features give the same α up to round-off.
    assert balanced_alpha(3 * task, family, torch.Generator().manual_seed(1)) == pytest.approx(3 * estimate)
    assert balanced_alpha(task, 2 * family, torch.Generator().manual_seed(1)) == pytest.approx(estimate / 2)
    assert balanced_alpha(task.float(), family.float(), torch.Generator().manual_seed(1)) == pytest.approx(
        estimate, rel=1e-5)


def test_small_pools_use_every_pair_exactly():
    task, family = _blocks(150)  # 11,175 pairs ≤ 20,000
    exact = math.sqrt(_all_pairs(task).mean() / _all_pairs(family).mean())
    assert balanced_alpha(task, family, torch.Generator().manual_seed(1)) == pytest.approx(exact, rel=1e-12)
    assert balanced_alpha(task, family, torch.Generator().manual_seed(2)) == pytest.approx(exact, rel=1e-12)
    two = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[1.0], [6.0]])
    assert balanced_alpha(*two) == 1.0  # 25 / 25


def test_balanced_alpha_rejects_what_it_cannot_balance():
    task, family = _blocks(50)
    with pytest.raises(ValueError, match="same for every pair"):
        balanced_alpha(task, torch.ones(50, 3))
    with pytest.raises(ValueError, match="same pool points"):
        balanced_alpha(task, family[:40])
    with pytest.raises(ValueError, match="pairs of pool points"):
        balanced_alpha(task[:1], family[:1])
    with pytest.raises(ValueError, match="NaN or inf"):
        balanced_alpha(task, family.clone().fill_(math.nan))
    with pytest.raises(ValueError, match="positive integer"):
        balanced_alpha(task, family, pairs=0)
    assert balanced_alpha(torch.zeros(50, 2), family) == 0.0, "a constant T needs no V"


def test_augment_features_accepts_balanced():
    task, family = _blocks(300)
    alpha = balanced_alpha(task, family, torch.Generator().manual_seed(3))
    augmented = augment_features(task, family, BALANCED, torch.Generator().manual_seed(3))
    assert torch.equal(augmented, augment_features(task, family, alpha))
    assert augment_features(task, None, BALANCED) is task
    with pytest.raises(ValueError, match="or 'balanced'"):
        augment_features(task, family, "balance")


@pytest.mark.parametrize("heuristic, greedy", [("coreset", kcenter_greedy), ("medal", medal_greedy)])
def test_alpha_zero_picks_exactly_what_the_plain_heuristic_picks(heuristic, greedy):
    generator = torch.Generator().manual_seed(4)
    task = torch.randn(400, 64, generator=generator)
    family = torch.randn(400, 4, generator=generator) * 100  # would dominate any α > 0
    mask = torch.zeros(400, dtype=torch.bool)
    mask[torch.randperm(400, generator=generator)[:40]] = True
    plain = select(heuristic, mask, 50, features=task)
    assert select(heuristic, mask, 50, features=augment_features(task, family, 0.0)).tolist() == plain.tolist()
    assert greedy(augment_features(task, family, 0.0), mask, 50).tolist() == plain.tolist()
    assert select(heuristic, mask, 50, features=augment_features(task, family, 1.0)).tolist() != plain.tolist()


def test_labels_parse_back_and_reach_every_entry_point():
    for label in ["coreset+vae(α=balanced)", "medal+vae(α=balanced)"]:
        method = Method.parse(label)
        assert method.alpha == BALANCED and method.label == label
        assert method.key_fields()["alpha"] == BALANCED
    profile = apply(get_profile("ci"), {"methods": "coreset,coreset+vae(α=balanced)"})
    assert [m.label for m in profile.methods] == ["coreset", "coreset+vae(α=balanced)"]
    with pytest.raises(ConfigError, match=r"cannot read α .* coreset\+vae\(α=balanced\)"):
        Method.parse("coreset+vae(α=Balanced)")


def test_balanced_is_rejected_where_it_means_nothing(capsys):
    with pytest.raises(ConfigError, match="α=balanced is not defined for lossprediction: .* last layer, which learns "
                                          r"their scale itself. Give α a number instead, e.g. lossprediction\+vae"):
        Method.parse("lossprediction+vae(α=balanced)")
    with pytest.raises(ConfigError, match="α=balanced scales a feature family's block, and coreset has none"):
        Method("coreset", None, BALANCED).validate()
    with pytest.raises(ConfigError, match="α=balanced is not defined for lossprediction"):
        apply(get_profile("ci"), {"methods": "lossprediction+vae(α=balanced)"})
    assert main(["run", "--dataset", "mnist-sample", "--heuristic", "lossprediction", "--vae",
                 "--alpha", "balanced"]) == 2
    assert "α=balanced is not defined for lossprediction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--dataset", "mnist-sample", "--heuristic", "coreset", "--vae", "--alpha", "balance"])
    assert "α must be a number ≥ 0 or balanced, got 'balance'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def data():
    return load_experiment_data(CONFIG.dataset, CONFIG.pool_size, CONFIG.eval_size, seed=0)


@pytest.fixture(scope="module")
def vae_features():
    return torch.randn(CONFIG.pool_size, 4, generator=torch.Generator().manual_seed(0)) * 0.1


def _run(root, data, method, family_features=None):
    store = ResultStore("test", root=root)
    rows = loop.run_algorithm1(CONFIG, method, 0, *data, store, family_features=family_features,
                               device=torch.device("cpu"), progress=False)
    _, state = store.record(CONFIG, method, 0, data[0].description, data_fingerprint(*data)).load()
    return rows, state


@pytest.fixture(scope="module")
def balanced_run(tmp_path_factory, data, vae_features):
    """An uninterrupted coreset+vae(α=balanced) run, with the α each selection estimated."""
    estimated = []

    def recording(*args, **kwargs):
        estimated.append(balanced_alpha(*args, **kwargs))
        return estimated[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "balanced_alpha", recording)
        rows, state = _run(tmp_path_factory.mktemp("balanced"), data, Method.parse("coreset+vae(α=balanced)"),
                           vae_features)
    return rows, state, estimated


def test_each_step_stores_the_balanced_alpha_its_selection_used(balanced_run):
    rows, _, estimated = balanced_run
    assert rows["alpha"].eq(BALANCED).all()
    assert len(estimated) == 2 and all(alpha > 0 for alpha in estimated)
    assert rows["alpha_used"].iloc[:2].tolist() == estimated
    assert math.isnan(rows["alpha_used"].iloc[2]), "no selection follows the last step"
    assert rows["features_seconds"].isna().all(), "the VAE is fitted once per pool, before the run"


def test_alpha_zero_run_picks_what_plain_coreset_picks(tmp_path, data, vae_features):
    plain_rows, plain = _run(tmp_path, data, Method("coreset"))
    zero_rows, zero = _run(tmp_path, data, Method.parse("coreset+vae(α=0)"), vae_features)
    assert zero.labeled == plain.labeled
    assert zero_rows["alpha_used"].tolist() == [0.0, 0.0, 0.0], "a numeric α is stored at every step"
    assert plain_rows["alpha_used"].isna().all() and plain_rows["features_seconds"].isna().all()
    pd.testing.assert_series_equal(zero_rows["accuracy"], plain_rows["accuracy"])


def test_a_balanced_run_resumes_to_the_same_alphas(tmp_path, data, vae_features, balanced_run, spy):
    reference, reference_state, _ = balanced_run
    method = Method.parse("coreset+vae(α=balanced)")
    train = spy(loop, "train_task_model", interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, data, method, vae_features)
    train["restore"]()
    resumed, state = _run(tmp_path, data, method, vae_features)
    assert train["n"] == 2, "step 0 was not recomputed"
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMINGS), reference.drop(columns=TIMINGS), check_dtype=False)
    assert resumed["alpha_used"].iloc[:2].tolist() == reference["alpha_used"].iloc[:2].tolist()
    assert state.labeled == reference_state.labeled


@pytest.fixture
def refitted_family():
    """A family refitted at every step (pixel projections onto the labeled points' mean), removed afterwards."""
    register_family(FeatureFamily(
        name="labeledmean", title="labeled mean", refit_each_step=True, uses_labels=True,
        fit=lambda context: images_to_float(context.pool.images[context.labeled]).flatten(1).mean(0),
        encode=lambda mean, images: images_to_float(images).flatten(1) * mean))
    yield
    FAMILIES.pop("labeledmean")


def test_a_refitted_family_records_its_seconds_at_every_step_that_selects(tmp_path, data, refitted_family):
    rows, _ = _run(tmp_path, data, Method.parse("medal+labeledmean(α=2)"))
    assert rows["features_seconds"].iloc[:-1].gt(0).all()
    assert np.isnan(rows["features_seconds"].iloc[-1]), "MedAL only selects with the features: no fit at the end"
    lp_rows, _ = _run(tmp_path, data, Method.parse("lossprediction+labeledmean(α=2)"))
    assert lp_rows["features_seconds"].gt(0).all(), "the loss module trains on the features at every step"
    assert rows["alpha_used"].tolist() == [2.0, 2.0, 2.0]


def test_alpha_above_its_documented_bound_is_refused_before_any_work():
    from alvae_utils.selection.methods import MAX_ALPHA, check_alpha

    assert check_alpha(MAX_ALPHA) == MAX_ALPHA and Method.parse("coreset+vae(α=1e6)").alpha == 1e6
    # 1e300·V overflows float32 (a run then failed at its first selection with "features contain NaN or inf").
    for label in ["coreset+vae(α=1e300)", "coreset+vae(α=1000001)", "lossprediction+vae(α=1e7)"]:
        with pytest.raises(ConfigError, match=r"α=(1e\+300|1000001\.0|10000000\.0) is above the largest accepted α, "
                                              r"1e\+06"):
            Method.parse(label)
    # The bound is what keeps Eq. 6's squared distances finite in float32.
    block = torch.full((2, 3), 10.0)
    assert torch.isfinite(torch.cdist(MAX_ALPHA * block[:1], -MAX_ALPHA * block[1:]) ** 2).all()
    assert not torch.isfinite(torch.cdist(1e300 * block[:1], -1e300 * block[1:]) ** 2).all()
    # A stored run's label still reads (to select it in `results clean`), without being accepted to run.
    assert Method.read("coreset+vae(α=1e17)").label == "coreset+vae(α=1e+17)"


def test_an_estimated_balanced_alpha_above_the_bound_fails_before_nan_features(tmp_path, data, vae_features):
    """α = balanced is estimated at selection time, after validation: a family block that barely varies (a collapsed
    encoder) gave α ≈ 1e11, whose squared distances overflow float32 into NaN or inf features (issue 23, kind 1)."""
    from alvae_utils.selection.badge import badge_balanced_alpha
    from alvae_utils.selection.pairs import MAX_ALPHA

    generator = torch.Generator().manual_seed(0)
    task = torch.randn(40, 8, generator=generator)
    collapsed = 1e-11 * torch.randn(40, 4, generator=generator)
    message = (r"balanced α estimated at this step is 1\.\d+e\+11, above the largest accepted α, 1e\+06"
               r".*numeric α ≤ 1e\+06")
    with pytest.raises(ValueError, match=message):
        balanced_alpha(task, collapsed)
    with pytest.raises(ValueError, match=message):
        augment_features(task, collapsed, BALANCED)
    with pytest.raises(ValueError, match="balanced α estimated at this step"):
        badge_balanced_alpha(torch.randn(40, 3, generator=generator), task, "multi-class", collapsed)
    assert balanced_alpha(task, 1e-4 * collapsed / 1e-11) <= MAX_ALPHA, "within the bound: estimated as before"
    with pytest.raises(ValueError, match=message.replace("1\\.\\d+e\\+11", r"[\d.]+e\+\d+")):
        _run(tmp_path, data, Method.parse("coreset+vae(α=balanced)"), family_features=1e-12 * vae_features)
