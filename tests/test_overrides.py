"""Any setting tweakable: dotted-key overrides from notebooks, the CLI and make figures."""

import json
import re

from dataclasses import fields

import pytest

from alvae_utils.workflow import notebooks, papermill as workflow
from alvae_utils.experiment import overrides
from alvae_utils.workflow.cli import main
from alvae_utils.execution.settings import Execution
from alvae_utils.config import ConfigError
from alvae_utils.workflow.notebooks import NothingToAnalyse, check_parameters, stored_runs
from alvae_utils.experiment.overrides import normalise
from alvae_utils.analysis.aubc import learning_curves
from alvae_utils.analysis.plots import plot_learning_curves
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.catalog import stored_sets
from alvae_utils.experiment.results import load_results

SMALL = ["pool_size=60", "eval_size=40", "initial_labels=10", "budget=10", "max_labels=20"]


def test_assignments_are_read_as_the_settings_types_and_change_the_configuration_key():
    changes = overrides.parse_assignments(["train.initial_epochs=3", "vae.lr=0.01", "eval_size=none",
                                           "train.fine_tune=true", "methods=random,coreset+vae", "seeds=0,2"])
    assert changes == {"eval_size": None, "methods": ("random", "coreset+vae"), "seeds": (0, 2),
                       "train.fine_tune": True, "train.initial_epochs": 3, "vae.lr": 0.01}
    ci = get_profile("ci")
    changed = overrides.apply(ci, changes)
    assert [e.train.initial_epochs for e in changed.experiments] == [3, 3]
    assert {e.key() for e in changed.experiments}.isdisjoint({e.key() for e in ci.experiments})
    assert [m.label for m in changed.methods] == ["random", "coreset+vae"] and changed.seeds == (0, 2)
    assert changed.label == ("ci [eval_size=None, methods=random,coreset+vae, seeds=0,2, train.fine_tune=True, "
                             "train.initial_epochs=3, vae.lr=0.01]")
    assert overrides.apply(ci, {}) is ci


@pytest.mark.parametrize("changes, message", [
    ({"trian.initial_epochs": 3}, "unknown setting 'trian.initial_epochs'; valid keys:\n  pool_size"),
    ({"initial_epochs": 3}, "unknown setting 'initial_epochs'"),
    ({"train.initial_epochs": "three"}, "train.initial_epochs must be int, got str 'three'"),
    ({"train.initial_epochs": 0}, "train.initial_epochs must be ≥ 1, got 0"),
    ({"train.momentum": 1.0}, r"train.momentum must be in \[0, 1\), got 1.0"),
    ({"budget": 0}, "budget β must be positive"),
    ({"tsne.unlabeled_fraction": 0.0}, r"tsne.unlabeled_fraction must be in \(0, 1\]"),
    ({"methods": ["coreset", "badname"]}, "unknown heuristic 'badname'"),
    ({"methods": []}, "methods must be a non-empty list"),
    ({"seeds": [0, -1]}, "seeds must be integers ≥ 0"),
    ({"seeds": [1, 1]}, "lists an entry twice"),
    ({"budget": 50}, "budget β=50 is larger than η − ξ = 20 \\(η=30, ξ=10\\): no selection step would run"),
    ({"methods": ["coreset+vae(α=1e300)"]}, "α=1e\\+300 is above the largest accepted α, 1e\\+06"),
])
def test_bad_overrides_name_the_key_the_value_and_what_is_allowed(changes, message):
    with pytest.raises(ConfigError, match=message):
        overrides.apply(get_profile("ci"), changes)


def test_the_valid_keys_carry_type_range_and_meaning():
    keys = overrides.valid_keys()
    assert keys["train.initial_epochs"] == "int, ≥ 1: epochs on the initial labeled set ..."
    assert keys["tsne.perplexity"].startswith("float, > 0")
    assert {"pool_size", "budget", "vae.epochs", "methods", "seeds"} <= set(keys)
    assert "dataset" not in keys and "train" not in keys


def _namespace(**values):
    return {"In": [], "Out": {}, "get_ipython": lambda: None, **values}


