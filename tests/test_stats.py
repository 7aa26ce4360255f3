"""Significance tests, mean curves and AUBC (alvae_utils.analysis.stats) against hand computation and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from alvae_utils.analysis.stats import (
    NOTE_CONSTANT,
    NOTE_NO_PAIRS,
    NOTE_ONE_PAIR,
    PAPER_PAIRS,
    compare_variants,
    equal_up_to_rounding,
    holm,
    paired_comparison,
    paired_statistics,
    significant_findings,
    variant_pairs,
    wilcoxon_p,
)
from alvae_utils.analysis.open_questions import tails_summary
from alvae_utils.analysis.aubc import aubc, aubc_findings, aubc_summary, mean_curve, paired_aubc_tests, run_aubc

LABELS = (3000, 6000, 9000)
SEEDS = (0, 1, 2, 3, 4)


def _rows(dataset: str, method: str, accuracy: dict[tuple[int, int], float]) -> list[dict]:
    return [{"profile": "test", "dataset": dataset, "data_description": "synthetic", "method": method, "seed": seed,
             "step": LABELS.index(n) if n in LABELS else 0, "n_labels": n, "accuracy": value,
             "auc": np.nan} for (seed, n), value in accuracy.items()]


def _results(shift: dict[int, float], noise: float = 0.01, seed: int = 0, dataset: str = "mnist",
             baseline: str = "coreset", treatment: str = "coreset+vae") -> pd.DataFrame:
    """5 seeds × 3 label counts; the treatment adds ``shift[n_labels]`` plus noise to the baseline."""
    rng = np.random.default_rng(seed)
    base = {(s, n): 0.80 + 0.02 * i + rng.normal(0, 0.02) for s in SEEDS for i, n in enumerate(LABELS)}
    treat = {key: value + shift[key[1]] + rng.normal(0, noise) for key, value in base.items()}
    return pd.DataFrame(_rows(dataset, baseline, base) + _rows(dataset, treatment, treat))


def _arrays(df: pd.DataFrame, method: str, n: int, seeds=SEEDS) -> np.ndarray:
    rows = df[(df["method"] == method) & (df["n_labels"] == n)].set_index("seed")
    return rows.loc[list(seeds), "accuracy"].to_numpy()


def test_paired_comparison_matches_hand_computation_and_scipy():
    df = _results({3000: 0.0, 6000: 0.01, 9000: 0.03})
    table = paired_comparison(df, "coreset", "coreset+vae")
    assert table["n_labels"].tolist() == list(LABELS)
    for row in table.itertuples():
        base, treat = _arrays(df, "coreset", row.n_labels), _arrays(df, "coreset+vae", row.n_labels)
        diff = treat - base
        n, mean, sd = len(diff), diff.mean(), diff.std(ddof=1)
        half = sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
        assert row.n_pairs == 5
        assert row.mean_baseline == pytest.approx(base.mean())
        assert row.mean_treatment == pytest.approx(treat.mean())
        assert row.mean_diff == pytest.approx(mean)
        assert (row.ci_low, row.ci_high) == pytest.approx((mean - half, mean + half))
        assert row.d_z == pytest.approx(mean / sd)
        # t = mean / (sd / √n) = d_z · √n, so the t-test p-value follows from d_z by hand too.
        assert row.p_ttest == pytest.approx(2 * sps.t.sf(abs(row.d_z) * np.sqrt(n), n - 1))
        assert row.p_ttest == pytest.approx(sps.ttest_rel(treat, base).pvalue)
        assert row.p_wilcoxon == pytest.approx(sps.wilcoxon(treat, base, method="exact").pvalue)
    # A 3-point gain with 1-point noise is detected; the CI of a zero shift covers zero.
    assert table.loc[2, "p_ttest"] < 0.01 and table.loc[2, "ci_low"] > 0
    assert table.loc[0, "ci_low"] < 0 < table.loc[0, "ci_high"]
    np.testing.assert_allclose(table["p_holm"], holm(table["p_ttest"]))
    assert table["significant"].tolist() == (table["p_holm"] < 0.05).tolist()


def test_only_seeds_present_for_both_methods_are_paired():
    df = _results({n: 0.01 for n in LABELS})
    df = df[~((df["method"] == "coreset") & (df["seed"] == 0) & (df["n_labels"] == 6000))]  # baseline lost a run
    extra = _rows("mnist", "coreset+vae", {(7, n): 0.99 for n in LABELS})  # seed with no baseline
    table = paired_comparison(pd.concat([df, pd.DataFrame(extra)]), "coreset", "coreset+vae").set_index("n_labels")
    assert table["n_pairs"].to_dict() == {3000: 5, 6000: 4, 9000: 5}
    seeds = (1, 2, 3, 4)
    expected = sps.ttest_rel(_arrays(df, "coreset+vae", 6000, seeds), _arrays(df, "coreset", 6000, seeds)).pvalue
    assert table.loc[6000, "p_ttest"] == pytest.approx(expected)
    assert table.loc[9000, "mean_treatment"] == pytest.approx(_arrays(df, "coreset+vae", 9000).mean())


def test_identical_runs_give_no_t_test_and_do_not_count_in_holm():
    # The initial step: both methods train on the same labels, so every difference is exactly 0.
    df = _results({3000: 0.0, 6000: 0.02, 9000: 0.02}, noise=0.005)
    same = df["n_labels"] == 3000
    vae = df["method"] == "coreset+vae"
    df.loc[same & vae, "accuracy"] = df.loc[same & ~vae, "accuracy"].to_numpy()
    table = paired_comparison(df, "coreset", "coreset+vae").set_index("n_labels")
    assert table.loc[3000, "mean_diff"] == 0
    assert np.isnan(table.loc[3000, "p_ttest"]) and np.isnan(table.loc[3000, "p_holm"])
    assert np.isnan(table.loc[3000, "d_z"])
    assert table.loc[3000, "p_wilcoxon"] == 1.0
    assert not table.loc[3000, "significant"]
    # Holm over the two remaining tests only (m = 2).
    np.testing.assert_allclose(table.loc[[6000, 9000], "p_holm"], holm(table.loc[[6000, 9000], "p_ttest"]))


def test_d_z_is_nan_for_constant_differences():
    df = _results({n: 0.0 for n in LABELS})
    vae = df["method"] == "coreset+vae"
    df.loc[vae, "accuracy"] = df.loc[~vae, "accuracy"].to_numpy() + 0.25  # exactly representable shift
    table = paired_comparison(df, "coreset", "coreset+vae")
    assert table["mean_diff"].tolist() == pytest.approx([0.25] * 3)
    assert table["d_z"].isna().all()
    assert table["ci_low"].tolist() == pytest.approx([0.25] * 3)


def test_wilcoxon_cannot_reach_005_with_five_pairs():
    assert wilcoxon_p(np.array([0.01, 0.02, 0.03, 0.04, 0.05])) == pytest.approx(0.0625)
    # The t-test does reach it: the same five consistent gains are "significant" for t but not Wilcoxon.
    df = _results({n: 0.05 for n in LABELS}, noise=0.002)
    table = paired_comparison(df, "coreset", "coreset+vae")
    assert (table["p_ttest"] < 0.001).all()
    assert table["p_wilcoxon"].tolist() == pytest.approx([0.0625] * 3)


def _wilcoxon_brute_force(d: np.ndarray) -> float:
    """Two-sided p from all 2**n sign flips of the mid-ranks of |d| (zeros dropped)."""
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    ranks = sps.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    null = np.array([ranks[list(signs)].sum() for signs in itertools.product([False, True], repeat=len(d))])
    return min(1.0, 2 * min(np.mean(null <= observed + 1e-9), np.mean(null >= observed - 1e-9)))


def test_wilcoxon_is_exact_with_ties_and_zeros():
    rng = np.random.default_rng(3)
    for _ in range(50):
        d = rng.integers(-3, 4, size=rng.integers(1, 9)).astype(float)  # many ties and zeros
        assert wilcoxon_p(d) == pytest.approx(_wilcoxon_brute_force(d), abs=1e-12), d
    assert wilcoxon_p(np.zeros(5)) == 1.0


def test_holm_hand_computed():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06 (monotone).
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.02, np.nan, 0.04]), [0.04, np.nan, 0.04])
    assert holm([]).shape == (0,)


def test_holm_rejects_exactly_the_step_down_set():
    """{p_holm ≤ α} equals Holm's procedure: reject p_(1..k−1), k the first with p_(k) > α/(m − k + 1)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 8))
        for alpha in (0.01, 0.05, 0.1):
            rejected = set()
            for k, i in enumerate(np.argsort(p)):
                if p[i] > alpha / (len(p) - k):
                    break
                rejected.add(i)
            assert set(np.flatnonzero(holm(p) <= alpha)) == rejected


