"""The ``simclr`` family and ``train.init=simclr``: NT-Xent and the views against hand and torchvision references,
the k-NN quality measure and the power computation against brute force and known answers, and end to end."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from alvae_utils.analysis.representation import PIXELS, knn_accuracy, representation_quality
from alvae_utils.analysis.stats import detectable_difference
from alvae_utils.config import ConfigError, SimCLRConfig
from alvae_utils.data.datasets import load_experiment_data
from alvae_utils.device import images_to_float, numerics
from alvae_utils.experiment import loop
from alvae_utils.experiment.overrides import apply
from alvae_utils.experiment.planning import plan_sweep
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.results import run_key
from alvae_utils.models.resnet import TaskModel
from alvae_utils.models.simclr import nt_xent
from alvae_utils.selection.features import get_family
from alvae_utils.selection.methods import Method
from alvae_utils.training.simclr import (
    VIEW_DRAWS, augment, checkpoint_path, encode_simclr, get_or_train_simclr, init_from_encoder, views,
)
from alvae_utils.training.task_model import build_task_model
from tiny import TINY, assert_as_if_uninterrupted, killed_and_resumed, tiny_sweep

SIMCLR = SimCLRConfig(epochs=1, batch_size=8).resolved(TINY.vae)


@pytest.fixture(scope="module")
def pool():
    return load_experiment_data(TINY.dataset, TINY.pool_size, TINY.eval_size, seed=0)[0]


def test_nt_xent_matches_a_hand_computation_with_its_temperature_and_without_self_pairs():
    z1 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.8, 0.6], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    tau = 0.3
    u = [[x / math.hypot(*v) for x in v] for v in [*z1.tolist(), *z2.tolist()]]
    total = 0.0
    for i in range(6):
        positive = (i + 3) % 6
        sims = {k: (u[i][0] * u[k][0] + u[i][1] * u[k][1]) / tau for k in range(6) if k != i}  # no self-pair
        total += -math.log(math.exp(sims[positive]) / sum(math.exp(s) for s in sims.values()))
    assert nt_xent(z1, z2, tau).item() == pytest.approx(total / 6, rel=1e-12)
    # The temperature divides every similarity: τ → ∞ gives the uniform loss log(2B − 1).
    assert nt_xent(z1, z2, 1e9).item() == pytest.approx(math.log(5), rel=1e-9)
    with pytest.raises(ValueError, match="B ≥ 2"):
        nt_xent(z1[:1], z2[:1], tau)
    with pytest.raises(ValueError, match="τ must be > 0"):
        nt_xent(z1, z2, 0.0)


def _draws(batch, **values):
    """View draws that leave the image as it is (whole crop, no rotation, shear or blur), but for ``values``."""
    neutral = {"area": 1.0, "ratio": 0.5, "top": 0.0, "left": 0.0, "angle": 0.5, "shear": 0.5, "blur": 1.0,
               "sigma": 0.0}
    return torch.tensor([[{**neutral, **values}[name]] * batch for name in VIEW_DRAWS], dtype=torch.float64)


def test_views_are_seeded_and_match_torchvisions_transforms(pool):
    images = images_to_float(pool.images[:8])
    first = augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(3))), "same seed, same views"
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(4)))
    assert first.shape == images.shape and 0 <= first.min() and first.max() <= 1

    assert torch.allclose(views(images, _draws(8)), images, atol=1e-5), "neutral draws give the image back"
    # The blur is torchvision's 3×3 Gaussian (reflect padding), σ = 0.1 + 0.9 · draw.
    blurred = views(images, _draws(8, blur=0.0, sigma=0.5))
    assert torch.allclose(blurred, TF.gaussian_blur(images, [3, 3], [0.55, 0.55]), atol=1e-6)
    # A crop of the top-left 20×20 (area 400/784, square), resized back to 28×28 as torchvision does, inside.
    crop = views(images, _draws(8, area=(400 / 784 - 0.4) / 0.6))
    reference = TF.resized_crop(images, 0, 0, 20, 20, [28, 28], antialias=False)
    assert torch.allclose(crop[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5)
    # The largest rotation, 15°, is torchvision's affine rotation (its sign convention aside).
    rotated = views(images, _draws(8, angle=1.0))
    options = [TF.affine(images, angle=a, translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                         interpolation=TF.InterpolationMode.BILINEAR) for a in (15.0, -15.0)]
    assert min((rotated - option).abs().max().item() for option in options) < 1e-4


def test_a_fit_is_seeded_cached_keyed_and_its_features_are_the_encoders(pool, tmp_path):
    state = torch.get_rng_state()
    net, history, trained = get_or_train_simclr(pool, SIMCLR, 0, device="cpu", progress=False, root=tmp_path)
    assert torch.equal(torch.get_rng_state(), state), "training leaves the caller's RNG as it was"
    assert trained and [row["epoch"] for row in history] == [1] and math.isfinite(history[0]["loss"])
    features = encode_simclr(net, pool.images)
    assert features.shape == (len(pool), 512)
    assert torch.equal(features, net.encoder(images_to_float(pool.images)).features.detach()), "h, not z"
    loaded, _, trained = get_or_train_simclr(pool, SIMCLR, 0, device="cpu", progress=False, root=tmp_path)
    assert not trained and torch.equal(encode_simclr(loaded, pool.images), features)

    cpu = numerics(torch.device("cpu"))
    key = checkpoint_path(pool, SIMCLR, 0, cpu)
    assert key.parent.name == "simclr"
    for other in (replace(SIMCLR, temperature=0.1), replace(SIMCLR, epochs=2), replace(SIMCLR, batch_size=4)):
        assert checkpoint_path(pool, other, 0, cpu) != key
    assert checkpoint_path(pool, SIMCLR, 1, cpu) != key
    assert checkpoint_path(pool, SIMCLR, 0, {"device": "cpu", "torch_threads": 99}) != key
    with pytest.raises(ValueError, match="resolved SimCLRConfig"):
        get_or_train_simclr(pool, SimCLRConfig(), 0, device="cpu", progress=False, root=tmp_path / "x")


def _knn_brute_force(features, labels, k):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    correct = 0.0
    for i in range(len(unit)):
        order = sorted((j for j in range(len(unit)) if j != i), key=lambda j: -float(unit[i] @ unit[j]))[:k]
        if labels.ndim == 2:
            predicted = (labels[order].mean(axis=0) > 0.5).astype(int)
            correct += float((predicted == labels[i]).mean())
        else:
            counts = np.bincount(labels[order], minlength=labels.max() + 1)
            correct += float(np.argmax(counts) == labels[i])  # argmax: the smallest class among ties
    return correct / len(unit)


@pytest.mark.parametrize("k", [1, 4, 20])
def test_knn_accuracy_matches_brute_force(k):
    rng = np.random.default_rng(k)
    features = rng.normal(size=(60, 5))
    labels = rng.integers(0, 3, size=60)
    labels[:20] = np.argmax(features[:20, :3], axis=1)  # some signal, so the accuracy is not ~1/3 everywhere
    expected = _knn_brute_force(features, labels, k)
    assert knn_accuracy(torch.tensor(features), torch.tensor(labels), k, chunk=7) == pytest.approx(expected)
    multi = rng.integers(0, 2, size=(60, 4))
    assert knn_accuracy(torch.tensor(features), torch.tensor(multi), k) == pytest.approx(
        _knn_brute_force(features, multi, k))
    with pytest.raises(ValueError, match=r"k must be in \[1, N − 1\]"):
        knn_accuracy(torch.tensor(features), torch.tensor(labels), 60)


def test_representation_quality_is_recorded_per_fit(pool, tmp_path):
    experiment = replace(TINY, simclr=replace(SimCLRConfig(), epochs=1, batch_size=8))
    table = representation_quality(pool, experiment, families=("simclr", "vae"), k=3, device="cpu",
                                   progress=False, root=tmp_path)
    assert table["representation"].tolist() == [PIXELS, "simclr", "vae"]
    assert table["dim"].tolist() == [784, 512, 4] and table["knn_accuracy"].between(0, 1).all()
    pixels = images_to_float(pool.images).flatten(1)
    assert table["knn_accuracy"][0] == pytest.approx(_knn_brute_force(pixels.numpy(), pool.labels.numpy(), 3))
    assert len(list((tmp_path / "quality").glob("*.json"))) == 3
    again = representation_quality(pool, experiment, families=("simclr", "vae"), k=3, device="cpu",
                                   progress=False, root=tmp_path)
    pd.testing.assert_frame_equal(again, table)
    with pytest.raises(ConfigError, match="ssvae are refitted"):
        representation_quality(pool, experiment, families=("ssvae",), device="cpu", root=tmp_path)


def test_detectable_difference_matches_a_published_case_and_a_simulation():
    # G*Power's classic case: a paired t-test needs n = 34 pairs to detect d_z = 0.5 (α = .05, two-sided, 80%).
    assert detectable_difference(1.0, 34) < 0.5 < detectable_difference(1.0, 33)
    assert detectable_difference(2.0, 34) == pytest.approx(2 * detectable_difference(1.0, 34))
    # At the returned difference, a simulated paired t-test of n = 5 rejects 80% of the time.
    n, sd = 5, 0.02
    delta = detectable_difference(sd, n)
    diffs = np.random.default_rng(0).normal(delta, sd, size=(40_000, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(n))
    from scipy import stats
    rejected = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.01)
    assert math.isnan(detectable_difference(0.0, 5))
    with pytest.raises(ValueError, match="n ≥ 2"):
        detectable_difference(1.0, 1)


def test_a_simclr_start_has_the_encoders_backbone_and_is_keyed_apart(pool, tmp_path, monkeypatch):
    net, _, _ = get_or_train_simclr(pool, SIMCLR, 0, device="cpu", progress=False, root=tmp_path)
    model, _ = build_task_model(10, TINY.train, seed=1, device="cpu")
    head = {name: value.clone() for name, value in model.state_dict().items() if name.startswith("net.fc.")}
    init_from_encoder(model, net.backbone_state())
    for name, value in model.state_dict().items():
        expected = head[name] if name.startswith("net.fc.") else net.encoder.state_dict()[name]
        assert torch.equal(value, expected), name
    with pytest.raises(ValueError, match="does not fit"):
        init_from_encoder(TaskModel(10), {"conv.weight": torch.zeros(1)})

    simclr_start = replace(TINY, train=replace(TINY.train, init="simclr"))
    method = Method("coreset")
    assert run_key(simclr_start, method, 0, "d") != run_key(TINY, method, 0, "d")
    assert simclr_start.key() != TINY.key() and "init" not in TINY.key_fields()["train"]
    # A sweep fits the encoder once, first, and its runs wait for it (under Ray too).
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    plan = plan_sweep("ci", TINY.dataset, methods=[Method("coreset"), Method("coreset", "vae")], seeds=[0],
                      experiment=simclr_start)
    assert sorted(fit.family.name for fit in plan.fits()) == ["simclr", "vae"]
    assert [run.once_fitted_family for run in plan.runs] == ["simclr", "vae"]
    # SimCLR's settings enter a key only when set away from their defaults.
    assert "simclr" not in TINY.key_fields()
    # ... and, in config_key, only for the runs that read them (the family's, train.init=simclr's)
    tuned = replace(TINY, simclr=SimCLRConfig(temperature=0.1))
    assert tuned.key(simclr=True) != TINY.key() and tuned.key() == TINY.key()
    with pytest.raises(ConfigError, match="train.init must be one of scratch, simclr"):
        replace(TINY, train=replace(TINY.train, init="imagenet")).validate()
    with pytest.raises(ConfigError, match="choose one"):
        replace(TINY, train=replace(TINY.train, init="simclr", pretrained=True)).validate()
    profile = apply(get_profile("ci"), {"train.init": "simclr", "simclr.temperature": 0.2})
    assert {e.train.init for e in profile.experiments} == {"simclr"}
    assert {e.simclr.temperature for e in profile.experiments} == {0.2}


def test_simclr_methods_and_the_simclr_start_run_end_to_end_and_resume_after_a_kill(tmp_path, monkeypatch, spy):
    import tiny

    monkeypatch.setattr(tiny, "TINY", replace(TINY, simclr=SimCLRConfig(epochs=1, batch_size=8)))
    methods = [Method.parse(label) for label in ("coreset+simclr(α=balanced)", "lossprediction+simclr")]
    assert get_family("simclr").fitted_once
    # Killed in the second run's first step.
    resumed = killed_and_resumed(monkeypatch, spy, tmp_path / "crashed", methods, "simclr", interrupt_at=3)
    assert_as_if_uninterrupted(monkeypatch, tmp_path / "reference", resumed, methods[1])

    # train.init=simclr: the same encoder starts every step's T; a killed run resumes to the same rows.
    monkeypatch.setattr(tiny, "TINY", replace(tiny.TINY, train=replace(TINY.train, init="simclr")))
    starts = spy(loop, "init_from_encoder", interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        tiny_sweep(monkeypatch, tmp_path / "crashed", [Method("coreset")])
    starts["restore"]()
    resumed_starts = spy(loop, "init_from_encoder")
    started = tiny_sweep(monkeypatch, tmp_path / "crashed", [Method("coreset")])
    assert started["n_labels"].tolist() == [4, 8] and resumed_starts["n"] == 1, "resumed at the second step"
    assert started["config_key"].tolist() == [tiny.TINY.key(simclr=True)] * 2 and tiny.TINY.key() != TINY.key()
    assert len(list((tmp_path / "crashed" / "simclr").glob("*.pt"))) == 1, "the same fit as the family's"
