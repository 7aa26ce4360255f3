"""Extension points that are one registration each: a dataset and a figure, end to end (the executor's are in
tests/test_executors.py, the heuristic's and the feature family's in tests/test_registry.py)."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from alvae_utils.analysis import figures
from alvae_utils.data.datasets import DATASETS, register_dataset
from alvae_utils.data.fixtures import write_medmnist_npz
from alvae_utils.data.medmnist_2d import medmnist_source
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.results import load_results
from alvae_utils.workflow import notebooks, papermill
from alvae_utils.workflow.cli import main

SMALL = ["--pool-size", "40", "--eval-size", "20", "--initial", "10", "--budget", "10", "--max-labels", "20"]


@pytest.fixture
def toymnist(tmp_path, monkeypatch):
    """A generated MedMNIST-format file registered under a new name, in a data root of its own."""
    monkeypatch.setenv("ALVAE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path / "results"))
    write_medmnist_npz(tmp_path / "data" / "toymnist.npz", n_train=60, n_val=30, n_test=30, flag="chestmnist")
    register_dataset(medmnist_source("toymnist", "chestmnist", title="ToyMNIST",
                                     splits={"train": 60, "val": 30, "test": 30}))
    yield tmp_path
    del DATASETS["toymnist"]


def test_a_registered_dataset_runs_from_the_cli(toymnist):
    assert main(["run", "--profile", "ci", "--dataset", "toymnist", "--heuristic", "random", "--seed", "0",
                 *SMALL]) == 0
    rows = load_results(toymnist / "results")
    assert set(rows["dataset"]) == {"toymnist"} and rows["n_labels"].tolist() == [10, 20]
    assert rows["data_description"].str.contains("synthetic ChestMNIST-format").all()
    assert figures.dataset_title("toymnist") == "ToyMNIST"


def test_a_registered_dataset_is_a_notebook_parameter(toymnist):
    namespace = {"profile": "ci", "dataset": "toymnist", "overrides": {}, "executor": "", "address": "",
                 "cpus_per_run": 1.0, "gpus_per_run": 0.0, "threads": 0, "max_retries": 3}
    params = notebooks.check_parameters("02_active_learning", namespace)
    experiment, adapted = notebooks.profile_of(params).experiment_for(params.dataset)
    # ci's pool (200) and evaluation set (100) are larger than the file's splits: both become the whole split.
    assert (experiment.dataset, experiment.pool_size, experiment.eval_size, len(adapted)) == ("toymnist", 60, None, 2)


def test_a_missing_file_of_a_registered_dataset_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALVAE_DATA_ROOT", str(tmp_path))
    register_dataset(medmnist_source("nofile", "chestmnist"))
    try:
        assert main(["run", "--profile", "ci", "--dataset", "nofile", "--heuristic", "random", "--seed", "0",
                     *SMALL]) == 2
    finally:
        del DATASETS["nofile"]
    assert "nofile is not available: nofile.npz missing from" in capsys.readouterr().err


def _bars(table: pd.DataFrame, title: str = "") -> plt.Figure:
    fig, ax = plt.subplots()
    ax.bar(table["method"], table["mean"])
    ax.set_title(title)
    return fig


def test_a_registered_figure_is_drawn_by_name_and_listed_by_make_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_FIGURES_DIR", str(tmp_path))
    figures.register_figure(figures.FigureRecord("toy_bars", "02_active_learning", "toy_{dataset}_{heuristic}",
                                                 "Mean accuracy per method", _bars))
    try:
        table = pd.DataFrame({"method": ["random", "coreset"], "mean": [0.5, 0.6]})
        fig, written = figures.draw("toy_bars", table, stem={"dataset": "mnist", "heuristic": "coreset"}, title="t")
        assert [path.name for path in written] == ["toy_mnist_coreset.png", "toy_mnist_coreset.pdf"]
        assert fig.axes[0].get_title() == "t"
        listed = papermill.figure_files(get_profile("quick"), "02_active_learning", "mnist")
        assert {path.name for path in written} <= {path.name for path in listed}
    finally:
        del figures.FIGURES["toy_bars"]


def test_a_figure_names_a_missing_or_wrong_stem_field():
    with pytest.raises(ValueError, match="needs heuristic"):
        figures.FIGURES["beyond_curves"].file_stem(dataset="mnist")
    with pytest.raises(ValueError, match="metric='_f1' is not one of"):
        figures.FIGURES["learning_curves"].file_stem(figure="al", dataset="mnist", heuristic="coreset", metric="_f1")
