"""Significance tests and learning-curve summaries for stored AL results.

The paper reports one significant result ("loss prediction on the MNIST dataset
at 21000 labels", p < 0.05) but does not name its test. alvae states its tests:

* **Primary:** a two-sided *paired* t-test (``scipy.stats.ttest_rel``) of
  treatment vs baseline at each label count. Runs are paired by ``seed``: a
  heuristic and its VAE variant (Eq. 6) with the same seed start from the same
  initial labels, so pairing removes the seed-to-seed variation they share.
* **Check:** the Wilcoxon signed-rank test, which does not assume normal
  differences.
* **Multiplicity:** a comparison is tested at every label count, so p-values
  are Holm–Bonferroni adjusted across the label counts of that comparison.
  ``p_ttest`` stays unadjusted for comparison with the paper.
* **One number per run:** :func:`aubc` summarises a run's whole learning curve as
  the area under the budget curve, normalised by the label range;
  :func:`paired_aubc_tests` then tests each comparison once (paired t-test, Wilcoxon
  as the check), with Holm across the comparisons of its table.
* **Power:** :func:`detectable_difference` is the smallest difference a paired t-test
  of n pairs detects with 80% power, from the observed SD of the differences: what a
  "no significant difference" could not have seen.

Input is the tidy results table of :mod:`alvae_utils.experiment.results` (one row per
run and AL step).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from ..selection.methods import variant_pairs

# The paper's heuristic / heuristic+VAE pairs (MedAL's is defined in its text, Eq. 2).
PAPER_PAIRS: tuple[tuple[str, str], ...] = (
    ("coreset", "coreset+vae"),
    ("lossprediction", "lossprediction+vae"),
    ("medal", "medal+vae"),
)

COMPARISON_COLUMNS: tuple[str, ...] = (
    "n_labels", "n_pairs", "mean_baseline", "mean_treatment", "mean_diff", "ci_low", "ci_high",
    "d_z", "p_ttest", "p_wilcoxon", "p_holm", "significant", "note",
)

# Why a label count has no t-test (the ``note`` column); such rows are left out of the Holm adjustment.
NOTE_ONE_PAIR = "one pair: no test"
NOTE_IDENTICAL = "identical results: no difference to test"
NOTE_CONSTANT = "constant difference (sd = 0): t-test undefined"
NOTE_NO_PAIRS = "no seed with a value for both methods: no test"

# Largest n for which the Wilcoxon p-value enumerates all 2**n sign flips (exact, also with ties).
_EXACT_WILCOXON_MAX_N = 16

EQUAL_RTOL, EQUAL_ATOL = 1e-9, 1e-12
"""The one rule for "equal" in every test and statistic built on differences (:func:`equal_up_to_rounding`):
a − b is not exact in floating point, so two mathematically equal AUBCs can differ by 5.6e-17 after
summation, and a p-value must never come from such a residue (scipy #26082 for Wilcoxon)."""


def equal_up_to_rounding(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Elementwise: ``|a − b| ≤ EQUAL_ATOL + EQUAL_RTOL · max(|a|, |b|)`` (:data:`EQUAL_RTOL`, :data:`EQUAL_ATOL`).

    Used for zero differences (b = 0: ``|d| ≤ 1e-12``), constant differences (all equal to the first)
    and tied |differences| (Wilcoxon's ranks).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.abs(a - b) <= EQUAL_ATOL + EQUAL_RTOL * np.maximum(np.abs(a), np.abs(b))


def _without_rounding(differences: np.ndarray) -> np.ndarray:
    """``differences`` with those equal to 0 up to rounding set to 0, and |differences| equal up to rounding set
    to one value (the smallest of their run, keeping each sign), so that ranks see exact zeros and ties."""
    d = np.where(equal_up_to_rounding(differences, 0.0), 0.0, differences)
    magnitude = np.abs(d)
    order = np.argsort(magnitude, kind="stable")
    snapped = magnitude.copy()
    for previous, current in zip(order[:-1], order[1:], strict=True):
        if equal_up_to_rounding(snapped[previous], magnitude[current]):
            snapped[current] = snapped[previous]
    return np.sign(d) * snapped


def check_level(level: float) -> None:
    """ValueError unless ``level`` (a confidence level) is in (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")


def check_power(power: float, alpha_level: float) -> None:
    """ValueError unless ``alpha_level`` and ``power`` are in (0, 1) and ``power`` > ``alpha_level``: with no true
    difference a test rejects with probability ``alpha_level`` already, so no difference has a power at or below it."""
    check_level(alpha_level)
    check_level(power)
    if power <= alpha_level:
        raise ValueError(f"power={power:g} is not above the significance level alpha_level={alpha_level:g}: a test "
                         "rejects with that probability when there is no difference at all, so no difference has "
                         "this power. Choose a power above alpha_level (e.g. 0.8).")


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: str = "load_results") -> None:
    """ValueError naming the columns of ``columns`` that ``table`` lacks, and the function whose output it needs."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        results = source == "load_results"
        raise ValueError(f"{'results table' if results else 'table'} lacks column(s) {missing}; pass the "
                         f"{'table' if results else 'output'} of {source}.")


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down; controls the family-wise error rate).

    With the m finite p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted
    value of the i-th is ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``. NaN entries
    (tests that could not be computed) stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)  # the max over j ≤ i keeps the order monotone
    return adjusted


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired ``differences``.

    Differences equal to 0 up to rounding (:func:`equal_up_to_rounding`) are dropped
    (``zero_method="wilcox"``), and |differences| equal up to rounding tie; with fewer than two
    non-zero differences the p-value is 1.0 (all zero: nothing to test; one: both
    signs are equally likely, so 1.0 is the exact two-sided p). Up to 16 non-zero
    differences the p-value is exact: all 2**n sign flips are enumerated, which
    stays exact with tied |differences| (scipy's ``method="exact"`` ignores ties).
    Beyond that the normal approximation is used.

    With n pairs the smallest attainable two-sided p is 2 / 2**n: 0.0625 for
    the paper's 5 seeds, so this test can never reach 0.05 there.
    """
    d = _without_rounding(np.asarray(differences, dtype=float))
    nonzero = d[d != 0]
    if len(nonzero) < 2:
        return 1.0
    if len(nonzero) <= _EXACT_WILCOXON_MAX_N:
        method = sps.PermutationMethod(n_resamples=2 ** len(nonzero))
    else:
        method = "approx"
    return float(sps.wilcoxon(nonzero, method=method).pvalue)


def _values_by_seed(rows: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """``metric`` of one method as a (n_labels × seed) table; NaN metrics are left out."""
    chosen = rows.loc[rows["method"] == method, ["n_labels", "seed", metric]].dropna(subset=[metric])
    duplicated = chosen.duplicated(["n_labels", "seed"])
    if duplicated.any():
        example = chosen.loc[duplicated, ["n_labels", "seed"]].iloc[0].to_dict()
        raise ValueError(
            f"method {method!r} has several rows for the same seed and label count (e.g. {example}); "
            "the table mixes runs of different configurations. Select one profile/config_key first."
        )
    return chosen.pivot(index="n_labels", columns="seed", values=metric)


def t_half_width(sd: np.ndarray | float, n: np.ndarray | float, level: float) -> np.ndarray:
    """Half-width t_{(1+level)/2, n−1} · sd / √n of a ``level`` t-interval; NaN where n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        quantile = sps.t.ppf(0.5 + level / 2, df=np.where(n > 1, n - 1, np.nan))
        return quantile * np.asarray(sd, dtype=float) / np.sqrt(n)


def detectable_difference(sd: float, n: int, alpha_level: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean paired difference δ > 0 that a two-sided paired t-test of ``n`` pairs at level
    ``alpha_level`` rejects with probability ``power``, when the differences have standard deviation ``sd``.

    Under δ the statistic T = mean / (sd/√n) follows a noncentral t with n − 1 degrees of freedom and
    noncentrality λ = δ√n / sd (Cohen 1988, §2.5; scipy.stats.nct), so the power at λ is
    P(T > t_c) + P(T < −t_c), t_c = t_{1−α/2, n−1}; δ = λ* · sd / √n for the λ* where that equals ``power``.
    The same units as ``sd`` (AUBC: a fraction; pp after ×100). Returns NaN for sd = 0 (the t-test is undefined).
    Raises ValueError for n < 2, a negative or non-finite sd, or a level or power outside (0, 1) or a power
    not above the level (:func:`check_power`).
    """
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"a paired t-test needs n ≥ 2 pairs, got {n}.")
    if not np.isfinite(sd) or sd < 0:
        raise ValueError(f"sd must be a finite number ≥ 0, got {sd}.")
    check_power(power, alpha_level)
    if sd == 0:
        return float("nan")
    df = int(n) - 1
    critical = sps.t.ppf(1 - alpha_level / 2, df)

    def shortfall(noncentrality: float) -> float:
        # The far tail's mass is below 1e-3 here and its numerical value can be NaN for large λ: count it as 0.
        far = float(np.nan_to_num(sps.nct.cdf(-critical, df, noncentrality)))
        return float(sps.nct.sf(critical, df, noncentrality)) + far - power

    # Power rises with λ from α (λ = 0) towards 1; double the bracket until it holds the root.
    upper = critical + 1.0
    while shortfall(upper) < 0:
        upper *= 2
    noncentrality = optimize.brentq(shortfall, 0.0, upper, xtol=1e-12)
    return float(noncentrality * sd / np.sqrt(n))


def paired_statistics(base: np.ndarray, treat: np.ndarray, level: float) -> dict[str, float]:
    """Paired statistics of ``treat − base`` (aligned arrays: one label count, or one AUBC per seed).

    ``n_pairs``, ``mean_baseline``, ``mean_treatment``, ``mean_diff``, ``ci_low``/``ci_high``
    (``level`` t-interval), ``d_z``, ``p_ttest`` (two-sided paired t-test), ``p_wilcoxon``
    (:func:`wilcoxon_p`), ``sd_diff`` (sd of the differences, ddof 1; 0 when they are constant, NaN for one
    pair) and ``note`` (why there is no t-test). Pairs equal up to rounding
    (:func:`equal_up_to_rounding`) count as equal in every one of them.
    """
    base, treat = np.asarray(base, dtype=float), np.asarray(treat, dtype=float)
    diff = np.where(equal_up_to_rounding(treat, base), 0.0, treat - base)
    n = len(diff)
    out = {"n_pairs": n, "mean_baseline": base.mean(), "mean_treatment": treat.mean(), "mean_diff": diff.mean(),
           "ci_low": np.nan, "ci_high": np.nan, "d_z": np.nan, "p_ttest": np.nan, "p_wilcoxon": np.nan,
           "sd_diff": np.nan, "note": ""}
    if n < 2:
        out["note"] = NOTE_ONE_PAIR
        return out
    out["p_wilcoxon"] = wilcoxon_p(diff)
    # Constant differences are sd = 0 up to rounding. Their t statistic is ±inf or 0/0, and a p-value
    # computed from the rounding residue (0, or 1e-29) would be meaningless.
    if equal_up_to_rounding(diff, diff[0]).all():
        out["ci_low"] = out["ci_high"] = diff.mean()
        out["sd_diff"] = 0.0
        out["note"] = NOTE_IDENTICAL if not diff.any() else NOTE_CONSTANT
        return out
    sd = diff.std(ddof=1)
    out["sd_diff"] = sd
    half = float(t_half_width(sd, n, level))
    out["ci_low"], out["ci_high"] = diff.mean() - half, diff.mean() + half
    out["d_z"] = diff.mean() / sd
    out["p_ttest"] = float(sps.ttest_1samp(diff, 0.0).pvalue)  # = ttest_rel(treat, base), on the same differences
    return out


def paired_comparison(
    df: pd.DataFrame,
    baseline: str,
    treatment: str,
    metric: str = "accuracy",
    alpha_level: float = 0.05,
    level: float = 0.95,
) -> pd.DataFrame:
    """Treatment vs baseline at every label count of one dataset, paired by seed.

    Only seeds that both methods have at a label count are paired (``n_pairs``).
    Columns per ``n_labels``:

    * ``mean_baseline``, ``mean_treatment``, ``mean_diff`` (treatment − baseline);
    * ``ci_low``, ``ci_high``: ``level`` t-confidence interval of the mean difference;
    * ``d_z``: Cohen's d_z, mean difference / sd of the differences (NaN if sd = 0 or n < 2);
    * ``p_ttest``: two-sided paired t-test, unadjusted (the primary test). NaN when
      it is undefined: one pair, or differences that are all equal up to rounding —
      all zero (e.g. the initial step, where both methods train on the same labels)
      or a constant shift (accuracies are multiples of 1/n, so a constant +0.01 on 3
      seeds happens). Such rows do not count in the Holm adjustment, are never
      significant, and ``note`` says why;
    * ``p_wilcoxon``: Wilcoxon signed-rank check (see :func:`wilcoxon_p`: with 5 pairs
      it cannot go below 0.0625; all-zero differences give 1.0);
    * ``p_holm``: ``p_ttest`` Holm-adjusted across this comparison's label counts;
    * ``significant``: ``p_holm < alpha_level``;
    * ``note``: why a row has no t-test (:data:`NOTE_ONE_PAIR`, :data:`NOTE_IDENTICAL`,
      :data:`NOTE_CONSTANT`), else empty.

    Raises ValueError when the rows mix configurations (several ``config_key``):
    compare one configuration at a time (:func:`compare_variants` does).
    """
    require_columns(df, ("dataset", "method", "seed", "n_labels", metric))
    datasets = df["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"paired_comparison needs rows of exactly one dataset, got {sorted(map(str, datasets))}; "
                         "filter with df[df['dataset'] == name] or use compare_variants.")
    if "config_key" in df.columns and df["config_key"].nunique() > 1:
        raise ValueError(f"the rows mix configurations (config keys {sorted(map(str, df['config_key'].unique()))}); "
                         "compare one at a time: filter with df[df['config_key'] == key] or use compare_variants.")
    absent = [m for m in (baseline, treatment) if m not in set(df["method"])]
    if absent:
        raise ValueError(f"method(s) {absent} not in the results (present: {sorted(df['method'].unique())}).")
    check_level(level)

    base, treat = _values_by_seed(df, baseline, metric), _values_by_seed(df, treatment, metric)
    rows = []
    for n_labels in sorted(set(base.index) & set(treat.index)):
        b, t = base.loc[n_labels].dropna(), treat.loc[n_labels].dropna()
        seeds = b.index.intersection(t.index)
        if len(seeds) == 0:
            continue
        rows.append({"n_labels": int(n_labels),
                     **paired_statistics(b[seeds].to_numpy(float), t[seeds].to_numpy(float), level)})
    if not rows:
        raise ValueError(f"{baseline!r} and {treatment!r} share no (seed, label count) with a {metric!r} value.")
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_ttest"].to_numpy())
    table["significant"] = table["p_holm"] < alpha_level  # NaN compares False
    return table.loc[:, list(COMPARISON_COLUMNS)]


def compare_variants(
    df: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
    metric: str = "accuracy",
    alpha_level: float = 0.05,
) -> pd.DataFrame:
    """:func:`paired_comparison` for every dataset (and data source) in ``df`` and every pair present in it.

    ``pairs`` defaults to :func:`alvae_utils.selection.methods.variant_pairs` of the methods
    present (each heuristic with each of its feature-family variants, which includes
    the :data:`PAPER_PAIRS`); pairs whose methods are missing for a
    dataset are skipped. Runs on different sources of one dataset (MNIST and
    its offline stand-in, the embedded sample) are never paired with each
    other: each source is its own comparison, and so is each configuration
    (``config_key``, when the table has it: one profile with several sets of
    overrides, or several profiles). The Holm adjustment is per comparison
    (dataset, source, configuration, pair, metric), across its label counts.
    Returns the comparison columns prefixed by ``dataset``, ``data_description``,
    (``config_key``,) ``baseline``, ``treatment`` and ``metric``.
    """
    if metric not in df.columns:
        raise ValueError(f"results table has no column {metric!r}.")
    require_columns(df, ("data_description",))
    keys = ["dataset", "data_description"] + (["config_key"] if "config_key" in df.columns else [])
    tables = []
    for identity, rows in df.groupby(keys, sort=True):
        present = set(rows["method"])
        chosen = variant_pairs(present) if pairs is None else pairs
        for baseline, treatment in chosen:
            if baseline not in present or treatment not in present or rows[metric].isna().all():
                continue
            table = paired_comparison(rows, baseline, treatment, metric=metric, alpha_level=alpha_level)
            tables.append(table.assign(**dict(zip(keys, identity, strict=True)), baseline=baseline,
                                       treatment=treatment, metric=metric))
    columns = [*keys, "baseline", "treatment", "metric", *COMPARISON_COLUMNS]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True).loc[:, columns]


def dataset_labels(table: pd.DataFrame) -> pd.Series:
    """Per row, the dataset name, plus ``[data source]`` where that dataset has rows from several sources,
    and ``[config <key>]`` where it has rows of several configurations.

    Keeps comparisons on MNIST and on its offline stand-in, or of two configurations, apart in text and tables.
    """
    labels = table["dataset"].astype(str)
    several = table.groupby("dataset")["data_description"].transform("nunique") > 1
    labels = labels.where(~several, labels + " [" + table["data_description"].astype(str) + "]")
    if "config_key" in table.columns:
        configs = table.groupby("dataset")["config_key"].transform("nunique") > 1
        labels = labels.where(~configs, labels + " [config " + table["config_key"].astype(str) + "]")
    return labels


def significant_findings(table: pd.DataFrame, alpha_level: float = 0.05) -> list[str]:
    """One sentence per row of a :func:`compare_variants` table with unadjusted ``p_ttest < alpha_level``.

    Each sentence gives the mean difference in percentage points, both p-values
    and whether the result survives the Holm adjustment (the data source joins
    the dataset name where a dataset has several, see :func:`dataset_labels`), e.g.
    ``"lossprediction+vae vs lossprediction on mnist at 21000 labels: Δaccuracy=+0.80 pp
    (5 pairs), p=0.03 (paired t-test), p_holm=0.2: not significant after Holm"``.
    """
    return _findings(table, alpha_level, ["n_labels"], "compare_variants",
                     lambda row: f" at {row.n_labels} labels: Δ{row.metric}=")


def _findings(table: pd.DataFrame, alpha_level: float, extra: list[str], source: str, where) -> list[str]:
    """The sentences of :func:`significant_findings` and :func:`aubc_findings`; ``where(row)`` says what was tested."""
    needed = ["dataset", "data_description", "baseline", "treatment", "metric", *extra, "n_pairs", "mean_diff",
              "p_ttest", "p_holm"]
    require_columns(table, needed, source)
    lines = []
    table = table.assign(dataset=dataset_labels(table))
    for row in table[table["p_ttest"] < alpha_level].itertuples(index=False):
        verdict = "significant" if row.p_holm < alpha_level else "not significant"
        lines.append(
            f"{row.treatment} vs {row.baseline} on {row.dataset}{where(row)}{100 * row.mean_diff:+.2f} pp "
            f"({row.n_pairs} pairs), p={row.p_ttest:.2g} (paired t-test), p_holm={row.p_holm:.2g}: {verdict} after Holm"
        )
    return lines


