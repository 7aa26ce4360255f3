"""The t-SNE experiment of Figs. 5–6: one core-set step, seen in two feature spaces.

Paper: train ResNet-18 on 1,000 initial ChestMNIST labels, draw a random 5%
(1,556) of the unlabeled points, let core-set (Eq. 1) pick 100 of them, and
embed the labeled, unlabeled and picked points with t-SNE — once in the ResNet
feature space (Fig. 5) and once with the VAE features appended (Eq. 6, Fig. 6).
Any method whose heuristic selects from appended features alone (core-set,
MedAL, …) and its feature family can stand in for core-set + VAE.

The compute is cached (``results/<profile>/tsne/<key>.npz``) apart from the
plotting, so the figures can be redrawn without retraining. The cache keys include what the
numbers depend on (:func:`alvae_utils.device.numerics`: the device type and the CPU's thread
count, or the GPU model and software), so a snapshot computed elsewhere is not reused.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ConfigError, ExperimentConfig, SimCLRConfig, VAEConfig, config_hash
from ..data.datasets import DataUnavailableError, Dataset, first_line, load_experiment_data
from ..device import default_device, numerics, reproducible_cuda
from ..selection.features import pool_features
from ..selection.heuristics import APPEND, select
from ..selection.methods import BALANCED, Method
from ..paths import atomic_path, results_root
from ..progress import AlvaeWarning, say_once
from .results import atomic_write_text
from .profiles import Profile
from ..seeds import MODEL, TRAIN, TSNE_SAMPLE, derive_seed
from ..selection.alpha import augment_features
from ..selection.pool import initial_labeled_indices
from ..training.simclr import get_or_train_simclr, init_from_encoder
from ..training.task_model import build_task_model, predict, train_task_model
from .tsne import embed, tail_statistics

PAPER_METHOD = Method("coreset", "vae")
"""The method of Figs. 5–6: core-set, plain (Fig. 5) and with the VAE features appended (Fig. 6)."""


@dataclass
class Snapshot:
    """Result of the snapshot experiment. Point rows: labeled first, then the unlabeled sample."""

    dataset: str
    data_description: str
    fell_back: bool  # True when the paper's dataset was unavailable and the fallback was used
    groups_resnet: np.ndarray  # "labeled" / "unlabeled" / "selected" per point, Fig. 5
    groups_vae: np.ndarray  # the same for the selection with the family's features appended, Fig. 6
    embedding_resnet: np.ndarray  # (n, 2)
    embedding_vae: np.ndarray  # (n, 2)
    tails_resnet: dict
    tails_vae: dict
    overlap: int  # points picked by both selections


def tsne_pool(profile: Profile) -> tuple[Dataset, bool]:
    """The t-SNE pool and whether it is the fallback: the paper's dataset, or the fallback when it cannot be had.

    Raises DataUnavailableError, naming what to provide for either, when neither can be had.
    """
    tsne = profile.tsne
    try:
        pool, _ = load_experiment_data(tsne.dataset, tsne.pool_size, eval_size=1, seed=0)
        return pool, False
    except DataUnavailableError as error:
        reason = error
    try:
        pool, _ = load_experiment_data(tsne.fallback_dataset, tsne.pool_size, eval_size=1, seed=0)
    except DataUnavailableError as error:
        raise DataUnavailableError(
            f"the t-SNE experiment needs {tsne.dataset} (or, failing that, {tsne.fallback_dataset}) with "
            f"{tsne.pool_size} training images.\n{tsne.dataset}: {reason}\n{tsne.fallback_dataset}: {error}") from None
    say_once(f"{tsne.dataset} is unavailable for the t-SNE experiment ({first_line(reason)}); "
             f"it uses {tsne.fallback_dataset} instead, as its titles say.")
    return pool, True


def _experiment_of(profile: Profile, dataset: str) -> ExperimentConfig:
    """``dataset``'s experiment, or the profile's first (as for any other dataset): its family settings apply."""
    return profile.experiment(dataset) if dataset in profile.datasets else profile.experiments[0]


def _family_settings(profile: Profile, dataset: str) -> dict[str, object]:
    """What the families' fits depend on, as keys hash it: the VAE's settings, and SimCLR's when not the defaults
    (so keys stored before SimCLR stay)."""
    experiment = _experiment_of(profile, dataset)
    simclr = experiment.simclr.key_fields()
    return {"vae": asdict(experiment.vae), **({"simclr": simclr} if simclr else {})}


@dataclass
class _Setup:
    """The part of a snapshot shared by every feature space: pool, points, trained ResNet features."""

    pool: Dataset
    fell_back: bool
    labeled: torch.Tensor  # pool indices of the initial labels
    points: torch.Tensor  # pool indices of every row below: labeled first, then the unlabeled sample
    resnet: torch.Tensor  # (len(points), 512) T_f of the trained task model
    vae_config: VAEConfig
    simclr_config: SimCLRConfig
    key_fields: dict


def _setup(profile: Profile, seed: int, device: torch.device, progress: bool) -> _Setup:
    """Draw the snapshot's labels and sample, and train the task model on the labels (seeded by ``seed``)."""
    tsne = profile.tsne
    pool, fell_back = tsne_pool(profile)
    train = replace(profile.experiments[0].train, initial_epochs=tsne.epochs, epoch_increment=0)
    experiment = _experiment_of(profile, pool.name)
    labeled = initial_labeled_indices(tsne.pool_size, tsne.initial_labels, seed)
    unlabeled_mask = torch.ones(tsne.pool_size, dtype=torch.bool)
    unlabeled_mask[labeled] = False
    unlabeled = unlabeled_mask.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(derive_seed(TSNE_SAMPLE, seed))
    n_sample = round(tsne.unlabeled_fraction * len(unlabeled))
    sample = unlabeled[torch.randperm(len(unlabeled), generator=generator)[:n_sample]]
    points = torch.cat([labeled, sample])
    key_fields = {"tsne": asdict(tsne), "train": asdict(train), **_family_settings(profile, pool.name),
                  "dataset": pool.name, "description": pool.description, "seed": seed}
    model, _ = build_task_model(pool.num_outputs, train, seed=derive_seed(MODEL, seed, 0), device=device)
    if train.init == "simclr":  # as a run's T (alvae_utils.experiment.loop); the snapshot's pool seed is 0
        init_from_encoder(model, get_or_train_simclr(pool, experiment.simclr.resolved(experiment.vae), 0, device=device,
                                                     progress=progress)[0].backbone_state())
    images, on_device = pool.images.to(device), labeled.to(device)
    train_task_model(model, images[on_device], pool.labels.to(device)[on_device], pool.task, tsne.epochs, train,
                     seed=derive_seed(TRAIN, seed, 0), progress=progress)
    resnet = predict(model, images[points.to(device)]).features
    return _Setup(pool, fell_back, labeled, points, resnet, experiment.vae, experiment.simclr, key_fields)


