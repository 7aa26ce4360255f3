"""Learning curves and the area under the budget curve (AUBC): one number per run, tested once.

* :func:`mean_curve` — the mean curve over seeds with a t-band;
* :func:`aubc` and :func:`run_aubc` — a run's whole curve as the area under it, normalised by the label range;
* :func:`aubc_summary` — per method, over seeds;
* :func:`paired_aubc_tests` — each comparison tested once (paired t-test, Wilcoxon as the check), with
  Holm across the comparisons of its table (:mod:`alvae_utils.analysis.stats` has the tests).

Input is the tidy results table of :mod:`alvae_utils.experiment.results` (one row per run and AL step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..selection.methods import variant_pairs
from .stats import (
    NOTE_NO_PAIRS, _findings, check_level, check_power, detectable_difference, holm, paired_statistics, require_columns,
    t_half_width,
)


def mean_curve(df: pd.DataFrame, metric: str = "accuracy", level: float = 0.95) -> pd.DataFrame:
    """Mean learning curve over seeds per (dataset, method, n_labels), with a t-confidence band.

    Columns ``mean``, ``sd`` (ddof 1), ``n`` (seeds with a value), ``ci_low``,
    ``ci_high`` = mean ∓ t_{(1+level)/2, n−1} · sd / √n; with n = 1 the sd and
    the band are NaN. A t-interval rather than a bootstrap: with the 3–5 seeds
    of a run, a bootstrap interval is far too narrow.
    """
    if metric not in df.columns:
        raise ValueError(f"results table has no column {metric!r}.")
    check_level(level)
    grouped = df.dropna(subset=[metric]).groupby(["dataset", "method", "n_labels"], sort=True)[metric]
    curve = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    half = t_half_width(curve["sd"].to_numpy(float), curve["n"].to_numpy(float), level)
    curve["ci_low"] = curve["mean"] - half
    curve["ci_high"] = curve["mean"] + half
    return curve


# ---------------------------------------------------------------------------------------------------------------
# AUBC: the area under the budget curve, one number per run and one test per comparison.

RUN_GROUP: tuple[str, ...] = ("dataset", "data_description", "config_key")
"""Columns (those present) that keep runs apart: runs are only summarised and paired within one
dataset, data source and configuration, where they share a label grid."""

AUBC_RUN_COLUMNS: tuple[str, ...] = ("n_steps", "first_labels", "last_labels", "aubc")
AUBC_SUMMARY_COLUMNS: tuple[str, ...] = ("n_steps", "first_labels", "last_labels", "n_runs", "mean", "sd",
                                         "ci_low", "ci_high")
AUBC_TEST_COLUMNS: tuple[str, ...] = (
    "n_steps", "first_labels", "last_labels", "n_pairs", "mean_baseline", "mean_treatment", "mean_diff",
    "ci_low", "ci_high", "d_z", "p_ttest", "p_wilcoxon", "p_holm", "significant", "note",
)

POWER_COLUMNS: tuple[str, ...] = ("sd_diff", "detectable_diff")
"""Columns :func:`paired_aubc_tests` adds when given a power."""


@dataclass(frozen=True)
class LearningCurves:
    """What a learning-curve figure draws, computed: the mean curves and where they come from.

    ``curve`` is :func:`mean_curve` of the drawn methods (columns dataset, method, n_labels, mean, sd,
    n, ci_low, ci_high); ``methods`` the drawn methods in order; ``seeds`` each method's number of seeds
    with a value; ``profile`` and ``data_description`` the rows' (joined when several).
    """

    dataset: str
    metric: str
    methods: tuple[str, ...]
    curve: pd.DataFrame
    seeds: dict[str, int]
    profile: str
    data_description: str


def _joined(rows: pd.DataFrame, column: str) -> str:
    if column not in rows.columns:
        return ""
    return "; ".join(sorted(map(str, rows[column].dropna().unique())))


def learning_curves(df: pd.DataFrame, dataset: str, methods: Sequence[str], metric: str = "accuracy",
                    level: float = 0.95) -> LearningCurves:
    """The mean ``metric`` over seeds against the number of labels for ``methods`` on ``dataset`` (Figs. 1–4).

    Methods absent from ``df`` (or without ``metric`` values) are left out. Raises ValueError when
    ``dataset`` has no rows, when its rows mix configurations, or when none of ``methods`` remains.
    """
    rows = df[df["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r}; present: {sorted(df['dataset'].unique())}.")
    if "config_key" in rows.columns and rows["config_key"].nunique() > 1:
        raise ValueError(f"the rows of {dataset!r} mix configurations (config keys "
                         f"{sorted(map(str, rows['config_key'].unique()))}); plot one at a time.")
    curve = mean_curve(rows[rows["method"].isin(list(methods))], metric, level)
    present = [m for m in methods if m in set(curve["method"])]
    if not present:
        raise ValueError(f"none of the methods {list(methods)} has {metric!r} values for {dataset!r}; "
                         f"present: {sorted(rows['method'].unique())}.")
    plotted = rows[rows["method"].isin(present)]
    seeds = plotted.dropna(subset=[metric]).groupby("method")["seed"].nunique()
    return LearningCurves(dataset, metric, tuple(present), curve[curve["method"].isin(present)],
                          {method: int(seeds[method]) for method in present}, _joined(plotted, "profile"),
                          _joined(plotted, "data_description"))


def aubc(n_labels: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Area under the budget curve of one run: the trapezoid over label counts, normalised by the label range.

    With the label counts sorted, n_1 < … < n_K (K ≥ 2; the input may come in any
    order), and ``values`` y_1 … y_K of a metric at them::

        AUBC = 1 / (n_K − n_1) · Σ_{k=1}^{K−1} (n_{k+1} − n_k) · (y_k + y_{k+1}) / 2

    It is the mean height of the piecewise-linear learning curve over [n_1, n_K], so it
    lies between the smallest and the largest value: in [0, 1] for accuracy and AUC,
    and equal to y when the curve is flat at y. Each label count weighs by the spacing
    around it: on an even grid the interior counts weigh 1/(K − 1) and the two ends
    half that; on an uneven grid a count between wide gaps weighs more. The
    un-normalised area under the accuracy–budget curve is the AUBC of Zhan et al.
    (2021, "A comparative survey: benchmarking for pool-based active learning",
    IJCAI survey track); dividing by the label range makes runs of one grid
    comparable on the metric's own scale.

    ``n_labels`` and ``values``: 1-d, same length; a NaN value gives NaN. Raises
    ValueError for different lengths, fewer than two label counts (one point has
    no range to normalise by: the area is 0/0, so no value is returned), a repeated
    or non-finite label count.
    """
    x = np.asarray(n_labels, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"n_labels and values must be 1-d arrays of one length, got shapes {x.shape} and {y.shape}.")
    if len(x) < 2:
        raise ValueError(f"AUBC needs at least two label counts (a curve), got {len(x)}: with one the label range "
                         "is 0 and the normalised area 0/0 is undefined.")
    if not np.isfinite(x).all():
        raise ValueError(f"label counts must be finite, got {x.tolist()}.")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if (np.diff(x) == 0).any():
        raise ValueError(f"label count(s) {sorted(set(x[1:][np.diff(x) == 0].tolist()))} appear more than once; "
                         "one run has one value per label count.")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def _run_name(identity: dict[str, object]) -> str:
    """``coreset+vae seed 2 on mnist [config 1a2b]`` for error messages."""
    where = str(identity["dataset"])
    if identity.get("data_description") is not None:
        where += f" [{identity['data_description']}]"
    if identity.get("config_key") is not None:
        where += f" [config {identity['config_key']}]"
    return f"{identity['method']} seed {identity['seed']} on {where}"