def test_a_notebook_rejects_a_setting_it_does_not_use_and_lists_the_ones_it_does():
    with pytest.raises(ConfigError, match=r"01_vae_training: does not use the setting 'train.initial_epochs'; "
                                          r"it takes:\n  pool_size"):
        check_parameters("01_vae_training", _namespace(profile="ci", dataset="mnist-sample", n_reconstructions=3,
                                                       overrides={"train.initial_epochs": 3}))
    sweep = {f.name: f.default for f in fields(Execution)}
    params = check_parameters("02_active_learning", _namespace(profile="ci", dataset="mnist-sample",
                                                               overrides={"train.initial_epochs": 3}, **sweep))
    assert notebooks.profile_of(params).experiment("mnist-sample").train.initial_epochs == 3


def test_a_setting_typed_into_the_parameters_cell_of_a_live_kernel_points_to_overrides():
    parameters_cell = ('profile: str = "ci"\ndataset: str = "mnist-sample"\noverrides: dict = {}\n'
                       "initial_epochs: int = 2")
    namespace = _namespace(profile="ci", dataset="mnist-sample", overrides={}, initial_epochs=2, params=object(),
                           rows=[1], In=["", parameters_cell, "params = check_parameters(...)"])
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) initial_epochs.*\n"
                                          r"initial_epochs is a setting: put it in overrides, e.g. "
                                          r"overrides = \{'train.initial_epochs': \.\.\.\}"):
        check_parameters("02_active_learning", namespace)


def test_cli_set_runs_with_the_overrides_and_stores_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--no-progress", "--set", *SMALL,
                 "train.initial_epochs=2", "methods=random", "seeds=1"]) == 0
    rows = load_results(tmp_path)
    assert rows["epochs"].tolist() == [2, 3] and set(rows["method"]) == {"random"} and set(rows["seed"]) == {1}
    assert stored_sets(tmp_path) == [{"profile": "ci", "runs": 1, "overrides": {
        "budget": 10, "eval_size": 40, "initial_labels": 10, "max_labels": 20, "pool_size": 60,
        "train.initial_epochs": 2}, "seeds": [1], "methods": ["random"]}]
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--set", "train.epochs=2"]) == 2
    assert "unknown setting 'train.epochs'; valid keys:" in capsys.readouterr().err


def test_03_follows_the_one_stored_set_and_otherwise_says_what_to_run_or_pick(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    auto = notebooks.SignificanceParameters(profile="", overrides={})
    with pytest.raises(NothingToAnalyse, match="nothing to analyse, no runs of 02_active_learning are stored.*"
                                               "Run 02_active_learning first"):
        stored_runs("03_significance_tests", auto)
    explicit = notebooks.SignificanceParameters(profile="ci", overrides={"budget": 10})
    with pytest.raises(NothingToAnalyse, match=r"no stored runs of profile 'ci \[budget=10\]'. Run 02_active_learning "
                                               r"first with profile='ci', dataset='mnist-sample', "
                                               r"overrides=\{'budget': 10\}"):
        stored_runs("03_significance_tests", explicit)

    changes = dict(item.split("=") for item in SMALL)
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--no-progress", "--heuristic", "random",
                 "--seed", "0", "--set", *SMALL]) == 0
    profile, rows = stored_runs("03_significance_tests", auto)
    assert profile.name == "ci" and dict(profile.overrides) == {key: int(value) for key, value in changes.items()}
    assert len(rows) == 2

    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--no-progress", "--heuristic", "random",
                 "--seed", "0", "--set", *SMALL, "train.initial_epochs=2"]) == 0
    with pytest.raises(ConfigError, match=r"several sets of runs are stored; pick one with the parameters profile "
                                          r"\(and overrides\):\n  profile='ci', overrides=") as error:
        stored_runs("03_significance_tests", auto)
    # Each set named with every override it was made with, the seeds and methods it holds included.
    assert "'train.initial_epochs': 2, 'seeds': [0], 'methods': ['random']}: 1 runs" in str(error.value)


