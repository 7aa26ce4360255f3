"""Notebook 05's analysis: the α sweep, the multiplicity counts, the tails summary and the verdicts."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from alvae_utils.selection.methods import Method
from alvae_utils.analysis.open_questions import (
    alpha_sweep, family_figure_methods, multiplicity_counts, tails_methods, tails_summary, verdicts,
)
from alvae_utils.analysis.plots import plot_aubc_vs_alpha
from alvae_utils.experiment.profiles import PROFILES, BeyondConfig, get_profile
from alvae_utils.analysis.aubc import aubc_summary, paired_aubc_tests, run_aubc

GRID = (10, 20, 50)  # unequal spacing
SEEDS = (0, 1, 2, 3)
# Mean AUBC offset of each method over the plain heuristic, by construction.
SHIFTS = {"random": -0.10, "coreset": 0.0, "coreset+vae(α=0.25)": 0.0, "coreset+vae": 0.01,
          "coreset+vae(α=4)": 0.05, "coreset+vae(α=balanced)": 0.03, "coreset+ssvae": -0.04, "coreset+mixvae": 0.0}
BALANCED_ALPHAS = {0: (2.0, 4.0), 1: (3.0, 3.0), 2: (2.5, 3.5), 3: (3.0, 5.0)}  # per seed, at the two selections


def _trapezoid(values):
    pairs = list(zip(GRID, values, strict=True))
    return sum((n1 - n0) * (y0 + y1) / 2 for (n0, y0), (n1, y1) in itertools.pairwise(pairs)) / (GRID[-1] - GRID[0])


def _sweep_rows(noise: float = 0.004) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = []
    for seed in SEEDS:
        base = np.array([0.3, 0.6, 0.8]) + rng.normal(0, 0.03, size=3)
        for method, shift in SHIFTS.items():
            values = base + shift + (rng.normal(0, noise, size=3) if method != "coreset" else 0)
            used = (*BALANCED_ALPHAS[seed], np.nan) if "balanced" in method else (np.nan,) * 3
            records += [{"profile": "test", "dataset": "mnist", "data_description": "synthetic", "config_key": "k",
                         "method": method, "seed": seed, "step": step, "n_labels": n, "accuracy": value,
                         "alpha_used": alpha, "auc": np.nan}
                        for step, (n, value, alpha) in enumerate(zip(GRID, values, used, strict=True))]
    return pd.DataFrame(records)


def test_alpha_sweep_is_the_mean_aubc_per_alpha_with_the_plain_heuristic_at_zero():
    rows = _sweep_rows()
    sweep = alpha_sweep(rows, "coreset")
    assert sweep["method"].tolist() == ["coreset", "coreset+vae(α=0.25)", "coreset+vae", "coreset+vae(α=4)",
                                        "coreset+vae(α=balanced)"], "sorted by α, balanced last; no ssvae/mixvae"
    assert sweep["alpha"].tolist()[:4] == [0.0, 0.25, 1.0, 4.0] and np.isnan(sweep["alpha"].iloc[4])
    assert sweep["balanced"].tolist() == [False] * 4 + [True]
    for _, row in sweep.iterrows():
        by_seed = [_trapezoid(rows[(rows["method"] == row["method"]) & (rows["seed"] == s)]["accuracy"].to_numpy())
                   for s in SEEDS]
        assert row["mean"] == pytest.approx(np.mean(by_seed), abs=1e-12)
        half = sps.t.ppf(0.975, len(SEEDS) - 1) * np.std(by_seed, ddof=1) / np.sqrt(len(SEEDS))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((np.mean(by_seed) - half, np.mean(by_seed) + half))
    # Balanced: the mean of the α its selections estimated (the last step selects nothing: NaN, left out).
    assert sweep["alpha_estimated"].iloc[4] == pytest.approx(np.mean([a for pair in BALANCED_ALPHAS.values()
                                                                      for a in pair]))
    assert sweep["alpha_estimated"].iloc[:4].tolist() == [0.0, 0.25, 1.0, 4.0]
    with pytest.raises(ValueError, match="no run of medal or medal\\+vae"):
        alpha_sweep(rows, "medal")


def test_multiplicity_counts_test_once_per_comparison_against_once_per_label_count():
    rows = _sweep_rows()
    tests = paired_aubc_tests(rows)
    counts = multiplicity_counts(rows, tests)
    assert counts["aubc_tests"] == len(tests) == 6, "every coreset variant once"
    # Per label count: the first step shares its labels, but the synthetic curves differ there too.
    assert counts["per_count_tests"] == 6 * len(GRID)
    assert counts["aubc_holm"] <= counts["aubc_unadjusted"] <= counts["aubc_tests"]
    assert counts["per_count_holm"] <= counts["per_count_unadjusted"]
    assert counts["aubc_holm"] == int((tests["p_holm"] < 0.05).sum())


def _tails(ratios: dict[str, list[float]], p_values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"seed": seed, "space": space, "family": None if space == "ResNet" else space,
                          "ratio": ratio, "selected_percentile": 50 + 10 * ratio,
                          "mannwhitney_p": p_values[space][seed]}
                         for space, values in ratios.items() for seed, ratio in enumerate(values)])


def test_tails_summary_pairs_each_space_with_resnet_by_seed():
    ratios = {"ResNet": [1.2, 1.3, 1.25], "coreset+vae": [1.6, 1.8, 1.65], "coreset+mixvae": [1.2, 1.35, 1.2]}
    p_values = {"ResNet": [0.01, 0.2, 0.03], "coreset+vae": [0.001, 0.001, 0.2], "coreset+mixvae": [0.5] * 3}
    summary = tails_summary(_tails(ratios, p_values))
    assert summary.index.tolist() == ["ResNet", "coreset+vae", "coreset+mixvae"]
    vae = summary.loc["coreset+vae"]
    difference = np.subtract(ratios["coreset+vae"], ratios["ResNet"])
    assert vae["ratio_vs_resnet"] == pytest.approx(difference.mean())
    assert vae["p_vs_resnet"] == pytest.approx(sps.ttest_rel(ratios["coreset+vae"], ratios["ResNet"]).pvalue)
    half = sps.t.ppf(0.975, 2) * difference.std(ddof=1) / np.sqrt(3)
    assert (vae["ratio_vs_resnet_low"], vae["ratio_vs_resnet_high"]) == pytest.approx(
        (difference.mean() - half, difference.mean() + half))
    assert vae["seeds_in_tails"] == 2 and summary.loc["ResNet", "seeds_in_tails"] == 2
    assert np.isnan(summary.loc["ResNet", "ratio_vs_resnet"])
    with pytest.raises(ValueError, match="ResNet row"):
        tails_summary(_tails({"coreset+vae": [1.0]}, {"coreset+vae": [0.5]}))


def test_verdicts_are_computed_from_the_tables():
    rows = _sweep_rows()
    tests = paired_aubc_tests(rows)
    sweeps = {"coreset": alpha_sweep(rows, "coreset")}
    ratios = {"ResNet": [1.2, 1.3, 1.25], "coreset+vae": [1.6, 1.8, 1.65], "coreset+mixvae": [1.2, 1.35, 1.2]}
    tails = tails_summary(_tails(ratios, {space: [0.01] * 3 for space in ratios}))
    answers = verdicts(tests, sweeps, multiplicity_counts(rows, tests), tails)
    assert set(answers) == {"alpha", "aubc", "families", "tails", "overall"}
    assert answers["alpha"].startswith("coreset: the highest mean AUBC is at coreset+vae(α=4)")
    assert "balanced α estimated α ≈ 3.25" in answers["alpha"]
    ssvae = tests[tests["treatment"] == "coreset+ssvae"].iloc[0]
    assert f"coreset+ssvae vs coreset: Δ AUBC {100 * ssvae['mean_diff']:+.2f} pp" in answers["families"]
    assert "coreset+mixvae vs coreset" in answers["families"] and "(α=4)" not in answers["families"]
    significant = tests[tests["p_holm"] < 0.05]
    wins = significant[significant["mean_diff"] > 0]
    assert answers["overall"].startswith(f"{len(wins)} of {len(tests)} variants beat their plain heuristic")
    assert "coreset+vae(α=4) vs coreset" in answers["overall"], "the largest significant gain"
    assert "coreset+vae: ratio 1.683 vs ResNet 1.250" in answers["tails"]
    assert "coreset+mixvae: ratio 1.250 vs ResNet 1.250" in answers["tails"]
    assert answers["tails"].count("not significantly further out") == 1

    no_effect = _sweep_rows(noise=0.0)
    first = no_effect.groupby(["seed", "step"])["accuracy"].transform("first")
    no_effect["accuracy"] = first + np.random.default_rng(1).normal(0, 0.01, len(first))  # no shift, only noise
    flat = paired_aubc_tests(no_effect)
    assert not flat["significant"].any() and flat["p_holm"].notna().all()
    assert verdicts(flat, {}, multiplicity_counts(no_effect, flat))["overall"] == (
        f"none of the {len(flat)} tested variants beats its plain heuristic significantly after Holm (AUBC, 0.05 "
        "level).")


def test_figure_methods_and_tails_spaces():
    labels = list(SHIFTS)
    assert family_figure_methods(labels, "coreset") == ["coreset", "coreset+vae", "coreset+ssvae", "coreset+mixvae",
                                                        "random"]
    assert family_figure_methods(["coreset", "coreset+vae", "coreset+vae(α=4)", "random"], "coreset") == [], \
        "nothing beyond the paper's VAE"
    methods = [Method.parse(label) for label in labels + ["medal+mixvae"]]
    assert [m.label for m in tails_methods(methods)] == ["coreset+vae", "coreset+ssvae", "coreset+mixvae"]
    only_new = [Method.parse(label) for label in ("coreset", "coreset+mixvae", "coreset+vae(α=4)")]
    assert [m.label for m in tails_methods(only_new)] == ["coreset+vae", "coreset+mixvae"], "the paper's VAE always"
    assert tails_methods([Method.parse("medal+mixvae"), Method("random")]) == []


def test_aubc_against_alpha_draws_the_sweep_balanced_and_references():
    rows = _sweep_rows()
    sweep = alpha_sweep(rows, "coreset")
    references = aubc_summary(run_aubc(rows[rows["method"].isin(["coreset", "random"])]))
    fig = plot_aubc_vs_alpha(sweep, references, profile="test", data_description="synthetic")
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    assert line.get_xdata().tolist() == [0.0, 0.25, 1.0, 4.0]
    assert np.allclose(line.get_ydata(), sweep["mean"].iloc[:4])
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[:2] == ["mean AUBC at α", "95% t-interval"]
    assert "α = balanced (estimated ≈ 3.25)" in legend and "coreset" in legend and "random" in legend
    assert ax.get_xscale() == "symlog"
    assert fig.get_supxlabel() == "profile: test · data: synthetic · 4 seeds"
    with pytest.raises(ValueError, match="no numeric α"):
        plot_aubc_vs_alpha(sweep[sweep["balanced"]], references)


def test_every_profile_defines_a_valid_beyond_sweep():
    for name, profile in PROFILES.items():
        sweep = profile.beyond_sweep()
        sweep.validate()
        labels = [m.label for m in sweep.methods]
        assert len(labels) == len(set(labels)), name
        assert "random" in labels and "coreset" in labels and "coreset+ssvae" in labels and "coreset+mixvae" in labels
        assert "coreset+vae(α=balanced)" in labels, name
        assert not any(m.features and m.alpha == 0 for m in sweep.methods), "α = 0 is the plain heuristic's runs"
        assert sweep.overrides == () and sweep.beyond == profile.beyond and sweep.name == name
        assert set(profile.beyond.tails_seeds) <= set(sweep.seeds) or name == "quick"
    ci = get_profile("ci").beyond_sweep()
    families = {(m.heuristic, m.features) for m in ci.methods}
    assert {(h, f) for h in ("coreset", "medal", "lossprediction") for f in ("ssvae", "mixvae")} <= families, \
        "the ci profile exercises every new variant"
    assert {"coreset+vae(α=balanced)", "medal+vae(α=balanced)"} <= {m.label for m in ci.methods}


def test_a_beyond_sweep_rejects_balanced_alpha_for_loss_prediction():
    ci = get_profile("ci")
    wrong = BeyondConfig(ci.beyond.experiments, ci.beyond.seeds, alpha_heuristics=("lossprediction",))
    with pytest.raises(ValueError, match="balanced is not defined for lossprediction"):
        replace(ci, beyond=wrong).validate()


def test_verdicts_claim_nothing_when_nothing_could_be_tested():
    rows = _sweep_rows()
    one_seed = rows[rows["seed"] == 0]
    tests = paired_aubc_tests(one_seed)
    answers = verdicts(tests, {"coreset": alpha_sweep(one_seed, "coreset")}, multiplicity_counts(one_seed, tests))
    assert answers["overall"].startswith("no comparison could be tested (6 compared")
    only_new = rows[rows["method"].isin(["coreset+ssvae", "random"])]
    tests = paired_aubc_tests(only_new)
    assert verdicts(tests, {}, multiplicity_counts(only_new, tests))["families"].startswith(
        "no variant with a new family was compared with its plain heuristic")
    ratios = {"ResNet": [1.2], "coreset+vae": [1.5]}
    tails = tails_summary(_tails(ratios, {"ResNet": [0.01], "coreset+vae": [0.01]}))
    flat = paired_aubc_tests(rows)
    assert "1 snapshot(s): no paired test" in verdicts(flat, {}, multiplicity_counts(rows, flat), tails)["tails"]
