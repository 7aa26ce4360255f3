"""Which figures exist: their file names, titles, and the methods each one draws.

Figures 1–4 compare one heuristic with its feature-family variants (``coreset``
vs ``coreset+vae``), with random as a reference line, on one dataset. The
drawing itself is in :mod:`alvae_utils.analysis.plots`; the notebook table
(:mod:`alvae_utils.workflow.notebooks`) lists the files each notebook writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..selection.heuristics import HEURISTICS, get_heuristic
from ..selection.methods import parsed_methods

REFERENCE = "random"
"""The method drawn as a reference line in every heuristic's figure."""

# The paper's figure numbers; other datasets/heuristics get descriptive names.
PAPER_FIGURES: dict[tuple[str, str], str] = {
    ("mnist", "coreset"): "fig1",
    ("mnist", "lossprediction"): "fig2",
    ("chestmnist", "coreset"): "fig3",
    ("chestmnist", "lossprediction"): "fig4",
}
TSNE_STEMS: tuple[str, str] = ("fig5_tsne_resnet", "fig6_tsne_resnet_{family}")
"""Figs. 5–6: the plain feature space, and with the family's features appended."""

BEYOND_STEMS: tuple[str, str] = ("beyond_{dataset}_{heuristic}", "beyond_{dataset}_{heuristic}_alpha")
"""Notebook 05: a heuristic's new variants (learning curves), and its AUBC against α."""

DATASET_TITLES: dict[str, str] = {"mnist": "MNIST", "mnist-sample": "MNIST (5k sample)", "chestmnist": "ChestMNIST",
                                  "fashionmnist": "Fashion-MNIST"}


def dataset_title(dataset: str, unavailable: str | None = None) -> str:
    """``"ChestMNIST"``; with ``unavailable``, says which dataset this one stands in for."""
    name = DATASET_TITLES.get(dataset, dataset)
    return f"{name} ({DATASET_TITLES.get(unavailable, unavailable)} unavailable)" if unavailable else name


def heuristic_methods(labels: Iterable[str], heuristic: str) -> list[str]:
    """Labels drawn in ``heuristic``'s figure: the heuristic and its variants (in the given order), then random."""
    labels = list(labels)
    members = [label for label, method in parsed_methods(labels).items() if method.heuristic == heuristic]
    return members + ([REFERENCE] if members and REFERENCE in labels and heuristic != REFERENCE else [])


def figure_heuristics(labels: Iterable[str]) -> list[str]:
    """Heuristics (in registry order) that accept feature families and have a method among ``labels``."""
    present = {method.heuristic for method in parsed_methods(labels).values()}
    return [name for name, spec in HEURISTICS.items() if spec.extra_features is not None and name in present]


def al_figure_stem(dataset: str, heuristic: str, metric: str = "accuracy") -> str:
    """``fig1_mnist_coreset``; ``..._auc`` for the AUC companion; other pairs named ``al_<dataset>_<heuristic>``."""
    prefix = PAPER_FIGURES.get((dataset, heuristic), "al")
    stem = f"{prefix}_{dataset}_{heuristic}"
    return stem if metric == "accuracy" else f"{stem}_{metric}"


def al_figure_title(dataset: str, heuristic: str, labels: Iterable[str] = ()) -> str:
    """``"MNIST: Core-set vs +VAE"``: the heuristic and the families of its variants among ``labels``."""
    families = dict.fromkeys(method.family.title for method in parsed_methods(labels).values()
                             if method.heuristic == heuristic and method.family is not None)
    versus = f" vs {', '.join('+' + title for title in families)}" if families else ""
    return f"{dataset_title(dataset)}: {get_heuristic(heuristic).title}{versus}"