def test_a_stored_run_is_told_apart_by_the_notebook_sweep_that_made_it():
    import json
    from dataclasses import asdict

    from alvae_utils.selection.methods import Method

    def header(profile, method="random"):
        return {"profile": "ci", "overrides": {}, "experiment": json.loads(json.dumps(asdict(profile.experiments[0]))),
                "method": Method.parse(method).key_fields()}

    ci = get_profile("ci")
    assert notebooks.sweep_of(header(ci)) == "02_active_learning"
    assert notebooks.sweep_of(header(ci.beyond_sweep())) == "05_beyond_the_paper"
    assert notebooks.sweep_of(header(overrides.apply(ci, {"budget": 5}))) == ""  # stored without its overrides
    # notebook 06 shares 05's experiment: its own methods and its SimCLR-start runs are told apart by method
    study = ci.study_sweep()
    assert notebooks.sweep_of(header(study, "coreset+vae(α=balanced)")) == "05_beyond_the_paper"
    assert notebooks.sweep_of(header(study, "badge+simclr(α=balanced)")) == "06_task_agnostic_study"
    assert notebooks.sweep_of(header(study.study_start_sweep(), "coreset")) == "06_task_agnostic_study"


def test_figure_footers_name_the_overrides():
    import pandas as pd

    rows = pd.DataFrame([{"profile": "ci", "dataset": "d", "data_description": "src", "method": "random",
                          "seed": seed, "n_labels": n, "accuracy": 0.5} for seed in (0, 1) for n in (10, 20)])
    label = overrides.apply(get_profile("ci"), {"budget": 10}).label
    fig = plot_learning_curves(learning_curves(rows, "d", ["random"]), profile=label)
    assert "profile: ci [budget=10] · data: src · 2 seeds" in fig.get_supxlabel()


def test_make_figures_passes_overrides_to_the_notebooks_that_use_them_and_spares_the_gallery(
        tmp_path, monkeypatch, capsys):
    import papermill

    calls = []

    def fake_execute(input_path, output_path, parameters, **kwargs):
        calls.append((input_path.stem, parameters, workflow.figures_dir()))

    published = []  # the headline numbers: written next to the figures; the README only for the gallery
    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(workflow, "build_dir", lambda: tmp_path / "build")
    monkeypatch.setattr(workflow, "write_numbers", lambda profile, folder: published.append((profile, folder)) or {})
    monkeypatch.setattr(workflow, "update_readme", lambda readme, record: published.append(readme))
    monkeypatch.delenv("ALVAE_FIGURES_DIR", raising=False)
    monkeypatch.setenv("ALVAE_OFFLINE", "1")
    monkeypatch.setenv("ALVAE_DATA_ROOT", str(tmp_path / "data"))
    workflow.make_figures("quick", overrides={"train.initial_epochs": 2, "vae.epochs": 3, "tsne.budget": 20})
    assert published == [("quick", workflow.figures_dir())] and workflow.figures_dir() != workflow.gallery_dir()
    by_notebook = {name: (parameters, figures) for name, parameters, figures in calls}
    assert by_notebook["01_vae_training"][0]["overrides"] == {"vae.epochs": 3}
    assert by_notebook["02_active_learning"][0]["overrides"] == {"train.initial_epochs": 2, "vae.epochs": 3}
    assert by_notebook["03_significance_tests"][0] == {"profile": "quick",
                                                      "overrides": {"train.initial_epochs": 2, "vae.epochs": 3}}
    assert by_notebook["04_tsne"][0]["overrides"] == {"tsne.budget": 20, "vae.epochs": 3}
    figures = {str(folder) for _, folder in by_notebook.values()}
    assert len(figures) == 1 and figures.pop().startswith(str(tmp_path / "build" / "quick-"))

    calls.clear()
    monkeypatch.delenv("ALVAE_FIGURES_DIR", raising=False)
    workflow.make_figures("quick", only=["03_significance_tests"])
    assert calls == [("03_significance_tests", {"profile": "quick"}, workflow.gallery_dir())]
    assert published[1:] == [("quick", workflow.gallery_dir()), workflow.REPO_ROOT / "README.md"]
    with pytest.raises(ConfigError, match="no selected notebook uses the setting"):
        workflow.make_figures("quick", only=["01_vae_training"], overrides={"tsne.budget": 20})


