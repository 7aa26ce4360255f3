"""Notebook 06's study: the grid, the joined runs, the comparisons, their power, the verdicts and the figures."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from alvae_utils.analysis import study, study_plots
from alvae_utils.analysis.stats import detectable_difference
from alvae_utils.config import ConfigError, SimCLRConfig
from alvae_utils.experiment.profiles import PROFILES, StudyConfig, simclr_start
from alvae_utils.experiment.results import run_key
from alvae_utils.selection.methods import Method

GRID = [10, 20, 30]
STUDY = StudyConfig(experiments=(), seeds=(0, 1, 2, 3))


def _rows(aubcs: dict[str, list[float]], config_key: str = "c1", dataset: str = "mnist") -> pd.DataFrame:
    """Runs whose accuracy is flat at the given value per seed, so each run's AUBC is that value."""
    records = []
    for method, values in aubcs.items():
        for seed, value in enumerate(values):
            for step, n in enumerate(GRID):
                records.append({"dataset": dataset, "data_description": "d", "config_key": config_key,
                                "method": method, "seed": seed, "step": step, "n_labels": n, "accuracy": value})
    return pd.DataFrame(records)


def test_every_profile_defines_a_valid_study_with_a_simclr_start():
    for profile in PROFILES.values():
        sweep = profile.study_sweep()
        labels = {m.label for m in sweep.methods}
        assert {"random", "margin", "bald", "coreset", "badge", "coreset+vae(α=balanced)",
                "coreset+simclr(α=balanced)", "badge+simclr(α=balanced)", "typiclust+vae",
                "typiclust+simclr"} <= labels
        start = sweep.study_start_sweep()
        assert [m.label for m in start.methods] == ["random", "coreset"]
        assert all(e.train.init == "simclr" and not e.train.pretrained for e in start.experiments)
        assert start.seeds == sweep.seeds and len(sweep.seeds) >= 2
    quick = PROFILES["quick"]
    # quick's study shares notebook 05's pool and grid, so their common runs are reused
    study_experiment, beyond_experiment = quick.study.experiments[0], quick.beyond.experiments[0]
    assert dataclasses.replace(study_experiment, simclr=SimCLRConfig()) == beyond_experiment
    assert study_experiment.key() == beyond_experiment.key()
    assert study_experiment.simclr.resolved(study_experiment.vae).epochs > study_experiment.vae.epochs
    assert set(quick.beyond.seeds) <= set(quick.study.seeds) and len(quick.study.seeds) >= 3
    paper = {m.label for m in PROFILES["paper"].study_sweep().methods}
    assert {"medal+ssvae(α=balanced)", "lossprediction+mixvae", "lossprediction+simclr"} <= paper


def test_a_profile_without_a_study_names_those_with_one():
    with pytest.raises(ConfigError, match="defines no study.*quick"):
        dataclasses.replace(PROFILES["quick"], study=None).study_sweep()


def test_simclr_settings_enter_only_the_keys_of_runs_that_read_them():
    base = PROFILES["quick"].beyond.experiments[0]
    tuned = dataclasses.replace(base, simclr=SimCLRConfig(epochs=30, temperature=0.2))
    assert tuned.key() == base.key()  # config_key: what every method's runs share
    for label in ("random", "coreset", "coreset+vae(α=balanced)", "typiclust+vae"):
        method = Method.parse(label)
        assert run_key(tuned, method, 0, "d") == run_key(base, method, 0, "d"), label
    for label in ("coreset+simclr(α=balanced)", "typiclust+simclr"):
        method = Method.parse(label)
        assert run_key(tuned, method, 0, "d") != run_key(base, method, 0, "d"), label
    # a SimCLR-start run reads the encoder whatever its heuristic, and is keyed apart from the scratch run
    random = Method("random")
    assert run_key(simclr_start(tuned), random, 0, "d") != run_key(simclr_start(base), random, 0, "d")
    assert run_key(simclr_start(base), random, 0, "d") != run_key(base, random, 0, "d")


