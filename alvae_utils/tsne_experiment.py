"""The t-SNE experiment of Figs. 5–6: one core-set step, seen in two feature spaces.

Paper: train ResNet-18 on 1,000 initial ChestMNIST labels, draw a random 5%
(1,556) of the unlabeled points, let core-set (Eq. 1) pick 100 of them, and
embed the labeled, unlabeled and picked points with t-SNE — once in the ResNet
feature space (Fig. 5) and once with the VAE features appended (Eq. 6, Fig. 6).
Any method whose heuristic selects from appended features alone (core-set,
MedAL, …) and its feature family can stand in for core-set + VAE.

The compute is cached (``results/<profile>/tsne/<key>.npz``) apart from the
plotting, so the figures can be redrawn without retraining.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import ConfigError, VAEConfig, config_hash
from .data import DataUnavailableError, Dataset, load_experiment_data
from .device import default_device
from .features import FeatureContext
from .heuristics import APPEND, select
from .methods import Method
from .paths import atomic_path, results_root
from .profiles import Profile
from .seeds import MODEL, TRAIN, TSNE_SAMPLE, derive_seed
from .selection import augment_features, initial_labeled_indices
from .training import build_task_model, predict, train_task_model
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
    warnings.warn(f"{tsne.dataset} unavailable, using {tsne.fallback_dataset} for the t-SNE figures: {reason}",
                  stacklevel=2)
    return pool, True


def _vae_config(profile: Profile, dataset: str) -> VAEConfig:
    return profile.experiment(dataset).vae if dataset in profile.datasets else VAEConfig()


def run_snapshot(profile: Profile, seed: int = 0, method: Method = PAPER_METHOD,
                 device: torch.device | None = None, progress: bool = True) -> Snapshot:
    """Compute (or load from cache) the snapshot for ``profile``.

    ``method`` must pair a heuristic that selects from appended features alone
    (core-set, MedAL) with a feature family fitted once per pool; its plain
    heuristic gives Fig. 5 and the method itself Fig. 6. Raises ConfigError otherwise.
    """
    method.validate()
    heuristic, family = method.spec, method.family
    if heuristic.extra_features != APPEND or set(heuristic.needs) != {"features"} or family is None \
            or family.refit_each_step:
        raise ConfigError(f"the t-SNE snapshot needs a heuristic that selects from features alone plus a feature "
                          f"family fitted once per pool (e.g. coreset+vae); got {method.label}.")
    tsne = profile.tsne
    pool, fell_back = tsne_pool(profile)
    train = replace(profile.experiments[0].train, initial_epochs=tsne.epochs, epoch_increment=0)
    vae_config = _vae_config(profile, pool.name)
    key = config_hash({"tsne": asdict(tsne), "train": asdict(train), "vae": asdict(vae_config), "dataset": pool.name,
                       "description": pool.description, "seed": seed, "method": method.key_fields()})
    cache = results_root() / profile.name / "tsne" / f"{key}.npz"
    if cache.exists():
        return _read(cache)

    device = device or default_device()
    labeled = initial_labeled_indices(tsne.pool_size, tsne.initial_labels, seed)
    unlabeled_mask = torch.ones(tsne.pool_size, dtype=torch.bool)
    unlabeled_mask[labeled] = False
    unlabeled = unlabeled_mask.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(derive_seed(TSNE_SAMPLE, seed))
    n_sample = round(tsne.unlabeled_fraction * len(unlabeled))
    sample = unlabeled[torch.randperm(len(unlabeled), generator=generator)[:n_sample]]
    points = torch.cat([labeled, sample])  # rows of every array below

    images = pool.images.to(device)
    model, _ = build_task_model(pool.num_outputs, train, seed=derive_seed(MODEL, seed, 0), device=device)
    on_device = labeled.to(device)
    train_task_model(model, images[on_device], pool.labels.to(device)[on_device], pool.task, tsne.epochs, train,
                     seed=derive_seed(TRAIN, seed, 0), progress=progress)
    resnet = predict(model, images[points.to(device)]).features
    # The pool was drawn with seed 0 (tsne_pool), so a cached VAE of the same pool is reused.
    fitted = family.fit(FeatureContext(pool, vae_config, pool_seed=0, device=device, progress=progress))
    family_features = family.encode(fitted, images[points.to(device)])
    augmented = augment_features(resnet, family_features, method.alpha)

    is_labeled = torch.zeros(len(points), dtype=torch.bool, device=resnet.device)
    is_labeled[: len(labeled)] = True
    picks = {name: select(method.heuristic, is_labeled, tsne.budget, features=feats).cpu().numpy()
             for name, feats in (("resnet", resnet), ("vae", augmented))}
    snapshot = Snapshot(
        dataset=pool.name, data_description=pool.description, fell_back=fell_back,
        groups_resnet=_groups(len(points), len(labeled), picks["resnet"]),
        groups_vae=_groups(len(points), len(labeled), picks["vae"]),
        embedding_resnet=embed(resnet.cpu().double().numpy(), seed=seed, perplexity=tsne.perplexity),
        embedding_vae=embed(augmented.cpu().double().numpy(), seed=seed, perplexity=tsne.perplexity),
        tails_resnet=_tails(resnet, len(labeled), picks["resnet"]),
        tails_vae=_tails(augmented, len(labeled), picks["vae"]),
        overlap=len(set(picks["resnet"].tolist()) & set(picks["vae"].tolist())),
    )
    _write(cache, snapshot)
    return snapshot


def _groups(n: int, n_labeled: int, picked: np.ndarray) -> np.ndarray:
    groups = np.full(n, "unlabeled", dtype=object)
    groups[:n_labeled] = "labeled"
    groups[picked] = "selected"
    return groups.astype(str)


def _tails(features: torch.Tensor, n_labeled: int, picked: np.ndarray) -> dict:
    """How far out the picks sit in this feature space (see :func:`alvae_utils.tsne.tail_statistics`)."""
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


def _read(path: Path) -> Snapshot:
    with np.load(path) as stored:
        meta = json.loads(str(stored["meta"]))
        return Snapshot(groups_resnet=stored["groups_resnet"], groups_vae=stored["groups_vae"],
                        embedding_resnet=stored["embedding_resnet"], embedding_vae=stored["embedding_vae"], **meta)


def tails_table(snapshot: Snapshot) -> pd.DataFrame:
    """The tail statistics of both feature spaces side by side."""
    return pd.DataFrame({"ResNet (Fig. 5)": snapshot.tails_resnet,
                         "ResNet + VAE (Fig. 6)": snapshot.tails_vae}).round(4)
