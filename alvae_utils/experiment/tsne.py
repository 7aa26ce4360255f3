"""t-SNE embeddings and the "picks sit in the tails" statistic behind Figs. 5–6.

The paper embeds the labeled, unlabeled and core-set-selected (Eq. 1) points
with t-SNE, once in ResNet feature space (Fig. 5) and once with the VAE
features appended (Eq. 6, Fig. 6), and observes that with the VAE features "the
selected points are further out of distribution". A t-SNE picture cannot show
distances faithfully, so :func:`tail_statistics` measures the claim in the
original feature space. Plotting lives in :mod:`alvae_utils.analysis.plots`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from openTSNE import TSNE
from scipy import stats as sps

from ..progress import AlvaeWarning

# Below this many points exact neighbours are cheap, and they make the embedding bit-reproducible.
EXACT_NEIGHBORS_MAX_N = 5000
MIN_POINTS = 4  # perplexity is clipped to (N − 1)/3, which must stay ≥ 1


def _as_float64(features: np.ndarray | torch.Tensor, name: str = "features") -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (points × dimensions), got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values; check the model/VAE that produced them.")
    return x


def embed(features: np.ndarray | torch.Tensor, seed: int, perplexity: float = 30.0, n_jobs: int = 1) -> np.ndarray:
    """2-D openTSNE embedding of ``features`` (N, d) with PCA initialisation; returns a float64 (N, 2) array.

    Neighbours are exact below 5,000 points (approximate above). With
    ``n_jobs=1`` the same seed gives an identical embedding; for bit-identical
    runs across processes also set ``OMP_NUM_THREADS`` (e.g. to 1) before numpy
    and openTSNE are imported, since BLAS threading can change the PCA
    initialisation in the last bits. ``perplexity`` is clipped to (N − 1)/3,
    with a warning, because t-SNE needs ≈ 3·perplexity neighbours per point.
    Raises ValueError for fewer than 4 points, points that are all identical (no
    distance to preserve), or an embedding that is not finite.
    """
    x = _as_float64(features)
    n = x.shape[0]
    if n < MIN_POINTS:
        raise ValueError(f"t-SNE needs at least {MIN_POINTS} points, got {n}.")
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}.")
    if not (x != x[0]).any():
        # Every distance is 0: t-SNE's affinities are 0/0, and openTSNE returns an all-NaN embedding.
        raise ValueError(f"all {n} points have the same features, so t-SNE has no distances to preserve; check the "
                         "model that produced them (a collapsed network or VAE gives identical features).")
    limit = (n - 1) / 3
    if perplexity > limit:
        warnings.warn(f"perplexity {perplexity} is too large for {n} points; using {limit:.3g}.",
                      AlvaeWarning, stacklevel=2)
        perplexity = limit
    tsne = TSNE(
        perplexity=perplexity,
        initialization="pca",
        random_state=seed,
        n_jobs=n_jobs,
        neighbors="exact" if n < EXACT_NEIGHBORS_MAX_N else "auto",
        verbose=False,
    )
    embedding = np.array(tsne.fit(x), dtype=np.float64)
    if not np.isfinite(embedding).all():
        raise ValueError(f"the t-SNE embedding of these {n} points is not finite (openTSNE diverged); check the "
                         "features for near-duplicate points or extreme scales, or lower the perplexity.")
    return embedding


def _index(indices, n: int, name: str) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{name} has indices outside [0, {n}).")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"{name} contains repeated indices.")
    return idx


def tail_statistics(features: np.ndarray | torch.Tensor, labeled_idx, unlabeled_idx, selected_idx) -> dict:
    """How far out the selected points sit, compared with the unlabeled points they were chosen from.

    Each point's distance is its Euclidean distance to the centroid of all given
    points (labeled ∪ unlabeled ∪ selected; rows of ``features`` not indexed are
    ignored). ``selected_idx`` must be disjoint from the other two groups: pass
    the unlabeled points that were *not* picked as ``unlabeled_idx``. Returns:

    * ``labeled_median_distance``, ``unlabeled_median_distance``,
      ``selected_median_distance``: median distances in feature units;
    * ``ratio``: selected median / unlabeled median, i.e. the selected median in
      units of the typical unlabeled distance. Scale-free, so feature spaces
      (ResNet vs ResNet+VAE) can be compared. 1 = picks as central as the pool;
      > 1 = picks further out in the tails;
    * ``labeled_ratio``: the same for the labeled points (≈ 1: random labels);
    * ``selected_percentile``: mean percentile rank (0–100) of each selected
      distance among the unlabeled distances; 50 = typical, near 100 = beyond
      almost all unlabeled points;
    * ``mannwhitney_p``: one-sided Mann–Whitney U p-value for "selected
      distances are stochastically larger than unlabeled distances";
    * ``n_labeled``, ``n_unlabeled``, ``n_selected``.
    """
    x = _as_float64(features)
    n = x.shape[0]
    labeled = _index(labeled_idx, n, "labeled_idx")
    unlabeled = _index(unlabeled_idx, n, "unlabeled_idx")
    selected = _index(selected_idx, n, "selected_idx")
    if len(unlabeled) == 0 or len(selected) == 0:
        raise ValueError("tail_statistics needs at least one unlabeled and one selected point.")
    groups = np.concatenate([labeled, unlabeled, selected])
    if len(np.unique(groups)) != len(groups):
        raise ValueError("labeled_idx, unlabeled_idx and selected_idx overlap; each point belongs to one group.")

    centroid = x[groups].mean(axis=0)
    distance = np.linalg.norm(x - centroid, axis=1)
    d_lab, d_unl, d_sel = distance[labeled], distance[unlabeled], distance[selected]
    scale = np.median(d_unl)
    if scale == 0:
        raise ValueError("the unlabeled points all sit at the centroid; distances cannot be standardised.")
    percentiles = sps.percentileofscore(d_unl, d_sel, kind="mean")
    return {
        "labeled_median_distance": float(np.median(d_lab)) if len(d_lab) else float("nan"),
        "unlabeled_median_distance": float(scale),
        "selected_median_distance": float(np.median(d_sel)),
        "ratio": float(np.median(d_sel) / scale),
        "labeled_ratio": float(np.median(d_lab) / scale) if len(d_lab) else float("nan"),
        "selected_percentile": float(np.mean(percentiles)),
        "mannwhitney_p": float(sps.mannwhitneyu(d_sel, d_unl, alternative="greater").pvalue),
        "n_labeled": int(len(labeled)),
        "n_unlabeled": int(len(unlabeled)),
        "n_selected": int(len(selected)),
    }
