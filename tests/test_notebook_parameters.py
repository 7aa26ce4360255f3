"""The notebooks' parameter checks (papermill only warns about unknown names)."""

import ast
import json
import types
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from alvae_utils.config import ConfigError
from alvae_utils.execution.settings import Execution
from alvae_utils.workflow.notebooks import (
    NOTEBOOKS, ActiveLearningParameters, ParameterError, check_parameters, profile_of)

SWEEP = {f.name: f.default for f in fields(Execution)}  # 02 runs sweeps: the execution settings are parameters


def _kernel_namespace(**values):
    return {"__name__": "__main__", "_i1": "", "In": [], "Out": {}, "get_ipython": lambda: None,
            "exit": None, "quit": None, "np": types.ModuleType("numpy"), "overrides": {}, **values}


def test_valid_parameters_come_back_typed():
    params = check_parameters("02_active_learning", _kernel_namespace(profile="ci", dataset="chestmnist", **SWEEP))
    assert params == ActiveLearningParameters(profile="ci", dataset="chestmnist")


def test_an_injected_unknown_parameter_stops_the_notebook():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) datset; this notebook takes .*profile, dataset"):
        check_parameters("02_active_learning", _kernel_namespace(profile="quick", dataset="mnist", datset="x",
                                                                 **SWEEP))


def test_interactive_rerun_does_not_flag_the_notebooks_own_variables():
    namespace = _kernel_namespace(profile="quick", dataset="mnist", params=object(), rows=[1, 2], **SWEEP)
    assert check_parameters("02_active_learning", namespace).dataset == "mnist"


def test_wrong_types_and_values_are_rejected():
    with pytest.raises(ConfigError, match="'seed' must be int, got str"):
        check_parameters("04_tsne", _kernel_namespace(profile="quick", seed="0"))
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        check_parameters("04_tsne", _kernel_namespace(profile="fast", seed=0))
    with pytest.raises(ConfigError, match="has no experiment for dataset 'cifar10'"):
        check_parameters("01_vae_training", _kernel_namespace(profile="quick", dataset="cifar10",
                                                              n_reconstructions=4))
    with pytest.raises(ConfigError, match="'alpha_level' must be in"):
        check_parameters("03_significance_tests", _kernel_namespace(profile="quick", alpha_level=5.0))


NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def test_the_notebook_table_lists_every_committed_notebook():
    assert sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebook_is_clean_and_declares_what_the_package_checks(name):
    notebook = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code), "commit notebooks clean"
    # No traces of an execution either: papermill's and Jupyter's run metadata, widget state.
    assert not {"papermill", "widgets"} & set(notebook["metadata"])
    assert all(not {"papermill", "execution"} & set(cell.get("metadata", {})) for cell in notebook["cells"])
    tagged = [cell for cell in notebook["cells"] if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    source = "".join(tagged[0]["source"])
    tree = ast.parse(source)
    assert all(isinstance(node, ast.AnnAssign) for node in tree.body), "the parameters cell only assigns"
    assert all("#" in line for line in source.splitlines()), "every parameter has a comment"
    declared = {node.target.id: (ast.unparse(node.annotation), ast.literal_eval(node.value)) for node in tree.body}
    spec = NOTEBOOKS[name].parameters
    expected = {f.name: (f.type if isinstance(f.type, str) else f.type.__name__,
                         f.default_factory() if f.default is MISSING else f.default) for f in fields(spec)}
    assert declared == expected
    assert notebook["metadata"]["kernelspec"]["name"] == "alvae"


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_papermill_reads_every_declared_parameter_with_its_type(name):
    import papermill

    inspected = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    spec = NOTEBOOKS[name].parameters
    assert {key: value["inferred_type_name"] for key, value in inspected.items()} == {
        f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(spec)}


def test_notebook_05_runs_the_profiles_beyond_sweep_and_checks_its_datasets():
    params = check_parameters("05_beyond_the_paper", _kernel_namespace(
        profile="ci", dataset="mnist-sample", overrides={"seeds": [0]}, alpha_level=0.05, **SWEEP))
    profile = profile_of(params)
    assert profile.datasets == ("mnist-sample",) and profile.seeds == (0,)
    assert "coreset+vae(α=balanced)" in [m.label for m in profile.methods]
    with pytest.raises(ConfigError, match=r"the sweep of 05_beyond_the_paper \(profile 'ci''s `beyond` setting\) has "
                                          "no experiment for dataset 'chestmnist'; it defines mnist-sample"):
        check_parameters("05_beyond_the_paper", _kernel_namespace(profile="ci", dataset="chestmnist",
                                                                  overrides={}, alpha_level=0.05, **SWEEP))
    with pytest.raises(ConfigError, match="lossprediction"):
        check_parameters("05_beyond_the_paper", _kernel_namespace(
            profile="ci", dataset="mnist-sample", overrides={"methods": ["lossprediction+vae(α=balanced)"]},
            alpha_level=0.05, **SWEEP))


def test_notebook_06_runs_the_profiles_study_and_its_simclr_start_with_the_same_overrides():
    params = check_parameters("06_task_agnostic_study", _kernel_namespace(
        profile="quick", dataset="", overrides={"seeds": [0, 1, 2], "simclr.epochs": 3}, alpha_level=0.05,
        power=0.9, **SWEEP))
    profile = profile_of(params)
    assert params.dataset == "mnist" and params.power == 0.9 and profile.seeds == (0, 1, 2)
    assert "badge+simclr(α=balanced)" in [m.label for m in profile.methods]
    start = profile.study_start_sweep()
    assert start.seeds == (0, 1, 2) and start.experiment("mnist").simclr.epochs == 3
    assert start.experiment("mnist").train.init == "simclr" and profile.experiment("mnist").train.init == "scratch"
    with pytest.raises(ConfigError, match=r"06_task_agnostic_study \(profile 'ci''s `study` setting\) has no "
                                          "experiment for dataset 'chestmnist'"):
        check_parameters("06_task_agnostic_study", _kernel_namespace(
            profile="ci", dataset="chestmnist", overrides={}, alpha_level=0.05, power=0.8, **SWEEP))
    with pytest.raises(ConfigError, match="power"):
        check_parameters("06_task_agnostic_study", _kernel_namespace(
            profile="ci", dataset="", overrides={}, alpha_level=0.05, power=1.0, **SWEEP))
    with pytest.raises(ConfigError, match=r"'power' \(0.05\) must be above 'alpha_level' \(0.05\)"):
        check_parameters("06_task_agnostic_study", _kernel_namespace(
            profile="ci", dataset="", overrides={}, alpha_level=0.05, power=0.05, **SWEEP))


def test_a_dataset_left_empty_is_the_profiles_first():
    params = check_parameters("02_active_learning", _kernel_namespace(profile="ci", dataset="", **SWEEP))
    assert params.dataset == "mnist-sample" and profile_of(params).name == "ci"
    beyond = check_parameters("05_beyond_the_paper", _kernel_namespace(profile="quick", dataset="", alpha_level=0.05,
                                                                       **SWEEP))
    assert beyond.dataset == profile_of(beyond).datasets[0]


def test_a_parameter_error_shows_its_message_alone_in_a_notebook():
    # IPython draws _render_traceback_ instead of the traceback, which would only point into the package.
    with pytest.raises(ParameterError) as error:
        check_parameters("02_active_learning", _kernel_namespace(profile="ci", dataset="cifar10", **SWEEP))
    assert isinstance(error.value, ConfigError)
    assert error.value._render_traceback_() == [f"ParameterError: {error.value}"]
    assert "'cifar10'" in str(error.value)
    with pytest.raises(ParameterError, match="unknown profile 'fast'"):
        check_parameters("01_vae_training", _kernel_namespace(profile="fast", dataset="", n_reconstructions=3))