def _augmented(setup: _Setup, method: Method, seed: int, device: torch.device, progress: bool) -> torch.Tensor:
    """T_f of the snapshot's points with the method's family features appended (Eq. 6).

    A family fitted once per pool is fitted on the snapshot's pool (the pool was drawn
    with seed 0, see :func:`tsne_pool`, so a cached VAE of that pool is reused); one
    refitted at every step is fitted as at step 0 of a run, on the initial labels.
    """
    context = method.family.step_context(setup.pool, setup.vae_config, 0, device, progress, setup.labeled, seed, 0,
                                         simclr=setup.simclr_config)
    features = pool_features(method.family, context, points=setup.points)  # checked as a run's are
    return augment_features(setup.resnet, features.to(setup.resnet.device), method.alpha)


def _picks(method: Method, features: torch.Tensor, n_labeled: int, budget: int) -> np.ndarray:
    is_labeled = torch.zeros(len(features), dtype=torch.bool, device=features.device)
    is_labeled[:n_labeled] = True
    return select(method.heuristic, is_labeled, budget, features=features).cpu().numpy()


def _check_snapshot_method(method: Method) -> None:
    method.validate()
    heuristic = method.heuristic_entry
    if heuristic.extra_features != APPEND or set(heuristic.needs) != {"features"} or method.family is None \
            or method.alpha == BALANCED:
        raise ConfigError(f"the t-SNE snapshot needs a heuristic that selects from features alone plus a feature "
                          f"family with a numeric α (e.g. coreset+vae); got {method.label}.")


