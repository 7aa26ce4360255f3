"""Is a label-free representation a good one? Its leave-one-out k-nearest-neighbour accuracy over the pool,
with the labels its fit never saw (the usual probe of self-supervised features: Wu et al. 2018, §3.4;
Caron et al. 2021, DINO, §4.1, k = 20 on cosine similarity).

:func:`knn_accuracy` is the measure; :func:`representation_quality` applies it to each family fitted once
per pool (``simclr``, ``vae`` μ, ``mixvae`` μ) and to the raw pixels, and records each result next to the
fits (``results/quality/``), keyed like them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from ..config import SCHEMA_VERSION, ConfigError, ExperimentConfig, config_hash
from ..data.datasets import Dataset
from ..device import default_device, images_to_float, numerics
from ..paths import atomic_path, results_root
from ..selection.features import FeatureContext, get_family, pool_features

K_NEIGHBOURS = 20
PIXELS = "pixels"
"""The representation of the raw images, flattened (784 grey values in [0, 1]): the baseline."""
QUALITY_COLUMNS = ("dataset", "representation", "dim", "k", "knn_accuracy")


def knn_accuracy(features: Tensor, labels: Tensor, k: int = K_NEIGHBOURS, chunk: int = 1024) -> float:
    """Leave-one-out k-NN accuracy: each point's label predicted from its k most cosine-similar other points.

    ``features`` (N, d) real; ``labels`` (N,) integer classes, or (N, L) 0/1 for multi-label data. Rows are
    L2-normalised, so cosine similarity is their dot product; a point is never its own neighbour. A class
    label is the neighbours' majority, a tie going to the smallest class (as scikit-learn's uniform
    ``KNeighborsClassifier``); a multi-label point gets each label the neighbours hold in more than half,
    and its accuracy is the mean over labels (MedMNIST's ACC). Similarities are computed ``chunk`` rows at a
    time (memory O(chunk · N)). Returns the mean accuracy over the N points, in [0, 1].
    Raises ValueError for k outside [1, N − 1], mismatched lengths, or non-finite features.
    """
    n = features.shape[0]
    if features.ndim != 2 or labels.shape[0] != n:
        raise ValueError(f"features must be (N, d) with one label row per point; got {tuple(features.shape)} and "
                         f"labels {tuple(labels.shape)}.")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N − 1] = [1, {n - 1}] (a point is not its own neighbour), got {k}.")
    features = features.detach().to(torch.float32)
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features hold NaN or infinite values.")
    unit = torch.nn.functional.normalize(features, dim=1)
    multilabel = labels.ndim == 2
    targets = labels.to(features.device).long()
    classes = 0 if multilabel else int(targets.max()) + 1
    correct = 0.0
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=features.device)
        similarity = unit[rows] @ unit.T
        similarity[torch.arange(len(rows)), rows] = float("-inf")  # leave one out
        neighbours = targets[similarity.topk(k, dim=1).indices]  # (rows, k) or (rows, k, L)
        if multilabel:
            predicted = (neighbours.float().mean(dim=1) > 0.5).long()
            correct += (predicted == targets[rows]).float().mean(dim=1).sum().item()
        else:
            votes = torch.nn.functional.one_hot(neighbours, classes).sum(dim=1)  # argmax: the first (smallest) max
            correct += (votes.argmax(dim=1) == targets[rows]).sum().item()
    return correct / n


def representation_quality(pool: Dataset, experiment: ExperimentConfig,
                           families: Sequence[str] = ("simclr", "vae", "mixvae"), k: int = K_NEIGHBOURS,
                           device: torch.device | str | None = None, progress: bool = True,
                           root: Path | None = None) -> pd.DataFrame:
    """:func:`knn_accuracy` of the raw pixels and of each family's features of ``pool`` (fitted once per pool,
    without labels, with ``experiment``'s settings; from their caches when fitted before with these numerics).

    Each result is recorded under ``root`` (default :func:`~alvae_utils.paths.results_root`) in ``quality/``,
    keyed on the pool, the family, its settings, the numerics and k, and read back from there next time.
    Returns one row per representation, pixels first: :data:`QUALITY_COLUMNS`. Raises ConfigError for an
    unknown family, or one refitted at every step (its fit reads labels, so it is no label-free probe).
    """
    device = torch.device(device) if device is not None else default_device()
    entries = [get_family(name) for name in families]
    refitted = [family.name for family in entries if not family.fitted_once]
    if refitted:
        raise ConfigError(f"representation_quality probes families fitted once per pool without labels; "
                          f"{', '.join(refitted)} are refitted with the labels of L at every step.")
    root = root or results_root()
    rows = []
    for name in (PIXELS, *families):
        # What a fit reads (FeatureContext): the VAE's and SimCLR's settings; the pixels need none.
        settings = {} if name == PIXELS else {"vae": experiment.vae.fitted_once_key(),
                                              "simclr": asdict(experiment.simclr.resolved(experiment.vae))}
        key = config_hash({"schema": SCHEMA_VERSION, "dataset": pool.name, "data": pool.description,
                           "fingerprint": pool.fingerprint, "pool_seed": experiment.pool_seed, "family": name,
                           **settings, "numerics": numerics(device) if settings else {}, "k": k})
        path = root / "quality" / f"{pool.name}-{name}-{key}.json"
        if path.exists():
            rows.append(json.loads(path.read_text()))
            continue
        if name == PIXELS:
            features = images_to_float(pool.images).flatten(1)
        else:
            context = FeatureContext(pool, experiment.vae, experiment.pool_seed, device, progress, cache_root=root,
                                     simclr=experiment.simclr)
            features = pool_features(get_family(name), context)
        row = {"dataset": pool.name, "representation": name, "dim": int(features.shape[1]), "k": k,
               "knn_accuracy": knn_accuracy(features.cpu(), pool.labels.cpu(), k)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(row))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(QUALITY_COLUMNS))
