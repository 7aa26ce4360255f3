"""Turning stored results into the paper's figures and tables.

Figures 1–4 compare one heuristic family (a heuristic and its VAE-augmented
variant, with random as a reference line) on one dataset.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .stats import dataset_labels

FAMILIES: tuple[str, ...] = ("coreset", "lossprediction", "medal")

# The paper's figure numbers; other datasets/families get descriptive names.
PAPER_FIGURES: dict[tuple[str, str], str] = {
    ("mnist", "coreset"): "fig1",
    ("mnist", "lossprediction"): "fig2",
    ("chestmnist", "coreset"): "fig3",
    ("chestmnist", "lossprediction"): "fig4",
}

# Total runtimes reported in the paper (4× RTX 2080, 5 seeds, all methods of a family).
PAPER_RUNTIME_SECONDS: dict[tuple[str, str], float] = {
    ("mnist", "coreset"): 5113.0,
    ("mnist", "lossprediction"): 4955.0,
    ("chestmnist", "coreset"): 7085.0,
    ("chestmnist", "lossprediction"): 7209.0,
}

FAMILY_TITLES = {"coreset": "Core-set", "lossprediction": "Loss prediction", "medal": "MedAL"}
DATASET_TITLES = {"mnist": "MNIST", "mnist-sample": "MNIST (5k sample)", "chestmnist": "ChestMNIST",
                  "fashionmnist": "Fashion-MNIST"}


def family_methods(methods: Iterable[str], family: str) -> list[str]:
    """Method labels drawn in a family's figure: the heuristic, its VAE variants, then random."""
    methods = list(methods)
    members = [m for m in methods if m == family or m.startswith(f"{family}+vae")]
    return members + (["random"] if members and "random" in methods else [])


def families_present(methods: Iterable[str]) -> list[str]:
    """Families with at least the plain heuristic or a VAE variant in ``methods``."""
    methods = list(methods)
    return [family for family in FAMILIES if family_methods(methods, family)]


def al_figure_stem(dataset: str, family: str, metric: str = "accuracy") -> str:
    """``fig1_mnist_coreset``; ``..._auc`` for the AUC companion; other pairs named plainly."""
    prefix = PAPER_FIGURES.get((dataset, family), "al")
    stem = f"{prefix}_{dataset}_{family}"
    return stem if metric == "accuracy" else f"{stem}_{metric}"


def title(dataset: str, family: str) -> str:
    return f"{DATASET_TITLES.get(dataset, dataset)}: {FAMILY_TITLES.get(family, family)} vs +VAE"


def summary_table(rows: pd.DataFrame, metric: str = "accuracy", decimals: int = 4) -> pd.DataFrame:
    """Mean of ``metric`` over seeds: one row per method, one column per label count."""
    table = rows.pivot_table(index="method", columns="n_labels", values=metric, aggfunc="mean")
    return table.round(decimals)


def runtime_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Wall-clock seconds per method (summed over steps and seeds), split into train/select/eval.

    Compare a family's total with :data:`PAPER_RUNTIME_SECONDS` only as an
    order of magnitude: the paper ran on 4 GPUs.
    """
    parts = ["train_seconds", "select_seconds", "eval_seconds"]
    table = rows.groupby(["dataset", "method"])[parts].sum()
    table["total_seconds"] = table.sum(axis=1)
    table["runs"] = rows.groupby(["dataset", "method"])["seed"].nunique()
    return table.round(1)


def significance_view(table: pd.DataFrame, decimals: int = 4) -> pd.DataFrame:
    """A :func:`alvae_utils.stats.compare_variants` table laid out for reading.

    One row per (dataset, "treatment vs baseline", n_labels). The data source
    joins the dataset label only where one dataset has results from several
    sources (MNIST and its offline stand-in), so the usual table stays narrow.
    """
    view = table.assign(dataset=dataset_labels(table), comparison=table["treatment"] + " vs " + table["baseline"])
    columns = ["n_pairs", "mean_baseline", "mean_treatment", "mean_diff", "ci_low", "ci_high", "d_z",
               "p_ttest", "p_wilcoxon", "p_holm", "significant"]
    return view.set_index(["dataset", "comparison", "n_labels"])[columns].round(decimals)