def test_study_rows_relabel_the_simclr_start_runs_into_the_scratch_group():
    scratch = _rows({"random": [0.5, 0.6], "coreset": [0.55, 0.62]}, config_key="scratch")
    started = _rows({"random": [0.7, 0.72]}, config_key="started")
    rows = study.study_rows(scratch, started)
    assert set(rows["method"]) == {"random", "coreset", "random (SimCLR start)"}
    assert set(rows["config_key"]) == {"scratch"}
    assert rows.groupby("start")["method"].nunique().to_dict() == {"scratch": 2, "simclr": 1}
    with pytest.raises(ValueError, match="different label grids"):
        study.study_rows(scratch, started[started["n_labels"] < 30])
    other = _rows({"bald": [0.5, 0.5]}).assign(data_description="another source")
    with pytest.raises(ValueError, match="mix data_descriptions"):
        study.study_rows(pd.concat([scratch, other]), started)
    # runs that read SimCLR carry their settings in their config key; the study pairs them with the rest
    tuned = _rows({"coreset+simclr(α=balanced)": [0.6, 0.7]}, config_key="scratch+simclr")
    assert set(study.study_rows(pd.concat([scratch, tuned]), started)["config_key"]) == {"scratch"}


def test_comparisons_ask_each_pair_once_under_its_question():
    labels = [*study.method_kinds(STUDY)]
    pairs = study.comparisons(STUDY, labels)
    by_question = {q: sorted(p for p, asked in pairs.items() if asked == q) for q in study.QUESTIONS}
    assert by_question["appended"] == sorted([("coreset", "coreset+vae(α=balanced)"),
                                              ("coreset", "coreset+simclr(α=balanced)"),
                                              ("badge", "badge+vae(α=balanced)"),
                                              ("badge", "badge+simclr(α=balanced)")])
    assert by_question["families"] == sorted([("coreset+vae(α=balanced)", "coreset+simclr(α=balanced)"),
                                              ("badge+vae(α=balanced)", "badge+simclr(α=balanced)"),
                                              ("typiclust+vae", "typiclust+simclr")])
    assert by_question["start"] == sorted([("random", "random (SimCLR start)"),
                                           ("coreset", "coreset (SimCLR start)"),
                                           ("coreset+simclr(α=balanced)", "coreset (SimCLR start)")])
    # every other method against random, but random vs its SimCLR start is asked (once) under "start"
    assert len(by_question["random"]) == len(labels) - 2
    assert len(pairs) == len(set(pairs))
    # a method missing from the runs drops its comparisons
    assert all("badge" not in b + t for b, t in study.comparisons(STUDY, [x for x in labels if "badge" not in x]))


def test_method_kinds_of_the_study_and_of_overridden_methods():
    kinds = study.method_kinds(STUDY, ["random", "bald", "medal", "medal+vae", "typiclust+ssvae",
                                       "random (SimCLR start)"])
    assert kinds == {"random": study.RANDOM, "bald": study.UNCERTAINTY, "medal": study.AWARE,
                     "medal+vae": study.APPENDED, "typiclust+ssvae": study.AGNOSTIC,
                     "random (SimCLR start)": study.STARTED}


def test_study_tests_holm_across_all_comparisons_with_the_brute_force_power():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.6, 4)
    aubcs = {"random": list(base), "coreset": list(base + [0.01, 0.03, 0.02, 0.05]),
             "coreset+vae(α=balanced)": list(base + [0.02, 0.01, 0.04, 0.02]),
             "coreset+simclr(α=balanced)": list(base + 0.1 + rng.normal(0, 0.001, 4))}
    rows = _rows(aubcs)
    pairs = study.comparisons(STUDY, aubcs)
    tests = study.study_tests(rows, pairs, power=0.8)
    assert len(tests) == len(pairs) == 6
    p = tests["p_ttest"].to_numpy()
    # Holm by hand: sorted p times (m − rank), running maximum, capped at 1
    order = np.argsort(p)
    adjusted = np.maximum.accumulate(np.minimum(1, p[order] * (len(p) - np.arange(len(p)))))
    assert np.allclose(tests["p_holm"].to_numpy()[order], adjusted)
    row = tests.set_index(["baseline", "treatment"]).loc[("coreset", "coreset+vae(α=balanced)")]
    diff = np.array(aubcs["coreset+vae(α=balanced)"]) - np.array(aubcs["coreset"])
    assert row["mean_diff"] == pytest.approx(diff.mean())
    assert row["sd_diff"] == pytest.approx(diff.std(ddof=1))
    assert row["detectable_diff"] == pytest.approx(detectable_difference(diff.std(ddof=1), 4))
    # the detectable difference has the power it claims: a noncentral t at δ√n/sd rejects 80% of the time
    critical = sps.t.ppf(0.975, 3)
    lam = row["detectable_diff"] * 2 / row["sd_diff"]
    assert sps.nct.sf(critical, 3, lam) + sps.nct.cdf(-critical, 3, lam) == pytest.approx(0.8, abs=1e-6)
    assert row["question"] == "appended"
    with pytest.raises(ValueError, match="one dataset"):
        study.study_tests(pd.concat([rows, _rows(aubcs, dataset="fashionmnist")]), pairs)


