"""TypiClust (TPC-RP; Hacohen, Dekel & Weinshall, ICML 2022): typical points of uncovered clusters.

It selects from a task-agnostic representation alone, the "task-agnostic only" end of the paper's
spectrum: here the features of the method's feature family (``typiclust+vae`` clusters the VAE's μ).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans

from .pool import check_pool

TYPICALITY_NEIGHBOURS = 20
"""K of the typicality (the paper's K = 20)."""
MAX_CLUSTERS = 500
"""The cap on |L| + β clusters for large budgets (the authors' code, ``MAX_NUM_CLUSTERS``)."""
MIN_CLUSTER_SIZE = 5
"""Clusters of at most this many points are passed over while larger ones remain (the authors' code)."""
FULL_KMEANS_CLUSTERS = 50
"""Up to this many clusters, full k-means; above, mini-batch k-means with batches of 5,000 (the authors' code)."""


def typicality(features: torch.Tensor, k: int = TYPICALITY_NEIGHBOURS) -> torch.Tensor:
    """Typicality(x) = ((1/K) Σ_{x_i ∈ KNN(x)} ||x − x_i||₂)⁻¹ among the rows of ``features`` (n, d) (Hacohen
    et al. 2022, Eq. 4), K = min(k, n − 1) neighbours other than x itself; (n,) float64, inf for a point
    with K duplicates. A single row gets 1. scikit-activeml's ``_typicality`` computes the same with 1e-7
    added to the distance sum; the authors' code uses squared distances (faiss ``IndexFlatL2``) — this follows
    the paper's formula. Exact (all n × n distances): it is only applied within one cluster.
    """
    n = features.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    # numpy: a cluster holds tens of points, where each torch op's overhead would outweigh its work.
    x = features.detach().cpu().double().numpy()
    x = x - x.mean(0)  # centred, so ||x||² + ||y||² − 2x·y keeps float64's precision; n × n memory only
    norms = np.square(x).sum(1)
    distances = np.sqrt(np.maximum(norms[:, None] + norms[None, :] - 2 * x @ x.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    k = min(k, n - 1)
    return torch.from_numpy(1.0 / np.partition(distances, k - 1, axis=1)[:, :k].mean(1))


def cluster_pool(features: torch.Tensor, clusters: int, seed: int) -> torch.Tensor:
    """k-means cluster of every pool point (N,) int64: sklearn's KMeans up to :data:`FULL_KMEANS_CLUSTERS`
    clusters, MiniBatchKMeans (batches of 5,000) above, as the authors' code; seeded by ``seed``, one init."""
    x = features.detach().cpu().double().numpy()
    if clusters <= FULL_KMEANS_CLUSTERS:
        model = KMeans(n_clusters=clusters, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=clusters, batch_size=5000, n_init=1, random_state=seed)
    return torch.from_numpy(model.fit_predict(x).astype(np.int64))


def typiclust_select(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int,
                     generator: torch.Generator) -> torch.Tensor:
    """TypiClust's β picks (int64 pool indices, pick order) from a task-agnostic representation (N, k).

    1. k-means of the whole pool (labeled and unlabeled) into min(|L| + β, :data:`MAX_CLUSTERS`) clusters,
       seeded from ``generator`` (the run's selection generator).
    2. Clusters of more than :data:`MIN_CLUSTER_SIZE` points are ordered by their labeled count (fewest first),
       then by size (largest first), then by cluster id; smaller clusters follow in the same order (the
       authors drop them; they are reached here only when the larger ones run out of unlabeled points).
    3. Round-robin over that order (fixed, as in the authors' code): from each cluster, the unlabeled point
       not yet picked of highest :func:`typicality` among the cluster's unlabeled points not yet picked,
       with K = min(20, n_u // 2) for n_u such points (the authors' rule for small clusters); ties → lowest index.
       A cluster with none left is passed over.

    scikit-activeml's ``TypiClust`` departs from this: K = 5, clusters with a labeled point are excluded
    instead of ranked, ties are broken at random, and the number of clusters is not capped.
    Raises ValueError for features that are not a finite (N, k) tensor, a bad mask or β.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or not bool(torch.isfinite(features).all()):
        raise ValueError("TypiClust needs a finite (N, k) representation of the pool (its feature family's).")
    budget = check_pool(labeled_mask, budget, features.shape[0])
    labeled = labeled_mask.cpu()
    clusters = min(int(labeled.sum()) + budget, MAX_CLUSTERS, features.shape[0])
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    cluster_of = cluster_pool(features, clusters, seed)
    points = features.detach().cpu().double()
    sizes = torch.bincount(cluster_of, minlength=clusters)
    labeled_counts = torch.bincount(cluster_of[labeled], minlength=clusters)
    order = sorted(range(clusters), key=lambda c: (int(sizes[c]) <= MIN_CLUSTER_SIZE, int(labeled_counts[c]),
                                                   -int(sizes[c]), c))
    available = ~labeled
    # Each cluster's points (ascending), grouped once: a pick then reads its own cluster only, not all N.
    by_cluster = torch.argsort(cluster_of, stable=True).split(sizes.tolist())
    picks: list[int] = []
    while len(picks) < budget:
        for cluster in order:
            members = by_cluster[cluster][available[by_cluster[cluster]]]
            if len(members) == 0:
                continue
            k = max(1, min(TYPICALITY_NEIGHBOURS, len(members) // 2))
            best = int(members[int(torch.argmax(typicality(points[members], k)))])
            picks.append(best)
            available[best] = False
            if len(picks) == budget:
                break
    return torch.tensor(picks, dtype=torch.long, device=labeled_mask.device)
