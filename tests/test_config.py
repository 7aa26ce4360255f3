"""Profiles and configuration validation."""

from dataclasses import replace

import pytest

from alvae_utils.selection.heuristics import HEURISTICS

from alvae_utils.config import ConfigError, ExperimentConfig
from alvae_utils.selection.methods import DEFAULT_ALPHA, Method
from alvae_utils.experiment.profiles import PROFILES, get_profile


def test_paper_profile_pins_the_papers_settings():
    paper = get_profile("paper")
    mnist, chest = paper.experiment("mnist"), paper.experiment("chestmnist")
    assert (mnist.pool_size, chest.pool_size) == (25_000, 30_000)
    assert (mnist.initial_labels, mnist.budget) == (3_000, 3_000)
    assert mnist.label_counts()[-1] == 21_000
    assert mnist.train.lr == 1e-3 and mnist.train.momentum == 0.9 and mnist.train.pretrained
    assert [mnist.train.epochs_for_step(k) for k in range(3)] == [10, 15, 20]
    assert not mnist.train.fine_tune
    assert (mnist.vae.epochs, mnist.vae.lr, mnist.vae.weight_decay) == (20, 1e-3, 5e-3)
    assert len(paper.seeds) == 5
    # The paper's five methods, and the field's reference heuristics beside them (issue 25).
    assert {m.label for m in paper.methods} == {"random", "coreset", "coreset+vae", "lossprediction",
                                                "lossprediction+vae", "entropy", "margin", "bald", "badge",
                                                "badge+vae", "typiclust+vae"}
    assert paper.tsne.initial_labels == 1_000 and paper.tsne.budget == 100
    unlabeled = paper.tsne.pool_size - paper.tsne.initial_labels
    assert round(paper.tsne.unlabeled_fraction * unlabeled) == 1_556


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_validates(name):
    profile = get_profile(name)
    profile.validate()
    assert len(profile.seeds) >= 2
    for experiment in profile.experiments:
        experiment.validate()
        counts = experiment.label_counts()
        assert counts[0] == experiment.initial_labels and len(counts) >= 2


def test_quick_profile_has_at_least_three_seeds_and_fits_the_embedded_sample():
    quick = get_profile("quick")
    assert len(quick.seeds) >= 3
    mnist = quick.experiment("mnist")
    assert mnist.pool_size <= 4_000 and mnist.eval_size is not None and mnist.eval_size <= 1_000


def test_ci_profile_exercises_every_heuristic_and_the_multilabel_path():
    ci = get_profile("ci")
    # Every registered heuristic, so that nbval covers each (issue 25 added margin, BALD, BADGE, TypiClust).
    assert {m.heuristic for m in ci.methods} == set(HEURISTICS)
    assert {m.label for m in ci.methods if m.features == "vae"} == {"coreset+vae", "medal+vae", "lossprediction+vae",
                                                                     "badge+vae", "typiclust+vae"}
    assert "chestmnist" in ci.datasets


def _base() -> ExperimentConfig:
    return ExperimentConfig("mnist-sample", 100, 50, 10, 10, 30)


@pytest.mark.parametrize("changes, fragment", [
    ({"budget": 0}, "budget β must be positive"),
    ({"budget": 95}, "larger than the unlabeled pool"),
    ({"initial_labels": 101}, "initial labels ξ=101"),
    ({"max_labels": 5}, "smaller than ξ"),
    ({"max_labels": 101}, "exceeds the pool size"),
    ({"budget": 25}, "larger than η − ξ = 20"),
    # η = ξ: no selection step at all, so nothing a run could compare (issue 23, kind 1).
    ({"max_labels": 10}, r"η=10 equals ξ=10: no selection step would run .*Raise η to at least ξ \+ β = 20"),
])
def test_bad_numbers_are_rejected_with_the_fix(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        replace(_base(), **changes).validate()


def test_label_counts_stop_at_eta():
    assert _base().label_counts() == [10, 20, 30]
    assert replace(_base(), max_labels=35).label_counts() == [10, 20, 30]


def test_config_key_changes_with_any_setting():
    base = _base()
    keys = {base.key(), replace(base, budget=5).key(), replace(base, train=replace(base.train, lr=0.01)).key(),
            replace(base, vae=replace(base.vae, latent_dim=4)).key()}
    assert len(keys) == 4
    assert base.key() == _base().key()


def test_method_parsing_and_validation():
    assert Method.parse("coreset+vae") == Method("coreset", "vae", DEFAULT_ALPHA)
    assert Method.parse("coreset+vae", alpha=0.5).label == "coreset+vae(α=0.5)"
    with pytest.raises(ConfigError, match="unknown heuristic 'badheuristic'; choose one of random"):
        Method.parse("badheuristic")
    with pytest.raises(ConfigError, match="has no VAE variant"):
        Method.parse("random+vae")
    with pytest.raises(ConfigError, match="α must be ≥ 0"):
        Method("coreset", "vae", -1.0).validate()
    # α does not identify a plain run: it is unused there.
    assert Method("coreset", None, 0.3).key_fields() == Method("coreset", None, 1.0).key_fields()


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="choose one of paper, quick, ci"):
        get_profile("fast")
    with pytest.raises(ConfigError, match="defines mnist, chestmnist"):
        get_profile("paper").experiment("cifar10")


def test_numbers_in_messages_are_short():
    """`--set pool_imbalance=1e308` printed the 309 digits of int(1e308) (issue 23): numbers in messages have at most
    15 digits exactly, else 6 significant ones."""
    from alvae_utils.config import check_value, shown

    assert [shown(v) for v in (3, 10 ** 14, 10 ** 15, 1e308, 0.1 + 0.2, -(10 ** 400), True, "1e400")] == [
        "3", "100000000000000", "1e+15", "1e+308", "0.3", "-about 1e+400", "True", "'1e400'"]
    with pytest.raises(ConfigError, match=r"^budget β=1e\+40 is larger than the unlabeled pool"):
        replace(_base(), budget=10 ** 40).validate()
    with pytest.raises(ConfigError, match=r"^pool_imbalance must be ≥ 1, got 0\.3\.$"):
        check_value(ExperimentConfig, "pool_imbalance", 0.1 + 0.2)