def test_verdicts_say_what_was_significant_and_what_could_not_be_seen():
    base = np.array([0.50, 0.52, 0.55, 0.58])
    noise = np.array([0.004, -0.003, 0.002, -0.001])
    aubcs = {"random": list(base), "coreset": list(base + 0.001 + noise),
             "coreset+vae(α=balanced)": list(base + 0.002 - noise),
             "coreset+simclr(α=balanced)": list(base + 0.2 + noise / 10)}
    rows = _rows(aubcs)
    ranked = study.ranking(rows, study.method_kinds(STUDY, aubcs))
    assert ranked["method"].iloc[0] == "coreset+simclr(α=balanced)"
    assert list(ranked["mean"]) == sorted(ranked["mean"], reverse=True)
    tests = study.study_tests(rows, study.comparisons(STUDY, aubcs))
    answers = study.verdicts(tests, ranked)
    appended = answers[study.QUESTIONS["appended"]]
    gain = 100 * np.mean(np.array(aubcs["coreset+simclr(α=balanced)"]) - aubcs["coreset"])
    assert f"better: coreset+simclr(α=balanced) vs coreset: +{gain:.2f} pp (95% CI" in appended
    random = answers[study.QUESTIONS["random"]]
    assert "coreset+simclr(α=balanced) vs random" in random
    families = answers[study.QUESTIONS["families"]]
    assert families.startswith("1 of 1 comparisons significant")
    assert answers[study.QUESTIONS["start"]].startswith("Not asked")
    # without an effect: no claim, the largest difference, and what 4 seeds could detect
    flat = _rows({"coreset": list(base), "coreset+vae(α=balanced)": list(base + noise)})
    flat_tests = study.study_tests(flat, study.comparisons(STUDY, ["coreset", "coreset+vae(α=balanced)"]))
    text = study.verdicts(flat_tests, study.ranking(flat, {}))[study.QUESTIONS["appended"]]
    detectable = 100 * flat_tests["detectable_diff"].iloc[0]
    assert text.startswith("No significant difference in 1 comparison")
    assert f"detect a true AUBC difference of {detectable:.2f} pp with 80% power" in text


def test_best_of_kind_takes_the_highest_mean_of_each_kind_then_random():
    ranked = pd.DataFrame({"method": ["coreset+vae", "badge", "coreset", "random", "margin"],
                           "kind": [study.APPENDED, study.AWARE, study.AWARE, study.RANDOM, study.UNCERTAINTY],
                           "mean": [0.9, 0.8, 0.7, 0.6, 0.5]})
    assert study.best_of_kind(ranked) == ["margin", "badge", "coreset+vae", "random"]


def test_study_figures_draw_the_computed_tables_and_refuse_empty_ones():
    aubcs = {"random": [0.5, 0.52, 0.51], "coreset": [0.55, 0.53, 0.56],
             "coreset+vae(α=balanced)": [0.56, 0.55, 0.55], "coreset+simclr(α=balanced)": [0.6, 0.62, 0.61]}
    rows = _rows(aubcs)
    ranked = study.ranking(rows, study.method_kinds(STUDY, aubcs))
    fig = study_plots.plot_aubc_ranking(ranked, title="t", profile="ci", data_description="d")
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels[-1].startswith("coreset+simclr(α=balanced)") and len(labels) == 4
    tests = study.study_tests(rows, study.comparisons(STUDY, aubcs))
    fig = study_plots.plot_family_gains(tests[tests["question"] == "appended"], profile="ci", data_description="d")
    ticks = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert ticks == ["coreset+simclr(α=balanced) − coreset", "coreset+vae(α=balanced) − coreset"]
    assert fig.get_supxlabel() == "profile: ci · data: d · 3 seeds"
    with pytest.raises(ValueError, match="empty"):
        study_plots.plot_aubc_ranking(ranked.iloc[:0])
    with pytest.raises(ValueError, match="no family comparison"):
        study_plots.plot_family_gains(tests.iloc[:0])


