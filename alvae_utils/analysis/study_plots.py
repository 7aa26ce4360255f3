"""Notebook 06's figures, from the tables of :mod:`alvae_utils.analysis.study`: every method's AUBC ranked, and
each family's AUBC gain over the plain heuristic with what the test could have detected.

Like :mod:`alvae_utils.analysis.plots` (whose style, provenance footer and text fitting they share), each
function takes computed tables and returns a pyplot-free ``Figure``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.datasets import dataset_title
from .plots import _add_provenance, _band, _cut_note, _styled, provenance
from .stats import require_columns
from .styles import method_styles


def _seed_text(counts: pd.Series) -> int | str:
    counts = sorted(set(counts.astype(int)))
    return counts[0] if len(counts) == 1 else f"seeds per method: {counts[0]}–{counts[-1]}"


@_styled
def plot_aubc_ranking(ranked: pd.DataFrame, title: str = "", profile: str = "", data_description: str = "") -> Figure:
    """Every method's mean AUBC with its 95% t-interval, best at the top, one panel per dataset.

    ``ranked``: :func:`alvae_utils.analysis.study.ranking` (its ``kind`` labels each row, its ``metric``
    the axis). Intervals are cut to the metric's range and the legend says so. Raises ValueError
    for an empty table.
    """
    require_columns(ranked, ("dataset", "method", "kind", "mean", "ci_low", "ci_high", "n_runs", "metric"), "ranking")
    if ranked.empty:
        raise ValueError("the ranking is empty: no method has an AUBC to draw.")
    datasets = list(dict.fromkeys(ranked["dataset"]))
    most = max(len(ranked[ranked["dataset"] == d]) for d in datasets)
    fig = Figure(figsize=(6.8 * len(datasets), 1.2 + 0.32 * most), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)[0])
    styles = method_styles(ranked["method"])
    metric = str(ranked["metric"].iloc[0])
    any_cut = False
    for ax, dataset in zip(axes, datasets, strict=True):
        table = ranked[ranked["dataset"] == dataset].iloc[::-1]  # best at the top
        low, high, cut = _band(table["ci_low"], table["ci_high"], metric)
        any_cut |= cut
        y = np.arange(len(table))
        for position, (_, row), lo, hi in zip(y, table.iterrows(), low, high, strict=True):
            style = styles[row["method"]]
            if np.isfinite(lo):
                ax.plot([lo, hi], [position, position], color=style["color"], linewidth=2, alpha=0.6)
            ax.plot([row["mean"]], [position], marker=style["marker"], color=style["color"], markersize=6)
        reference = table.loc[table["method"] == "random", "mean"]
        if len(reference):
            ax.axvline(reference.iloc[0], color="0.5", linestyle=":", linewidth=1, label="random's mean")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_yticks(y, [f"{m}  [{k}]" for m, k in zip(table["method"], table["kind"], strict=True)], fontsize=8)
        ax.set_xlabel(f"AUBC of {metric} (mean over seeds)\n95% t-interval{_cut_note(any_cut, metric)}")
        ax.set_title(dataset_title(dataset) if len(datasets) > 1 else (title or dataset_title(dataset)))
    if len(datasets) > 1 and title:
        fig.suptitle(title)
    _add_provenance(fig, provenance(profile, data_description, _seed_text(ranked["n_runs"])))
    return fig


@_styled
def plot_family_gains(tests: pd.DataFrame, title: str = "", profile: str = "", data_description: str = "",
                      power: float = 0.8) -> Figure:
    """For each task-aware heuristic, the AUBC gain of appending each family over the plain heuristic.

    ``tests``: the ``appended`` rows of :func:`alvae_utils.analysis.study.study_tests` (one dataset): a
    point per (heuristic, family) at its mean paired difference in percentage points, a bar for its
    95% t-interval, filled where significant after Holm; grey ticks at ± the difference its test
    detects with ``power``. Raises ValueError for an empty table.
    """
    require_columns(tests, ("baseline", "treatment", "mean_diff", "ci_low", "ci_high", "significant",
                            "detectable_diff", "n_pairs"), "study_tests")
    if tests.empty:
        raise ValueError("no family comparison to draw (the run has no task-aware heuristic with a family).")
    fig = Figure(figsize=(6.8, 1.4 + 0.38 * len(tests)), layout="constrained")
    ax = fig.subplots()
    styles = method_styles(tests["treatment"])
    table = tests.iloc[::-1]
    y = np.arange(len(table))
    shown_detectable = False
    for position, row in zip(y, table.itertuples(), strict=True):
        style = styles[row.treatment]
        if np.isfinite(row.ci_low):
            ax.plot([100 * row.ci_low, 100 * row.ci_high], [position, position], color=style["color"], linewidth=2,
                    alpha=0.6)
        ax.plot([100 * row.mean_diff], [position], marker=style["marker"], markersize=7, color=style["color"],
                markerfacecolor=style["color"] if row.significant else "white")
        if np.isfinite(row.detectable_diff):
            ax.plot([-100 * row.detectable_diff, 100 * row.detectable_diff], [position, position], linestyle="none",
                    marker="|", markersize=10, color="0.55",
                    label=None if shown_detectable else f"± detectable with {power:.0%} power")
            shown_detectable = True
    ax.axvline(0, color="0.3", linewidth=1)
    ax.set_yticks(y, [f"{row.treatment} − {row.baseline}" for row in table.itertuples()], fontsize=8)
    ax.set_xlabel("AUBC gain over the plain heuristic (pp, paired by seed)\nmean and 95% t-interval; no bar: "
                  "constant or single differences")
    ax.set_title(title or "Gain from task-agnostic features")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles, fontsize=8, loc="best",
              title="filled: significant after Holm", title_fontsize=8)
    _add_provenance(fig, provenance(profile, data_description, _seed_text(tests["n_pairs"])))
    return fig
