"""The paper's open questions, answered from stored runs (notebook 05).

* **α of Eq. 6** (not stated in the paper): :func:`alpha_sweep` gives the AUBC of a
  heuristic's ``+vae`` variant at each α of the sweep, the plain heuristic as α = 0
  (a block of zeros leaves every pick unchanged), and α = balanced placed at the α it
  estimated (:func:`alvae_utils.selection.alpha.balanced_alpha`).
* **One test per comparison:** :func:`alvae_utils.analysis.aubc.paired_aubc_tests` (one paired
  test of AUBC per heuristic and variant, Holm across the comparisons), set against the
  per-label-count tests of :func:`alvae_utils.analysis.stats.compare_variants` by
  :func:`multiplicity_counts`.
* **The paper's future work** (a class-conditional VAE, a multimodal prior): the
  variants ``+ssvae`` and ``+mixvae`` in the same AUBC tests, and the "picks in the
  tails" statistic of notebook 04 for every family (:func:`tails_summary`).
* :func:`verdicts` turns the numbers into one sentence per question.

All inputs are tables: the tidy results of :mod:`alvae_utils.experiment.results`, and the tails
table of :func:`alvae_utils.experiment.tsne_experiment.tails_by_family`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .figures import REFERENCE, heuristic_methods
from ..selection.methods import BALANCED, DEFAULT_ALPHA, Method, parsed_methods
from .aubc import RUN_GROUP, aubc_summary, run_aubc
from .stats import compare_variants, paired_statistics

ALPHA_SWEEP_COLUMNS: tuple[str, ...] = (
    "method", "alpha", "balanced", "alpha_estimated", "n_runs", "mean", "sd", "ci_low", "ci_high",
)


def _group_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in RUN_GROUP if c in table.columns]


def alpha_sweep(rows: pd.DataFrame, heuristic: str, family: str = "vae", metric: str = "accuracy",
                level: float = 0.95) -> pd.DataFrame:
    """Mean AUBC over seeds of ``heuristic`` plain and of each ``heuristic+family(α=…)`` in ``rows``.

    One row per (dataset, data source, configuration, method), sorted by α:
    ``alpha`` (0 for the plain heuristic, which α = 0 reproduces exactly; NaN for
    balanced), ``balanced``, ``alpha_estimated`` (for balanced: the mean over its runs'
    selections of the α it estimated, ``alpha_used``; otherwise equal to ``alpha``),
    and :func:`alvae_utils.analysis.aubc.aubc_summary`'s ``n_runs``, ``mean``, ``sd``,
    ``ci_low`` and ``ci_high`` (``level`` t-interval over seeds), in ``metric``'s units.
    Raises ValueError as :func:`alvae_utils.analysis.aubc.run_aubc` does (missing steps,
    unequal label grids) and when no method of the sweep is in ``rows``.
    """
    methods: dict[str, Method] = {}
    for label, method in parsed_methods(rows["method"].unique()).items():
        if method.heuristic == heuristic and method.features in (None, family):
            methods[label] = method
    if not methods:
        raise ValueError(f"no run of {heuristic} or {heuristic}+{family} in the rows; present: "
                         f"{sorted(rows['method'].unique())}.")
    chosen = rows[rows["method"].isin(list(methods))]
    summary = aubc_summary(run_aubc(chosen, metric), level)
    balanced = summary["method"].map(lambda label: methods[label].alpha == BALANCED)
    alpha = summary["method"].map(lambda label: 0.0 if methods[label].features is None
                                  else np.nan if methods[label].alpha == BALANCED else float(methods[label].alpha))
    group = _group_columns(summary)
    estimated = chosen.groupby([*group, "method"], dropna=False)["alpha_used"].mean() \
        if "alpha_used" in chosen.columns else None
    summary = summary.assign(alpha=alpha, balanced=balanced)
    if estimated is not None:
        keys = pd.MultiIndex.from_frame(summary[[*group, "method"]])
        summary["alpha_estimated"] = np.where(summary["balanced"], estimated.reindex(keys).to_numpy(float),
                                              summary["alpha"])
    else:
        summary["alpha_estimated"] = summary["alpha"]
    summary = summary.sort_values([*group, "balanced", "alpha"], kind="stable").reset_index(drop=True)
    return summary.loc[:, [*group, *ALPHA_SWEEP_COLUMNS]]


def family_figure_methods(labels: Iterable[str], heuristic: str) -> list[str]:
    """Labels of ``heuristic``'s learning-curve figure in notebook 05: plain, its variants at the default α, random.

    Empty when none of those variants has a family other than the paper's VAE (nothing new to show).
    """
    members = [label for label in heuristic_methods(labels, heuristic)
               if label == REFERENCE or Method.parse(label).alpha == DEFAULT_ALPHA]
    new = [label for label in members if label != REFERENCE and Method.parse(label).features not in (None, "vae")]
    return members if new else []


def tails_methods(methods: Iterable[Method]) -> list[Method]:
    """The spaces of the tails statistic: core-set with the paper's VAE and with each other family of ``methods``.

    All at the default α, as in Figs. 5–6; the paper's VAE is always included, as the effect to compare
    with. Empty when ``methods`` have no core-set variant.
    """
    families = [method.features for method in methods if method.heuristic == "coreset" and method.features]
    return [Method("coreset", family) for family in dict.fromkeys(["vae", *families])] if families else []


def multiplicity_counts(rows: pd.DataFrame, aubc_tests: pd.DataFrame, metric: str = "accuracy",
                        alpha_level: float = 0.05) -> dict[str, int]:
    """How many tests each way of testing makes, and how many come out significant, on the same comparisons.

    Per label count (the paper's way, :func:`alvae_utils.analysis.stats.compare_variants` on the
    comparisons of ``aubc_tests``): ``per_count_tests``, ``per_count_unadjusted``
    (p < ``alpha_level`` before any correction), ``per_count_holm`` (after Holm within
    each comparison). Once per comparison (``aubc_tests``, from
    :func:`alvae_utils.analysis.aubc.paired_aubc_tests`): ``aubc_tests``, ``aubc_unadjusted``
    and ``aubc_holm`` (Holm across the comparisons).
    """
    pairs = sorted(set(zip(aubc_tests["baseline"], aubc_tests["treatment"], strict=True)))
    per_count = compare_variants(rows, pairs=pairs, metric=metric, alpha_level=alpha_level) if pairs else pd.DataFrame(
        columns=["p_ttest", "p_holm"])
    tested = per_count[per_count["p_ttest"].notna()]
    aubc_tested = aubc_tests[aubc_tests["p_ttest"].notna()]
    return {"per_count_tests": len(tested), "per_count_unadjusted": int((tested["p_ttest"] < alpha_level).sum()),
            "per_count_holm": int((tested["p_holm"] < alpha_level).sum()), "aubc_tests": len(aubc_tested),
            "aubc_unadjusted": int((aubc_tested["p_ttest"] < alpha_level).sum()),
            "aubc_holm": int((aubc_tested["p_holm"] < alpha_level).sum())}


TAILS_SUMMARY_COLUMNS: tuple[str, ...] = (
    "n_seeds", "ratio_mean", "ratio_sd", "percentile_mean", "seeds_in_tails", "ratio_vs_resnet",
    "ratio_vs_resnet_low", "ratio_vs_resnet_high", "p_vs_resnet",
)


def tails_summary(tails: pd.DataFrame, alpha_level: float = 0.05, level: float = 0.95) -> pd.DataFrame:
    """The tails statistic per feature space, over the snapshots' seeds, and each space against ResNet alone.

    ``tails``: :func:`alvae_utils.experiment.tsne_experiment.tails_by_family`'s table. One row per
    ``space`` (``"ResNet"`` first): ``n_seeds``, the mean and sd of ``ratio`` (the picks'
    median distance from the centroid over the unlabeled points'; > 1 = in the tails),
    ``percentile_mean``, ``seeds_in_tails`` (snapshots whose one-sided Mann–Whitney
    p < ``alpha_level``), and, paired by seed, ``ratio_vs_resnet`` (mean of the space's
    ratio minus ResNet's), its ``level`` t-interval and ``p_vs_resnet`` (two-sided paired
    t-test; NaN with one seed or differences constant up to rounding). Raises ValueError for a table without a
    ResNet row per seed.
    """
    needed = {"seed", "space", "ratio", "selected_percentile", "mannwhitney_p"}
    if not needed <= set(tails.columns):
        raise ValueError(f"tails table lacks {sorted(needed - set(tails.columns))}; pass tails_by_family's table.")
    resnet = tails[tails["space"] == "ResNet"].set_index("seed")["ratio"]
    if resnet.empty or set(resnet.index) != set(tails["seed"]):
        raise ValueError("every seed of the tails table needs its ResNet row (the plain heuristic's picks).")
    records = []
    for space, group in tails.groupby("space", sort=False):
        ratio = group.set_index("seed")["ratio"]
        n = len(ratio)
        # Paired by seed, under the one rule for "equal" of every test (no p-value from a rounding residue).
        paired = paired_statistics(resnet.reindex(ratio.index).to_numpy(float), ratio.to_numpy(float), level)
        against = space != "ResNet"
        records.append({
            "space": space, "n_seeds": n, "ratio_mean": float(ratio.mean()),
            "ratio_sd": float(ratio.std(ddof=1)) if n > 1 else np.nan,
            "percentile_mean": float(group["selected_percentile"].mean()),
            "seeds_in_tails": int((group["mannwhitney_p"] < alpha_level).sum()),
            "ratio_vs_resnet": float(paired["mean_diff"]) if against else np.nan,
            "ratio_vs_resnet_low": float(paired["ci_low"]) if against else np.nan,
            "ratio_vs_resnet_high": float(paired["ci_high"]) if against else np.nan,
            "p_vs_resnet": float(paired["p_ttest"]) if against else np.nan,
        })
    return pd.DataFrame(records).set_index("space").loc[:, list(TAILS_SUMMARY_COLUMNS)]


def _pp(value: float) -> str:
    return f"{100 * value:+.2f} pp"


def _test_sentence(row: pd.Series, alpha_level: float) -> str:
    if np.isnan(row["p_holm"]):
        return (f"{row['treatment']} vs {row['baseline']}: Δ AUBC {_pp(row['mean_diff'])} over {row['n_pairs']} "
                f"seed(s), untested ({row['note']})")
    verdict = "significant" if row["p_holm"] < alpha_level else "not significant"
    return (f"{row['treatment']} vs {row['baseline']}: Δ AUBC {_pp(row['mean_diff'])} "
            f"(95% CI {_pp(row['ci_low'])} to {_pp(row['ci_high'])}, {row['n_pairs']} seeds), "
            f"p_holm = {row['p_holm']:.2g}: {verdict}")


def verdicts(aubc_tests: pd.DataFrame, sweeps: dict[str, pd.DataFrame], counts: dict[str, int],
             tails: pd.DataFrame | None = None, alpha_level: float = 0.05) -> dict[str, str]:
    """One computed sentence per open question, for one dataset.

    ``aubc_tests``: :func:`alvae_utils.analysis.aubc.paired_aubc_tests` of every comparison of
    the notebook (Holm across them); ``sweeps``: :func:`alpha_sweep` per heuristic;
    ``counts``: :func:`multiplicity_counts`; ``tails``: :func:`tails_summary` (or None).
    Keys: ``"alpha"``, ``"aubc"``, ``"families"``, ``"tails"`` (when given) and
    ``"overall"`` (does anything beat its plain heuristic significantly, and by how much).
    """
    answers: dict[str, str] = {}
    parts = []
    for heuristic, sweep in sweeps.items():
        variants = sweep[sweep["alpha"] != 0]
        if variants.empty:
            continue
        best = variants.loc[variants["mean"].idxmax()]
        tested = aubc_tests[(aubc_tests["baseline"] == heuristic) & (aubc_tests["treatment"] == best["method"])]
        estimated = sweep.loc[sweep["balanced"], "alpha_estimated"]
        balanced = f"; balanced α estimated α ≈ {estimated.iloc[0]:.3g}" if len(estimated) else ""
        test = f"; {_test_sentence(tested.iloc[0], alpha_level)}" if len(tested) else ""
        plain = sweep.loc[sweep["alpha"] == 0, "mean"]
        against = f", plain {plain.iloc[0]:.4f}" if len(plain) else ""
        parts.append(f"{heuristic}: the highest mean AUBC is at {best['method']} ({best['mean']:.4f}{against})"
                     f"{test}{balanced}")
    answers["alpha"] = ". ".join(parts) + "." if parts else "no α sweep among the runs."
    answers["aubc"] = (
        f"per label count, the {counts['per_count_tests']} tests give {counts['per_count_unadjusted']} p-values below "
        f"{alpha_level} before correction and {counts['per_count_holm']} after Holm within each comparison; "
        f"one AUBC test per comparison gives {counts['aubc_tests']} tests, {counts['aubc_unadjusted']} below "
        f"{alpha_level} unadjusted and {counts['aubc_holm']} after Holm across the comparisons.")
    family_rows = aubc_tests[aubc_tests["treatment"].map(lambda label: Method.parse(label).features not in
                                                         (None, "vae"))]
    answers["families"] = ("; ".join(_test_sentence(row, alpha_level) for _, row in family_rows.iterrows()) + "."
                           if len(family_rows) else "no variant with a new family was compared with its plain "
                           "heuristic (both must be among the methods).")
    if tails is not None and len(tails.drop(index="ResNet", errors="ignore")):
        lines = []
        for space, row in tails.drop(index="ResNet").iterrows():
            if np.isnan(row["p_vs_resnet"]):
                test, verdict = f"{int(row['n_seeds'])} snapshot(s): no paired test", "untested"
            else:
                further = row["ratio_vs_resnet"] > 0 and row["p_vs_resnet"] < alpha_level
                test = f"p = {row['p_vs_resnet']:.2g}"
                verdict = ("picks further out than ResNet alone" if further else
                           "not significantly further out than ResNet alone")
            lines.append(f"{space}: ratio {row['ratio_mean']:.3f} vs ResNet {tails.loc['ResNet', 'ratio_mean']:.3f} "
                         f"(paired Δ {row['ratio_vs_resnet']:+.3f}, {test}, "
                         f"{int(row['seeds_in_tails'])}/{int(row['n_seeds'])} snapshots in the tails): {verdict}")
        answers["tails"] = "; ".join(lines) + "."
    wins = aubc_tests[(aubc_tests["p_holm"] < alpha_level) & (aubc_tests["mean_diff"] > 0)]
    losses = aubc_tests[(aubc_tests["p_holm"] < alpha_level) & (aubc_tests["mean_diff"] < 0)]
    tested = int(aubc_tests["p_holm"].notna().sum())
    if not tested:
        answers["overall"] = (f"no comparison could be tested ({len(aubc_tests)} compared; see their notes, e.g. one "
                              "seed gives one pair): nothing is claimed either way.")
    elif len(wins):
        best = wins.loc[wins["mean_diff"].idxmax()]
        answers["overall"] = (f"{len(wins)} of {len(aubc_tests)} variants beat their plain heuristic significantly "
                              f"after Holm; the largest gain: {_test_sentence(best, alpha_level)}.")
    else:
        untested = len(aubc_tests) - tested
        answers["overall"] = (f"none of the {tested} tested variants beats its plain heuristic significantly after "
                              f"Holm (AUBC, {alpha_level} level)"
                              + (f"; {len(losses)} are significantly worse" if len(losses) else "")
                              + (f"; {untested} could not be tested" if untested else "") + ".")
    return answers
