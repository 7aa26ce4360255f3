"""Tables for reading stored results: mean learning curves, runtimes, significance and AUBC.

Inputs are the tidy rows of :mod:`alvae_utils.experiment.results` (one per run and AL step)
and the comparison tables of :mod:`alvae_utils.analysis.stats`.
"""

from __future__ import annotations

import pandas as pd

from .stats import dataset_labels

# Total runtimes reported in the paper (4× RTX 2080, 5 seeds, all methods of a heuristic's figure).
PAPER_RUNTIME_SECONDS: dict[tuple[str, str], float] = {
    ("mnist", "coreset"): 5113.0,
    ("mnist", "lossprediction"): 4955.0,
    ("chestmnist", "coreset"): 7085.0,
    ("chestmnist", "lossprediction"): 7209.0,
}


def summary_table(rows: pd.DataFrame, metric: str = "accuracy", decimals: int = 4) -> pd.DataFrame:
    """Mean of ``metric`` over seeds: one row per method, one column per label count."""
    table = rows.pivot_table(index="method", columns="n_labels", values=metric, aggfunc="mean")
    return table.round(decimals)


def runtime_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Wall-clock seconds per method (summed over steps and seeds), split into train/select/eval/features.

    ``features_seconds`` is the fitting of a feature family refitted at every step
    (``+ssvae``); a family fitted once per pool is fitted before the runs that use it and counts in
    none (the column is 0 for it). Compare a heuristic figure's total with
    :data:`PAPER_RUNTIME_SECONDS` only as an order of magnitude: the paper ran on 4 GPUs.
    """
    parts = [part for part in ("train_seconds", "select_seconds", "eval_seconds", "features_seconds")
             if part in rows.columns]
    table = rows.groupby(["dataset", "method"])[parts].sum()
    table["total_seconds"] = table.sum(axis=1)
    table["runs"] = rows.groupby(["dataset", "method"])["seed"].nunique()
    return table.round(1)


def significance_view(table: pd.DataFrame, decimals: int = 4) -> pd.DataFrame:
    """A :func:`alvae_utils.analysis.stats.compare_variants` table laid out for reading.

    One row per (dataset, "treatment vs baseline", n_labels). The data source
    joins the dataset label only where one dataset has results from several
    sources (MNIST and its offline stand-in), so the usual table stays narrow.
    """
    view = table.assign(dataset=dataset_labels(table), comparison=table["treatment"] + " vs " + table["baseline"])
    columns = ["n_pairs", "mean_baseline", "mean_treatment", "mean_diff", "ci_low", "ci_high", "d_z",
               "p_ttest", "p_wilcoxon", "p_holm", "significant", "note"]
    return view.set_index(["dataset", "comparison", "n_labels"])[columns].round(decimals)


def _label_range(table: pd.DataFrame) -> pd.Series:
    """``"10–30"``: the label range an AUBC is normalised by."""
    return table["first_labels"].astype(int).astype(str) + "–" + table["last_labels"].astype(int).astype(str)


def aubc_view(summary: pd.DataFrame, decimals: int = 4) -> pd.DataFrame:
    """A :func:`alvae_utils.analysis.aubc.aubc_summary` table laid out for reading.

    One row per (dataset, method): ``labels`` (the range the area is normalised over),
    ``n_steps``, ``n_runs`` (seeds), ``mean`` AUBC with ``sd`` and its t-interval
    ``ci_low``–``ci_high``, rounded to ``decimals``, and the method's ``kind`` where the table has one
    (:func:`alvae_utils.analysis.study.ranking`). The data source and configuration
    join the dataset label only where a dataset has several (:func:`dataset_labels`).
    """
    view = summary.assign(dataset=dataset_labels(summary), labels=_label_range(summary))
    columns = [*(["kind"] if "kind" in summary.columns else []), "labels", "n_steps", "n_runs", "mean", "sd",
               "ci_low", "ci_high"]
    return view.set_index(["dataset", "method"])[columns].round(decimals)


def aubc_test_view(table: pd.DataFrame, decimals: int = 4) -> pd.DataFrame:
    """A :func:`alvae_utils.analysis.aubc.paired_aubc_tests` table laid out for reading.

    One row per (dataset, "treatment vs baseline"), with the label range of the AUBC,
    the paired statistics and the p-values (``p_holm`` across the rows of the table),
    rounded to ``decimals``; with the power columns (``sd_diff``, ``detectable_diff``) where the
    table has them, and indexed by ``question`` first where it has one
    (:func:`alvae_utils.analysis.study.study_tests`).
    """
    view = table.assign(dataset=dataset_labels(table), comparison=table["treatment"] + " vs " + table["baseline"],
                        labels=_label_range(table))
    columns = ["labels", "n_steps", "n_pairs", "mean_baseline", "mean_treatment", "mean_diff", "ci_low", "ci_high",
               "d_z", "p_ttest", "p_wilcoxon", "p_holm", "significant",
               *(c for c in ("sd_diff", "detectable_diff") if c in table.columns), "note"]
    index = [*(["question"] if "question" in table.columns else []), "dataset", "comparison"]
    return view.set_index(index)[columns].round(decimals)


def alpha_sweep_view(sweep: pd.DataFrame, decimals: int = 4) -> pd.DataFrame:
    """An :func:`alvae_utils.analysis.open_questions.alpha_sweep` table laid out for reading: one row per method.

    ``alpha`` (0: the plain heuristic; blank for balanced), ``alpha_estimated`` (balanced:
    the mean α it estimated), ``n_runs`` and the mean AUBC with its sd and t-interval.
    """
    columns = ["alpha", "alpha_estimated", "n_runs", "mean", "sd", "ci_low", "ci_high"]
    return sweep.set_index("method")[columns].round(decimals)