def test_paired_comparison_rejects_bad_input():
    df = _results({n: 0.0 for n in LABELS})
    two = pd.concat([df, _results({n: 0.0 for n in LABELS}, dataset="chestmnist")])
    with pytest.raises(ValueError, match="exactly one dataset"):
        paired_comparison(two, "coreset", "coreset+vae")
    with pytest.raises(ValueError, match="medal"):
        paired_comparison(df, "medal", "medal+vae")
    with pytest.raises(ValueError, match="several rows"):
        paired_comparison(pd.concat([df, df]), "coreset", "coreset+vae")
    with pytest.raises(ValueError, match="lacks column"):
        paired_comparison(df.drop(columns="seed"), "coreset", "coreset+vae")


def test_variant_pairs_include_paper_pairs_and_alpha_variants():
    methods = ["random", "coreset", "coreset+vae", "coreset+vae(α=0.5)", "lossprediction+vae", "medal", "medal+vae"]
    assert variant_pairs(methods) == [("coreset", "coreset+vae"), ("coreset", "coreset+vae(α=0.5)"),
                                      ("medal", "medal+vae")]
    assert set(variant_pairs([m for pair in PAPER_PAIRS for m in pair])) == set(PAPER_PAIRS)


def test_compare_variants_covers_datasets_and_skips_missing_pairs():
    mnist = _results({n: 0.01 for n in LABELS})
    lp = _results({n: 0.02 for n in LABELS}, seed=1, baseline="lossprediction", treatment="lossprediction+vae")
    chest = _results({n: 0.0 for n in LABELS}, seed=2, dataset="chestmnist")
    df = pd.concat([mnist, lp, chest], ignore_index=True)
    table = compare_variants(df)
    combos = table[["dataset", "baseline", "treatment"]].drop_duplicates().apply(tuple, axis=1).tolist()
    assert combos == [("chestmnist", "coreset", "coreset+vae"), ("mnist", "coreset", "coreset+vae"),
                      ("mnist", "lossprediction", "lossprediction+vae")]
    assert (table["metric"] == "accuracy").all()
    expected = paired_comparison(pd.concat([mnist, lp]), "lossprediction", "lossprediction+vae")
    got = table[table["baseline"] == "lossprediction"].reset_index(drop=True).loc[:, expected.columns]
    pd.testing.assert_frame_equal(got, expected)
    # Explicit pairs; a missing pair is skipped, and a metric without values gives an empty table.
    explicit = compare_variants(df, pairs=PAPER_PAIRS)
    assert len(explicit) == len(table)
    assert compare_variants(df, metric="auc").empty