def test_the_numbers_record_carries_the_stored_study_verdicts():
    from alvae_utils.analysis.numbers import headline_numbers, summary_markdown

    config = PROFILES["ci"].study
    experiment = config.experiments[0]
    base = np.array([0.50, 0.52, 0.55, 0.58])
    aubcs = {"random": base, "coreset": base + 0.01, "coreset+simclr(α=balanced)": base + [0.3, 0.31, 0.3, 0.32],
             "coreset+vae(α=4)": base}  # notebook 05's run of the same experiment: not part of the study
    scratch = _rows({m: list(v) for m, v in aubcs.items()}, config_key=experiment.key(), dataset=experiment.dataset)
    started = _rows({"coreset": list(base + 0.02)}, config_key=simclr_start(experiment).key(),
                    dataset=experiment.dataset)
    rows = pd.concat([scratch, started], ignore_index=True).assign(profile="ci")
    record = headline_numbers(rows, "ci", study=config)
    [entry] = record["study"]
    assert entry["dataset"] == experiment.dataset and entry["seeds"] == [0, 1, 2, 3]
    assert entry["runs"] == 4 * 4  # random, coreset, coreset+simclr and coreset's SimCLR start; not 05's α = 4
    appended = entry["verdicts"][study.QUESTIONS["appended"]]
    assert appended.startswith("1 of 1 comparisons significant") and "coreset+simclr(α=balanced) vs coreset" in appended
    assert f"*{study.QUESTIONS['appended']}* {appended}" in summary_markdown(record)
    assert [m["method"] for m in entry["methods"]][0] == "coreset+simclr(α=balanced)"
    # the SimCLR-start runs are summarised with the study, not as a group without the runs they are compared with
    assert [d["runs"] for d in record["datasets"]] == [16]
    without = headline_numbers(rows, "ci")
    assert without["study"] == [] and len(without["datasets"]) == 2  # without the profile's study: no verdicts


def test_a_study_needs_two_seeds_a_scratch_start_and_a_power_above_its_level():
    sweep = PROFILES["ci"].study_sweep()
    with pytest.raises(ConfigError, match=r"at least 2 seeds; got seeds \[0\]"):
        dataclasses.replace(sweep, seeds=(0,)).study_start_sweep()
    started = dataclasses.replace(sweep, experiments=tuple(simclr_start(e) for e in sweep.experiments))
    with pytest.raises(ConfigError, match="leave train.init at scratch"):
        started.study_start_sweep()
    with pytest.raises(ValueError, match=r"power=0.05 is not above the significance level alpha_level=0.05"):
        detectable_difference(1.0, 4, 0.05, 0.05)
    rows = _rows({"coreset": [0.5, 0.6, 0.55], "coreset+vae(α=balanced)": [0.52, 0.6, 0.58]})
    with pytest.raises(ValueError, match="power=0.5 is not above"):
        study.study_tests(rows, study.comparisons(STUDY, ["coreset", "coreset+vae(α=balanced)"]), alpha_level=0.5,
                          power=0.5)


def test_verdicts_never_show_nan_or_tests_that_did_not_run():
    one_seed = _rows({"coreset": [0.5], "coreset+vae(α=balanced)": [0.6], "random": [0.4]})
    tests = study.study_tests(one_seed, study.comparisons(STUDY, ["coreset", "coreset+vae(α=balanced)", "random"]))
    answers = study.verdicts(tests, study.ranking(one_seed, {}))
    assert answers[study.QUESTIONS["appended"]] == "No test was possible in 1 comparison: one pair: no test. " \
                                                   "Nothing can be concluded."
    assert answers["Highest mean AUBC"].endswith("over 1 seed, 10–30 labels.")
    assert not any("nan" in answer for answer in answers.values())


def test_a_study_that_cannot_answer_its_questions_is_refused():
    for bad, message in ((StudyConfig(experiments=(), seeds=(0, 1)), "at least one experiment"),
                         (dataclasses.replace(PROFILES["ci"].study, seeds=(0, 0)), r"seeds \[0, 0\]"),
                         (dataclasses.replace(PROFILES["ci"].study, uncertainty=("margin", "coreset")), "coreset")):
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(PROFILES["ci"], study=bad).validate()