def run_snapshot(profile: Profile, seed: int = 0, method: Method = PAPER_METHOD,
                 device: torch.device | None = None, progress: bool = True) -> Snapshot:
    """Compute (or load from cache) the snapshot for ``profile``.

    ``method`` must pair a heuristic that selects from appended features alone
    (core-set, MedAL) with a feature family and a numeric α; its plain heuristic
    gives Fig. 5 and the method itself Fig. 6. Raises ConfigError otherwise.
    """
    _check_snapshot_method(method)
    pool, fell_back = tsne_pool(profile)
    tsne = profile.tsne
    train = replace(profile.experiments[0].train, initial_epochs=tsne.epochs, epoch_increment=0)
    device = torch.device(device) if device is not None else default_device()
    key = config_hash({"tsne": asdict(tsne), "train": train.key_fields(),
                       **_family_settings(profile, pool.name), "dataset": pool.name,
                       "description": pool.description, "seed": seed, "method": method.key_fields(),
                       "numerics": numerics(device)})
    cache = results_root() / profile.name / "tsne" / f"{key}.npz"
    snapshot = _read(cache)
    if snapshot is not None:
        return snapshot

    with reproducible_cuda(device):
        setup = _setup(profile, seed, device, progress)
        augmented = _augmented(setup, method, seed, device, progress)
        n_labeled = len(setup.labeled)
        picks = {name: _picks(method, feats, n_labeled, tsne.budget)
                 for name, feats in (("resnet", setup.resnet), ("vae", augmented))}
    snapshot = Snapshot(
        dataset=pool.name, data_description=pool.description, fell_back=fell_back,
        groups_resnet=_groups(len(setup.points), n_labeled, picks["resnet"]),
        groups_vae=_groups(len(setup.points), n_labeled, picks["vae"]),
        embedding_resnet=embed(setup.resnet.cpu().double().numpy(), seed=seed, perplexity=tsne.perplexity),
        embedding_vae=embed(augmented.cpu().double().numpy(), seed=seed, perplexity=tsne.perplexity),
        tails_resnet=_tails(setup.resnet, n_labeled, picks["resnet"]),
        tails_vae=_tails(augmented, n_labeled, picks["vae"]),
        overlap=len(set(picks["resnet"].tolist()) & set(picks["vae"].tolist())),
    )
    _write(cache, snapshot)
    return snapshot