def test_compare_variants_never_pairs_runs_of_different_data_sources():
    sample = _results({n: 0.01 for n in LABELS})
    real = _results({n: 0.05 for n in LABELS}, seed=3).assign(data_description="real")
    table = compare_variants(pd.concat([sample, real], ignore_index=True))
    assert sorted(table["data_description"].unique()) == ["real", "synthetic"]
    for source, frame in (("synthetic", sample), ("real", real)):
        expected = paired_comparison(frame, "coreset", "coreset+vae")
        got = table[table["data_description"] == source].reset_index(drop=True).loc[:, expected.columns]
        pd.testing.assert_frame_equal(got, expected)


def test_significant_findings_sentences():
    df = _results({3000: 0.0, 6000: 0.0, 9000: 0.03}, noise=0.005)
    df["method"] = df["method"].str.replace("coreset", "lossprediction")
    table = compare_variants(df)
    lines = significant_findings(table)
    assert len(lines) == (table["p_ttest"] < 0.05).sum() >= 1
    row = table.set_index("n_labels").loc[9000]
    line = next(line for line in lines if "at 9000 labels" in line)
    assert line.startswith("lossprediction+vae vs lossprediction on mnist at 9000 labels: Δaccuracy=+")
    assert f"{100 * row['mean_diff']:+.2f} pp" in line and f"p_holm={row['p_holm']:.2g}" in line
    assert line.endswith("significant after Holm")
    assert significant_findings(table, alpha_level=1e-12) == []
    with pytest.raises(ValueError, match="compare_variants"):
        significant_findings(table.drop(columns="dataset"))