def run_aubc(rows: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The AUBC (:func:`aubc`) of ``metric`` for every run in ``rows``: one row per run.

    ``rows``: the tidy table of :mod:`alvae_utils.experiment.results` (one row per run and AL
    step; needs ``dataset``, ``method``, ``seed``, ``n_labels`` and ``metric``). A run
    is a (dataset, data source, configuration, method, seed), as far as those columns
    are present. Returns the run columns (:data:`RUN_GROUP` present, ``method``,
    ``seed``) and ``n_steps``, ``first_labels``, ``last_labels`` (the label range the
    area is normalised by) and ``aubc`` — in the metric's units, NaN where the run
    has a NaN value at any step (e.g. an AUC that no class could score). Sorted by run.

    Raises ValueError, naming the run(s), when:

    * a run has several rows at one label count (the rows mix configurations);
    * a run misses a step: its ``step`` numbers, in label order, are not 0, 1, …;
    * the runs of one dataset, source and configuration do not share one label grid
      (an interrupted run covers a shorter range, and areas over different ranges are
      not comparable): resume it by running 02 again, or leave it out of ``rows``;
    * the grid has a single label count (no curve; see :func:`aubc`).
    """
    require_columns(rows, ("dataset", "method", "seed", "n_labels", metric))
    keys = [c for c in RUN_GROUP if c in rows.columns]
    run = [*keys, "method", "seed"]
    columns = [*run, *AUBC_RUN_COLUMNS]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    duplicated = rows.duplicated([*run, "n_labels"])
    if duplicated.any():
        example = rows.loc[duplicated, [*run, "n_labels"]].iloc[0].to_dict()
        raise ValueError(f"run {_run_name(example)} has several rows at {example['n_labels']} labels; the table "
                         "mixes runs of different configurations. Select one profile/config_key first.")
    runs: list[tuple[dict[str, object], np.ndarray, np.ndarray]] = []
    for identity, steps in rows.sort_values("n_labels", kind="stable").groupby(run, sort=True, dropna=False):
        identity = dict(zip(run, identity, strict=True))
        labels = steps["n_labels"].to_numpy()
        if "step" in steps.columns:
            numbers = steps["step"].to_numpy()
            if not np.array_equal(numbers, np.arange(len(numbers))):
                raise ValueError(f"run {_run_name(identity)} misses a step: steps {numbers.tolist()} at label counts "
                                 f"{labels.tolist()}, not {list(range(len(numbers)))}. Its AUBC would skip part of "
                                 "the curve; resume the run (run 02 again) or leave it out.")
        runs.append((identity, labels, steps[metric].to_numpy(float)))

    grids: dict[tuple, dict[tuple, list[str]]] = {}
    for identity, labels, _ in runs:
        group = tuple(identity[k] for k in keys)
        name = f"{identity['method']} seed {identity['seed']}"
        grids.setdefault(group, {}).setdefault(tuple(int(n) for n in labels), []).append(name)
    for group, by_grid in grids.items():
        if len(by_grid) > 1:
            (common, most), *others = sorted(by_grid.items(), key=lambda item: (-len(item[1]), item[0]))
            listing = "; ".join(f"{list(grid)}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
                                for grid, names in others)
            raise ValueError(f"the runs of {dict(zip(keys, group, strict=True))} do not share one label grid, so "
                             f"their AUBCs are not comparable: {len(most)} runs have {list(common)}, but {listing}. "
                             "A shorter grid is an interrupted run: resume it (run 02 again with the same "
                             "parameters) or leave it out of the rows.")
        grid = next(iter(by_grid))
        if len(grid) < 2:
            raise ValueError(f"the runs of {dict(zip(keys, group, strict=True))} have one label count ({grid[0]}): "
                             "AUBC needs a curve of at least two.")

    records = [{**identity, "n_steps": len(labels), "first_labels": int(labels[0]), "last_labels": int(labels[-1]),
                "aubc": aubc(labels, values)} for identity, labels, values in runs]
    return pd.DataFrame(records).loc[:, columns]


def aubc_summary(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean AUBC over seeds per (dataset, source, configuration, method) of a :func:`run_aubc` table.

    Columns: the group (:data:`RUN_GROUP` present), ``method``, ``n_steps``,
    ``first_labels``, ``last_labels``, ``n_runs`` (seeds with a finite AUBC), ``mean``,
    ``sd`` (ddof 1) and ``ci_low``, ``ci_high`` = mean ∓ t_{(1+level)/2, n−1} · sd / √n
    (NaN with one run), in the metric's units, as in :func:`mean_curve`.
    """
    require_columns(runs, ("dataset", "method", "seed", *AUBC_RUN_COLUMNS), "run_aubc")
    check_level(level)
    group = [*(c for c in RUN_GROUP if c in runs.columns), "method"]
    if runs.empty:
        return pd.DataFrame(columns=[*group, *AUBC_SUMMARY_COLUMNS])
    grouped = runs.groupby(group, sort=True, dropna=False)
    summary = grouped.agg(n_steps=("n_steps", "first"), first_labels=("first_labels", "first"),
                          last_labels=("last_labels", "first"), n_runs=("aubc", "count"), mean=("aubc", "mean"),
                          sd=("aubc", "std")).reset_index()
    half = t_half_width(summary["sd"].to_numpy(float), summary["n_runs"].to_numpy(float), level)
    summary["ci_low"] = summary["mean"] - half
    summary["ci_high"] = summary["mean"] + half
    return summary.loc[:, [*group, *AUBC_SUMMARY_COLUMNS]]


def paired_aubc_tests(
    rows: pd.DataFrame,
    metric: str = "accuracy",
    pairs: Sequence[tuple[str, str]] | None = None,
    alpha_level: float = 0.05,
    level: float = 0.95,
    power: float | None = None,
) -> pd.DataFrame:
    """One paired test of AUBC per comparison: each heuristic vs each of its feature-family variants.

    ``rows``: the tidy results table (see :func:`run_aubc`, which computes one AUBC of
    ``metric`` per run and refuses missing steps and unequal label grids). Within each
    dataset, data source and configuration, ``pairs`` (default:
    :func:`~alvae_utils.selection.methods.variant_pairs` of the methods present — ``coreset`` with
    ``coreset+vae``, ``coreset+vae(α=4)``, ``coreset+ssvae`` …) are compared on the
    seeds for which both methods have a finite AUBC; pairs with a method missing are
    skipped, as are groups whose ``metric`` is NaN throughout.

    One row per (group, baseline, treatment): the group columns, ``baseline``,
    ``treatment``, ``metric``, the grid (``n_steps``, ``first_labels``, ``last_labels``)
    and the columns of :func:`paired_comparison` for AUBC instead of one label count:
    ``n_pairs``, ``mean_baseline``, ``mean_treatment``, ``mean_diff`` (treatment −
    baseline, in the metric's units), ``ci_low``/``ci_high`` (``level`` t-interval of
    the mean difference), ``d_z``, ``p_ttest`` (two-sided paired t-test,
    ``scipy.stats.ttest_rel``; the primary test), ``p_wilcoxon`` (:func:`wilcoxon_p`,
    the check), ``p_holm``, ``significant`` (``p_holm < alpha_level``) and ``note``
    (why a row has no t-test: one pair, identical or constant differences, or
    :data:`NOTE_NO_PAIRS`).

    Each comparison is a single test, so nothing is corrected across label counts.
    **Holm family:** ``p_holm`` adjusts ``p_ttest`` across every comparison in the
    returned table — all datasets, sources, configurations and pairs of ``rows``, for
    this one ``metric`` — so call it once on the rows whose comparisons form the claim.

    With ``power``, two more columns say what each test could have seen: ``sd_diff`` (sd of the paired
    AUBC differences) and ``detectable_diff``, the smallest true mean difference that a two-sided paired
    t-test at ``alpha_level`` detects with that power (:func:`~alvae_utils.analysis.stats.detectable_difference`;
    NaN with fewer than 2 pairs or constant differences, where there is no t-test).
    """
    check_level(alpha_level)
    if power is not None:
        check_power(power, alpha_level)
    if metric not in rows.columns:
        raise ValueError(f"results table has no column {metric!r}.")
    check_level(level)
    runs = run_aubc(rows, metric)
    keys = [c for c in RUN_GROUP if c in runs.columns]
    columns = [*keys, "baseline", "treatment", "metric", *AUBC_TEST_COLUMNS,
               *(POWER_COLUMNS if power is not None else ())]
    records = []
    for identity, group in runs.groupby(keys, sort=True, dropna=False):
        if group["aubc"].isna().all():
            continue
        present = set(group["method"])
        grid = group.iloc[0][["n_steps", "first_labels", "last_labels"]].to_dict()
        for baseline, treatment in (variant_pairs(present) if pairs is None else pairs):
            if baseline not in present or treatment not in present:
                continue
            base, treat = (group[group["method"] == method].set_index("seed")["aubc"].dropna()
                           for method in (baseline, treatment))
            seeds = sorted(set(base.index) & set(treat.index))
            if seeds:
                result = paired_statistics(base[seeds].to_numpy(float), treat[seeds].to_numpy(float), level)
            else:
                result = {"n_pairs": 0, "mean_baseline": np.nan, "mean_treatment": np.nan, "mean_diff": np.nan,
                          "ci_low": np.nan, "ci_high": np.nan, "d_z": np.nan, "p_ttest": np.nan,
                          "p_wilcoxon": np.nan, "note": NOTE_NO_PAIRS}
            if power is not None:
                usable = result["n_pairs"] >= 2 and np.isfinite(result.get("sd_diff", np.nan))
                result["detectable_diff"] = (detectable_difference(result["sd_diff"], result["n_pairs"], alpha_level,
                                                                   power) if usable else np.nan)
            records.append({**dict(zip(keys, identity, strict=True)), "baseline": baseline, "treatment": treatment,
                            "metric": metric, **{k: int(v) for k, v in grid.items()}, **result})
    if not records:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(records)
    table["p_holm"] = holm(table["p_ttest"].to_numpy(float))
    table["significant"] = table["p_holm"] < alpha_level  # NaN compares False
    return table.loc[:, columns]



def aubc_findings(table: pd.DataFrame, alpha_level: float = 0.05) -> list[str]:
    """One sentence per row of a :func:`paired_aubc_tests` table with unadjusted ``p_ttest < alpha_level``.

    Like :func:`significant_findings`, for the whole curve instead of one label count, e.g.
    ``"lossprediction+vae vs lossprediction on mnist, AUBC of accuracy over 3000–21000 labels:
    Δ=+0.80 pp (5 pairs), p=0.03 (paired t-test), p_holm=0.2: not significant after Holm"``.
    """
    return _findings(table, alpha_level, ["first_labels", "last_labels"], "paired_aubc_tests",
                     lambda row: f", AUBC of {row.metric} over {row.first_labels}–{row.last_labels} labels: Δ=")