def tails_by_family(profile: Profile, methods: Sequence[Method], seeds: Sequence[int],
                    device: torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """Notebook 04's "picks in the tails" statistic for several feature families, over several snapshots.

    For each seed, one snapshot as in Figs. 5–6 (the profile's t-SNE settings, no
    embedding): the task model trained on the initial labels, then the plain
    heuristic's picks in the ResNet space and each method's picks with its family's
    features appended, each measured in its own space by
    :func:`alvae_utils.experiment.tsne.tail_statistics`. ``methods`` share one heuristic, each
    with a family and a numeric α (e.g. ``coreset+vae``, ``coreset+mixvae``).

    Returns one row per (seed, space): ``seed``, ``space`` (``"ResNet"`` or the
    method's label), ``family`` (None for ResNet) and the statistics' keys
    (``ratio``, ``selected_percentile``, ``mannwhitney_p`` …). Cached per seed and
    method under ``results/<profile>/tsne/tails-<key>.json``. Raises ConfigError for a
    method that cannot be snapshotted or methods of different heuristics, and
    DataUnavailableError as :func:`tsne_pool`.
    """
    methods = list(methods)
    if not methods:
        raise ConfigError("tails_by_family needs at least one method, e.g. coreset+vae.")
    for method in methods:
        _check_snapshot_method(method)
    heuristics = {method.heuristic for method in methods}
    if len(heuristics) > 1:
        raise ConfigError(f"tails_by_family compares feature spaces under one heuristic; got {sorted(heuristics)}.")
    plain = methods[0].base
    pool, _ = tsne_pool(profile)
    device = torch.device(device) if device is not None else default_device()
    records = []
    for seed in seeds:
        setup = None
        for method in (plain, *methods):
            key = config_hash({"tails": method.key_fields(), "tsne": asdict(profile.tsne), "seed": seed,
                               "train": profile.experiments[0].train.key_fields(), "dataset": pool.name,
                               "description": pool.description, "fingerprint": pool.fingerprint,
                               **_family_settings(profile, pool.name), "numerics": numerics(device)})
            cache = results_root() / profile.name / "tsne" / f"tails-{key}.json"
            statistics = _cached_tails(cache)
            if statistics is None:
                with reproducible_cuda(device):
                    if setup is None:
                        setup = _setup(profile, seed, device, progress)
                    features = setup.resnet if method.family is None else _augmented(setup, method, seed, device,
                                                                                     progress)
                    picked = _picks(method.base if method.family is None else method, features,
                                    len(setup.labeled), profile.tsne.budget)
                statistics = _tails(features, len(setup.labeled), picked)
                atomic_write_text(cache, json.dumps(statistics))
            records.append({"seed": seed, "space": "ResNet" if method.family is None else method.label,
                            "family": method.features, **statistics})
    return pd.DataFrame(records)


_TAIL_KEYS = frozenset({"ratio", "selected_percentile", "mannwhitney_p", "n_selected"})


def _cached_tails(path: Path) -> dict | None:
    """The tails statistics cached at ``path``; None when absent, or damaged (then removed, with a warning)."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and _TAIL_KEYS <= set(stored):
            return stored
        problem = f"it lacks {sorted(_TAIL_KEYS - set(stored if isinstance(stored, dict) else ()))}"
    except (ValueError, UnicodeDecodeError) as error:
        problem = f"{type(error).__name__}: {error}"
    warnings.warn(f"the cached tails statistics {path} are damaged ({problem}); they are removed and computed again.",
                  AlvaeWarning, stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def _groups(n: int, n_labeled: int, picked: np.ndarray) -> np.ndarray:
    groups = np.full(n, "unlabeled", dtype=object)
    groups[:n_labeled] = "labeled"
    groups[picked] = "selected"
    return groups.astype(str)


def _tails(features: torch.Tensor, n_labeled: int, picked: np.ndarray) -> dict:
    """How far out the picks sit in this feature space (see :func:`alvae_utils.experiment.tsne.tail_statistics`)."""
    n = features.shape[0]
    rest = np.setdiff1d(np.arange(n_labeled, n), picked)
    return tail_statistics(features.cpu().double().numpy(), np.arange(n_labeled), rest, picked)


def _write(path: Path, snapshot: Snapshot) -> None:
    meta = {"dataset": snapshot.dataset, "data_description": snapshot.data_description,
            "fell_back": snapshot.fell_back, "tails_resnet": snapshot.tails_resnet,
            "tails_vae": snapshot.tails_vae, "overlap": snapshot.overlap}
    with atomic_path(path) as tmp:
        np.savez(tmp, groups_resnet=snapshot.groups_resnet, groups_vae=snapshot.groups_vae,
                 embedding_resnet=snapshot.embedding_resnet, embedding_vae=snapshot.embedding_vae,
                 meta=np.array(json.dumps(meta, default=float)))


def _read(path: Path) -> Snapshot | None:
    """The snapshot cached at ``path``; None when absent, or damaged (then removed, with a warning)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as stored:
            meta = json.loads(str(stored["meta"]))
            return Snapshot(groups_resnet=stored["groups_resnet"], groups_vae=stored["groups_vae"],
                            embedding_resnet=stored["embedding_resnet"], embedding_vae=stored["embedding_vae"],
                            **meta)
    except Exception as error:  # truncated or corrupted: numpy, zipfile and json raise many kinds
        warnings.warn(f"the cached t-SNE snapshot {path} cannot be read ({type(error).__name__}: {error}); it is "
                      "removed and computed again.", AlvaeWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def tails_table(snapshot: Snapshot) -> pd.DataFrame:
    """The tail statistics of both feature spaces side by side."""
    return pd.DataFrame({"ResNet (Fig. 5)": snapshot.tails_resnet,
                         "ResNet + VAE (Fig. 6)": snapshot.tails_vae}).round(4)