def test_mean_curve_is_the_t_interval():
    df = _results({n: 0.01 for n in LABELS})
    df = pd.concat([df, pd.DataFrame(_rows("mnist", "random", {(0, 3000): 0.7}))], ignore_index=True)
    curve = mean_curve(df, level=0.9).set_index(["dataset", "method", "n_labels"])
    for (_, method, n), row in curve.iterrows():
        values = df[(df["method"] == method) & (df["n_labels"] == n)]["accuracy"].to_numpy()
        if method == "random":
            assert row["n"] == 1 and np.isnan(row["sd"]) and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
            continue
        sem = values.std(ddof=1) / np.sqrt(len(values))
        low, high = sps.t.interval(0.9, len(values) - 1, loc=values.mean(), scale=sem)
        assert row["n"] == len(values) == 5
        assert row["mean"] == pytest.approx(values.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    with pytest.raises(ValueError, match="no column"):
        mean_curve(df, metric="f1")


def test_significance_view_names_the_source_only_where_a_dataset_has_several():
    from alvae_utils.analysis.tables import significance_view

    sample = _results({n: 0.01 for n in LABELS})
    chest = _results({n: 0.0 for n in LABELS}, seed=2, dataset="chestmnist")
    view = significance_view(compare_variants(pd.concat([sample, chest], ignore_index=True)))
    assert list(view.index.names) == ["dataset", "comparison", "n_labels"]
    assert set(view.index.get_level_values("dataset")) == {"mnist", "chestmnist"}
    assert set(view.index.get_level_values("comparison")) == {"coreset+vae vs coreset"}
    real = _results({n: 0.05 for n in LABELS}, seed=3).assign(data_description="real")
    mixed = significance_view(compare_variants(pd.concat([sample, real], ignore_index=True)))
    assert set(mixed.index.get_level_values("dataset")) == {"mnist [real]", "mnist [synthetic]"}
    assert len(mixed) == 2 * len(LABELS)


def test_findings_name_the_source_when_a_dataset_has_several():
    sample = _results({n: 0.0 for n in LABELS})
    real = _results({3000: 0.0, 6000: 0.0, 9000: 0.03}, noise=0.005, seed=3).assign(data_description="real")
    lines = significant_findings(compare_variants(pd.concat([sample, real], ignore_index=True)))
    assert lines and all(" on mnist [real] at " in line for line in lines)


def test_a_constant_difference_never_yields_a_p_value_from_rounding():
    """+0.01 on each of 3 seeds: accuracies are multiples of 1/n, so this happens; t is undefined (sd = 0)."""
    base = {(seed, n): (0.1, 0.7, 0.33)[seed] + 0.05 * i for seed in range(3) for i, n in enumerate(LABELS)}
    treat = {key: value + 0.01 for key, value in base.items()}
    df = pd.DataFrame(_rows("mnist", "coreset", base) + _rows("mnist", "coreset+vae", treat))
    assert (df.loc[df["method"] == "coreset+vae", "accuracy"].to_numpy()
            - df.loc[df["method"] == "coreset", "accuracy"].to_numpy()).std() > 0, "rounding makes sd ≠ 0"
    table = compare_variants(df)
    assert table["p_ttest"].isna().all() and table["p_holm"].isna().all() and not table["significant"].any()
    assert (table["note"] == "constant difference (sd = 0): t-test undefined").all()
    assert table["mean_diff"].tolist() == pytest.approx([0.01] * 3)
    assert table["p_wilcoxon"].tolist() == pytest.approx([0.25] * 3)
    assert significant_findings(table) == []


def test_one_pair_gives_no_test_and_says_so():
    df = _results({n: 0.02 for n in LABELS})
    table = paired_comparison(df[df["seed"] == 0], "coreset", "coreset+vae")
    assert table["p_ttest"].isna().all() and (table["note"] == "one pair: no test").all()


def test_rows_of_two_configurations_are_never_merged():
    ci = _results({n: 0.01 for n in LABELS}).assign(config_key="ci")
    quick = _results({n: 0.02 for n in LABELS}, seed=3).assign(config_key="quick")
    quick["n_labels"] *= 10  # other label counts: nothing duplicates, so only the key tells them apart
    mixed = pd.concat([ci, quick], ignore_index=True)
    with pytest.raises(ValueError, match=r"mix configurations \(config keys \['ci', 'quick'\]\)"):
        paired_comparison(mixed, "coreset", "coreset+vae")
    table = compare_variants(mixed)
    assert table.groupby("config_key")["n_labels"].apply(list).to_dict() == {
        "ci": list(LABELS), "quick": [10 * n for n in LABELS]}
    expected = paired_comparison(ci, "coreset", "coreset+vae")
    got = table[table["config_key"] == "ci"].reset_index(drop=True).loc[:, expected.columns]
    pd.testing.assert_frame_equal(got, expected)  # Holm over the 3 label counts of one configuration


def test_multilabel_accuracies_are_exact_so_a_constant_shift_stays_constant():
    """ChestMNIST: one more correct decision on every seed is a constant shift, not a significant effect."""
    import torch

    from alvae_utils.training.metrics import multilabel_accuracy

    def accuracy(wrong: int) -> float:
        predictions = torch.zeros(40, 14)
        predictions.view(-1)[:wrong] = 1
        return multilabel_accuracy(predictions, torch.zeros(40, 14))

    assert accuracy(250) == (560 - 250) / 560
    rows = []
    for seed, wrong in enumerate([2, 3, 281]):
        for method, shift in (("coreset", 0), ("coreset+vae", 1)):
            rows.append({"dataset": "chestmnist", "data_description": "x", "config_key": "k", "method": method,
                         "seed": seed, "n_labels": 10, "accuracy": accuracy(wrong - shift)})
    table = compare_variants(pd.DataFrame(rows))
    assert table["note"].tolist() == ["constant difference (sd = 0): t-test undefined"]
    assert not table["significant"].any() and significant_findings(table) == []


# --- AUBC -------------------------------------------------------------------------------------------------------

GRID = (10, 20, 50)  # unequal spacing: the last step is three times as wide as the first


def _trapezoid_by_hand(n, y):
    """The normalised area, written out step by step (no numpy)."""
    pairs = sorted(zip(n, y, strict=True))
    area = sum((n1 - n0) * (y0 + y1) / 2 for (n0, y0), (n1, y1) in itertools.pairwise(pairs))
    return area / (pairs[-1][0] - pairs[0][0])


def _grid_rows(curves: dict[tuple[str, int], tuple[float, ...]], dataset: str = "mnist", grid=GRID) -> pd.DataFrame:
    """Tidy rows from {(method, seed): accuracy at each label count of ``grid``}."""
    return pd.DataFrame([{"profile": "test", "dataset": dataset, "data_description": "synthetic", "config_key": "k",
                          "method": method, "seed": seed, "step": step, "n_labels": n, "accuracy": value,
                          "auc": np.nan}
                         for (method, seed), values in curves.items()
                         for step, (n, value) in enumerate(zip(grid, values, strict=True))])


def _curves(shift: float, methods=("coreset", "coreset+vae"), seeds=SEEDS, noise=0.01, seed=0):
    """Per seed a baseline curve on GRID; each other method adds ``shift`` plus noise to it."""
    rng = np.random.default_rng(seed)
    curves = {}
    for s in seeds:
        base = np.array([0.3, 0.6, 0.8]) + rng.normal(0, 0.03, size=3)
        curves[(methods[0], s)] = tuple(base)
        for method in methods[1:]:
            curves[(method, s)] = tuple(np.clip(base + shift + rng.normal(0, noise, size=3), 0, 1))
    return curves


def test_aubc_hand_computed_with_unequal_spacing():
    # (20 − 10)·(0.2 + 0.5)/2 = 3.5 and (50 − 20)·(0.5 + 0.6)/2 = 16.5: (3.5 + 16.5) / (50 − 10) = 0.5.
    assert aubc([10, 20, 50], [0.2, 0.5, 0.6]) == pytest.approx(0.5)
    # Not the plain mean (0.433) nor the trapezoid as if evenly spaced (0.45): the wide last step weighs more.
    assert aubc([10, 20, 50], [0.2, 0.5, 0.6]) != pytest.approx(np.mean([0.2, 0.5, 0.6]))
    assert aubc([3000, 6000, 9000], [0.2, 0.5, 0.6]) == pytest.approx(0.45)  # even grid: weights ¼, ½, ¼
    assert aubc([100, 400], [0.1, 0.9]) == pytest.approx(0.5)
    assert aubc([10, 20, 50], [0.7, 0.7, 0.7]) == pytest.approx(0.7)  # a flat curve is its value
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = np.sort(rng.choice(np.arange(1, 500), size=rng.integers(2, 9), replace=False))
        y = rng.uniform(size=len(n))
        assert aubc(n, y) == pytest.approx(_trapezoid_by_hand(n.tolist(), y.tolist()))
        assert aubc(n, y) == pytest.approx(np.trapezoid(y, n) / (n[-1] - n[0]))


def test_aubc_ignores_the_order_of_its_points():
    n, y = np.array([10, 20, 50, 70]), np.array([0.2, 0.5, 0.6, 0.65])
    for order in itertools.permutations(range(4)):
        assert aubc(n[list(order)], y[list(order)]) == pytest.approx(aubc(n, y))


def test_aubc_lies_between_the_smallest_and_largest_value():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = np.sort(rng.choice(np.arange(1, 10_000), size=rng.integers(2, 12), replace=False))
        y = rng.uniform(size=len(n)) ** rng.uniform(0.1, 10)  # curves near 0 and near 1 too
        value = aubc(n, y)
        assert y.min() - 1e-12 <= value <= y.max() + 1e-12
        assert 0 <= value <= 1
    assert aubc([10, 20, 50], [0, 0, 0]) == 0 and aubc([10, 20, 50], [1, 1, 1]) == 1


def test_aubc_rejects_what_is_not_a_curve():
    with pytest.raises(ValueError, match="at least two label counts"):
        aubc([10], [0.5])  # one point: the label range is 0
    with pytest.raises(ValueError, match="more than once"):
        aubc([10, 20, 20], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="one length"):
        aubc([10, 20], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        aubc([10, np.nan], [0.1, 0.2])
    assert np.isnan(aubc([10, 20, 50], [0.1, np.nan, 0.3]))  # an undefined metric gives an undefined area


def test_run_aubc_is_one_number_per_run_whatever_the_row_order():
    df = _grid_rows(_curves(0.02, methods=("coreset", "coreset+vae", "random")))
    runs = run_aubc(df)
    assert len(runs) == 3 * len(SEEDS)
    assert list(runs.columns) == ["dataset", "data_description", "config_key", "method", "seed", "n_steps",
                                  "first_labels", "last_labels", "aubc"]
    assert (runs[["n_steps", "first_labels", "last_labels"]] == [3, 10, 50]).all().all()
    for row in runs.itertuples():
        run = df[(df["method"] == row.method) & (df["seed"] == row.seed)]
        assert row.aubc == pytest.approx(_trapezoid_by_hand(run["n_labels"].tolist(), run["accuracy"].tolist()))
    shuffled = df.sample(frac=1, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(run_aubc(shuffled), runs)
    assert run_aubc(df, metric="auc")["aubc"].isna().all()


def test_run_aubc_refuses_missing_steps_and_unequal_grids():
    df = _grid_rows(_curves(0.02))
    middle = (df["method"] == "coreset+vae") & (df["seed"] == 2) & (df["n_labels"] == 20)
    with pytest.raises(ValueError, match=r"coreset\+vae seed 2 on mnist .* misses a step: steps \[0, 2\]"):
        run_aubc(df[~middle])
    # Without step numbers the gap shows as a grid the other runs do not have.
    with pytest.raises(ValueError, match=r"do not share one label grid.*\[10, 50\]: coreset\+vae seed 2"):
        run_aubc(df[~middle].drop(columns="step"))
    interrupted = (df["method"] == "coreset") & (df["seed"] == 4) & (df["n_labels"] == 50)
    with pytest.raises(ValueError, match=r"9 runs have \[10, 20, 50\], but \[10, 20\]: coreset seed 4\. .*interrupted"):
        run_aubc(df[~interrupted])
    with pytest.raises(ValueError, match="not share one label grid"):
        paired_aubc_tests(df[~interrupted])
    with pytest.raises(ValueError, match="several rows at 20 labels"):
        run_aubc(pd.concat([df, df[middle]]))
    with pytest.raises(ValueError, match="one label count"):
        run_aubc(df[df["n_labels"] == 10])
    with pytest.raises(ValueError, match="lacks column"):
        run_aubc(df.drop(columns="seed"))
    # Other configurations may have other grids: they are never compared.
    other = _grid_rows(_curves(0.0), grid=(100, 200, 300)).assign(config_key="other")
    assert set(run_aubc(pd.concat([df, other]))["last_labels"]) == {50, 300}


def test_aubc_summary_is_the_t_interval_over_seeds():
    runs = run_aubc(_grid_rows(_curves(0.02)))
    summary = aubc_summary(runs, level=0.9).set_index("method")
    for method in ("coreset", "coreset+vae"):
        values = runs.loc[runs["method"] == method, "aubc"].to_numpy()
        low, high = sps.t.interval(0.9, len(values) - 1, loc=values.mean(), scale=sps.sem(values))
        assert summary.loc[method, "n_runs"] == 5
        assert summary.loc[method, "mean"] == pytest.approx(values.mean())
        assert (summary.loc[method, "ci_low"], summary.loc[method, "ci_high"]) == pytest.approx((low, high))
    one = aubc_summary(runs[runs["seed"] == 0])
    assert one["ci_low"].isna().all() and (one["n_runs"] == 1).all()


def test_paired_aubc_test_equals_scipy_on_the_per_seed_areas():
    df = _grid_rows(_curves(0.03))
    table = paired_aubc_tests(df)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["baseline"], row["treatment"], row["metric"]) == ("coreset", "coreset+vae", "accuracy")
    areas = {method: np.array([_trapezoid_by_hand(GRID, df[(df["method"] == method) & (df["seed"] == s)]
                                                  .sort_values("n_labels")["accuracy"].tolist()) for s in SEEDS])
             for method in ("coreset", "coreset+vae")}
    base, treat = areas["coreset"], areas["coreset+vae"]
    diff = treat - base
    half = sps.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    assert row["n_pairs"] == 5 and (row["n_steps"], row["first_labels"], row["last_labels"]) == (3, 10, 50)
    assert row["mean_baseline"] == pytest.approx(base.mean())
    assert row["mean_treatment"] == pytest.approx(treat.mean())
    assert row["mean_diff"] == pytest.approx(diff.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert row["d_z"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert row["p_ttest"] == pytest.approx(sps.ttest_rel(treat, base).pvalue)
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(treat, base, method="exact").pvalue)
    assert row["p_holm"] == pytest.approx(row["p_ttest"])  # one comparison: Holm changes nothing
    assert row["p_ttest"] < 0.01 and row["significant"] and row["note"] == ""
    # Pairs are by seed: the rows' order does not matter.
    shuffled = df.sample(frac=1, random_state=1)
    pd.testing.assert_frame_equal(paired_aubc_tests(shuffled), table)


def _holm_brute_force(p: list[float]) -> list[float]:
    """Holm's adjusted p-values from the definition: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j))."""
    m = len(p)
    ranked = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    for position, i in enumerate(ranked):
        adjusted[i] = max(min(1.0, (m - j) * p[ranked[j]]) for j in range(position + 1))
    return adjusted


def test_paired_aubc_holm_spans_every_comparison_of_the_table(monkeypatch):
    from alvae_utils.selection.features import FAMILIES, VAE_FAMILY

    # A second family pairs on its own: any "+family" (and α) variant is compared with its plain heuristic.
    monkeypatch.setitem(FAMILIES, "ssvae", VAE_FAMILY)
    methods = ("coreset", "coreset+vae", "coreset+vae(α=4)", "coreset+ssvae")
    mnist = _grid_rows(_curves(0.01, methods=methods, seed=3))
    lp = _grid_rows(_curves(0.02, methods=("lossprediction", "lossprediction+vae"), seed=4))
    chest = _grid_rows(_curves(0.0, seed=5), dataset="chestmnist")
    table = paired_aubc_tests(pd.concat([mnist, lp, chest], ignore_index=True))
    assert table[["dataset", "baseline", "treatment"]].apply(tuple, axis=1).tolist() == [
        ("chestmnist", "coreset", "coreset+vae"),
        ("mnist", "coreset", "coreset+ssvae"), ("mnist", "coreset", "coreset+vae"),
        ("mnist", "coreset", "coreset+vae(α=4)"), ("mnist", "lossprediction", "lossprediction+vae")]
    assert table["p_ttest"].notna().all()
    np.testing.assert_allclose(table["p_holm"], _holm_brute_force(table["p_ttest"].tolist()))
    assert (table["p_holm"] >= table["p_ttest"]).all()
    assert table["significant"].tolist() == (table["p_holm"] < 0.05).tolist()
    # Each row's test is the one of its comparison alone; only p_holm depends on the family.
    alone = paired_aubc_tests(lp)
    got = table[table["baseline"] == "lossprediction"].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.drop(columns=["p_holm", "significant"]),
                                  alone.drop(columns=["p_holm", "significant"]))
    # Explicit pairs: only those, and a pair with a method missing is skipped.
    explicit = paired_aubc_tests(mnist, pairs=[("coreset", "coreset+vae"), ("medal", "medal+vae")])
    assert explicit["treatment"].tolist() == ["coreset+vae"]


def test_paired_aubc_notes_where_there_is_no_test():
    one = paired_aubc_tests(_grid_rows(_curves(0.02, seeds=(0,))))
    assert one["note"].tolist() == [NOTE_ONE_PAIR] and one["p_ttest"].isna().all() and not one["significant"].any()
    curves = _curves(0.0)
    base = {("coreset", s): tuple(np.round(curves[("coreset", s)], 2)) for s in SEEDS}
    shifted = {**base, **{("coreset+vae", s): tuple(v + 0.25 for v in values) for (_, s), values in base.items()}}
    constant = paired_aubc_tests(_grid_rows(shifted))  # the same +0.25 on every seed: sd = 0 up to rounding
    assert constant["mean_diff"].tolist() == pytest.approx([0.25])
    assert constant["note"].tolist() == [NOTE_CONSTANT] and np.isnan(constant["p_holm"].iloc[0])
    apart = {(m, s if m == "coreset" else s + 10): v for (m, s), v in curves.items()}  # no seed run by both
    none = paired_aubc_tests(_grid_rows(apart))
    assert none["note"].tolist() == [NOTE_NO_PAIRS] and none["n_pairs"].tolist() == [0]
    assert paired_aubc_tests(_grid_rows(curves), metric="auc").empty  # no AUC values at all


def test_aubc_views_name_comparisons_and_ranges():
    from alvae_utils.analysis.tables import aubc_test_view, aubc_view

    df = _grid_rows(_curves(0.02, methods=("coreset", "coreset+vae", "random")))
    view = aubc_view(aubc_summary(run_aubc(df)))
    assert list(view.index.names) == ["dataset", "method"] and len(view) == 3
    assert set(view["labels"]) == {"10–50"}
    tests = aubc_test_view(paired_aubc_tests(df))
    assert tests.index.tolist() == [("mnist", "coreset+vae vs coreset")]
    assert tests["n_pairs"].tolist() == [5]


def test_aubc_findings_sentences():
    table = paired_aubc_tests(_grid_rows(_curves(0.03)))
    (line,) = aubc_findings(table)
    row = table.iloc[0]
    assert line.startswith("coreset+vae vs coreset on mnist, AUBC of accuracy over 10–50 labels: Δ=+")
    assert f"{100 * row['mean_diff']:+.2f} pp (5 pairs)" in line and line.endswith(": significant after Holm")
    assert aubc_findings(table, alpha_level=1e-12) == []
    with pytest.raises(ValueError, match="paired_aubc_tests"):
        aubc_findings(table.drop(columns="first_labels"))


# --- one rule for "equal" --------------------------------------------------------------------------------------

def test_a_rounding_residue_is_no_difference_to_wilcoxon():
    # Seed 0: two curves with mathematically equal AUBCs (5·y0 + 20·y1 + 15·y2 = 25.5 for both), which differ by
    # 1.1e-16 after summation. Wilcoxon counted the residue as a third non-zero difference: p 0.25, not 0.5
    # (scipy #26082).
    curves = {("coreset", 0): (0.3, 0.6, 0.8), ("coreset+vae", 0): (0.1, 0.65, 0.8),
              ("coreset", 1): (0.3, 0.6, 0.8), ("coreset+vae", 1): (0.32, 0.62, 0.82),
              ("coreset", 2): (0.3, 0.6, 0.8), ("coreset+vae", 2): (0.34, 0.64, 0.84)}
    rows = _grid_rows(curves)
    runs = run_aubc(rows).set_index(["method", "seed"])["aubc"]
    assert 0 < abs(runs["coreset+vae", 0] - runs["coreset", 0]) < 1e-15  # the residue is there
    table = paired_aubc_tests(rows)
    assert table["p_wilcoxon"].iloc[0] == pytest.approx(0.5) == _wilcoxon_brute_force(np.array([0.0, 0.02, 0.04]))
    diffs = (runs["coreset+vae"] - runs["coreset"]).to_numpy()
    assert table["mean_diff"].iloc[0] == pytest.approx(diffs[1:].sum() / 3, abs=1e-15)
    assert wilcoxon_p(np.array([5.6e-17, 0.01, 0.02])) == wilcoxon_p(np.array([0.0, 0.01, 0.02])) == 0.5


def test_differences_equal_up_to_rounding_tie_in_the_wilcoxon_ranks():
    residue = -(0.3 - 0.2)  # -0.09999999999999998
    assert residue != -0.1
    assert wilcoxon_p(np.array([0.1, residue, 0.05, 0.2])) == pytest.approx(
        _wilcoxon_brute_force(np.array([0.1, -0.1, 0.05, 0.2])), abs=1e-12)
    assert equal_up_to_rounding(0.1, -residue) and not equal_up_to_rounding(0.1, 0.1 + 1e-8)


def test_a_shift_constant_up_to_rounding_gives_no_paired_p_anywhere():
    base = np.array([0.3, 0.6, 0.9])
    shifted = np.array([0.4, 0.7, 1.0])  # + 0.1, which floating point makes 0.1 ± 3e-17
    assert np.ptp(shifted - base) > 0
    statistics = paired_statistics(base, shifted, 0.95)
    assert np.isnan(statistics["p_ttest"]) and statistics["note"] == NOTE_CONSTANT
    assert statistics["ci_low"] == statistics["ci_high"] == pytest.approx(0.1)
    tails = pd.DataFrame([{"seed": seed, "space": space, "ratio": ratio, "selected_percentile": 50.0,
                           "mannwhitney_p": 0.5}
                          for space, ratios in (("ResNet", base), ("ResNet+VAE", shifted))
                          for seed, ratio in enumerate(ratios)])
    summary = tails_summary(tails)
    assert np.isnan(summary.loc["ResNet+VAE", "p_vs_resnet"])
    assert summary.loc["ResNet+VAE", "ratio_vs_resnet"] == pytest.approx(0.1)


def test_heuristics_against_random_are_a_holm_family_of_their_own():
    from alvae_utils.analysis.figures import versus_random_methods
    from alvae_utils.selection.methods import random_pairs

    methods = ("random", "coreset", "coreset+vae", "margin", "bald", "badge", "badge+vae", "typiclust+vae")
    rows = _grid_rows(_curves(0.02, methods=methods, seed=6))
    pairs = random_pairs(rows["method"])
    # Each plain heuristic, and TypiClust's variant (it has no plain form); no other variant.
    assert pairs == [("random", label) for label in ("badge", "bald", "coreset", "margin", "typiclust+vae")]
    assert versus_random_methods(rows["method"]) == [*(label for _, label in pairs), "random"]
    assert random_pairs(rows[rows["method"] != "random"]["method"]) == []
    variants = paired_aubc_tests(rows)
    versus = paired_aubc_tests(rows, pairs=pairs)
    assert set(variants["baseline"]) == {"coreset", "badge"} and set(versus["baseline"]) == {"random"}
    # Each family is adjusted on its own: the variant table is the one it was without the random comparisons.
    np.testing.assert_allclose(variants["p_holm"], _holm_brute_force(variants["p_ttest"].tolist()))
    np.testing.assert_allclose(versus["p_holm"], _holm_brute_force(versus["p_ttest"].tolist()))