def test_make_figures_shows_the_kernels_progress_lines_as_they_come(tmp_path, monkeypatch, capsys):
    import papermill

    from alvae_utils.progress import track

    def fake_execute(input_path, output_path, parameters, **kwargs):
        for _ in track(range(2), desc="ci/mnist-sample runs"):  # what a kernel's sweep does
            pass

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(workflow, "build_dir", lambda: tmp_path / "build")
    workflow.make_figures("ci", only=["03_significance_tests"])
    out = capsys.readouterr().out
    # Each line carries the time it was logged.
    assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ci/mnist-sample runs: 1/2\n"
                     r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ci/mnist-sample runs: 2/2\n", out), out
    assert json.loads(json.dumps(True))  # the log is plain text; nothing else to parse


@pytest.mark.parametrize("assignments, message", [
    (["budget=5", "budget=20"], "budget is set twice"),
    (["train.lr=inf"], "train.lr must be a finite number"),
    (["seeds=²"], "seeds must be integers ≥ 0"),
    ([".budget=20"], "unknown setting '.budget'"),
])
def test_ambiguous_or_unusable_assignments_are_refused(assignments, message):
    with pytest.raises(ConfigError, match=message):
        overrides.apply(get_profile("ci"), overrides.parse_assignments(assignments))


@pytest.mark.parametrize("args, message", [
    (["--heuristic", "coreset", "--set", "methods=random"], "both choose the methods"),
    (["--heuristic", "coreset", "--alpha", "0.5"], "--alpha scales a feature family's features"),
])
def test_cli_options_that_contradict_each_other_are_refused(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_budget_beyond_the_last_label_count_stops_notebook_02_before_any_work():
    from dataclasses import asdict

    from alvae_utils.execution import Execution

    with pytest.raises(ConfigError, match="budget β=50 is larger than η − ξ = 20"):
        check_parameters("02_active_learning", _namespace(profile="ci", dataset="mnist-sample",
                                                           overrides={"budget": 50}, **asdict(Execution())))


def test_01_takes_a_smaller_pool_with_its_last_label_count():
    params = check_parameters("01_vae_training", _namespace(profile="quick", dataset="mnist", n_reconstructions=3,
                                                            overrides={"pool_size": 200, "max_labels": 200}))
    assert notebooks.profile_of(params).experiment("mnist").pool_size == 200


def test_03_honours_methods_and_seeds_and_tsne_settings_do_not_split_the_stored_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    for extra in ([], ["tsne.budget=5"]):
        assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--no-progress", "--heuristic", "random",
                     "coreset", "--seed", "0", "1", "--set", *SMALL, *extra]) == 0
    assert [entry["runs"] for entry in stored_sets(tmp_path)] == [4]
    changes = {**{key: int(value) for key, value in (item.split("=") for item in SMALL)},
               "methods": ["coreset"], "seeds": [1]}
    _, rows = stored_runs("03_significance_tests", notebooks.SignificanceParameters(profile="ci", overrides=changes))
    assert set(rows["method"]) == {"coreset"} and set(rows["seed"]) == {1}
    with pytest.raises(ConfigError, match="given without a profile"):
        stored_runs("03_significance_tests", notebooks.SignificanceParameters(profile="", overrides={"budget": 10}))


def test_a_method_written_two_ways_is_one_method():
    assert normalise({"methods": [" coreset ", "coreset+vae(α=4.0)"]})["methods"] == ("coreset", "coreset+vae(α=4)")
    for twice in (["coreset", "coreset+vae(α=4)", "coreset+vae(α=4.0)"], ["coreset+vae", "coreset+vae(α=1)"]):
        with pytest.raises(ConfigError, match="name the same method twice"):
            normalise({"methods": twice})
