"""The results store: atomic, keyed by configuration, resumable."""

import json
import math
import warnings

import pandas as pd
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from alvae_utils.experiment import catalog, results
from alvae_utils.training import vae
from alvae_utils.config import SCHEMA_VERSION, ExperimentConfig, VAEConfig
from alvae_utils.data.datasets import Dataset
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.results import COLUMNS, ResultStore, RunState, atomic_write_text, load_results, run_key

CONFIG = ExperimentConfig("mnist-sample", 100, 50, 10, 10, 30)


def _row(step: int, config: ExperimentConfig = CONFIG, **changes) -> dict:
    row = {column: 0 for column in COLUMNS}
    row.update(profile="t", dataset=config.dataset, method="coreset", heuristic="coreset", use_vae=False,
               alpha=math.nan, seed=0, step=step, n_labels=10 * (step + 1), accuracy=0.5 + step / 10,
               config_key=config.key(), run_key="k", data_description="d")
    row.update(changes)
    return row


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "rows.csv"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]  # temp file cleaned up


def test_run_keys_separate_configurations_sources_methods_alphas_and_seeds():
    keys = {
        run_key(CONFIG, Method("coreset"), 0, "d"),
        run_key(CONFIG, Method("coreset"), 1, "d"),
        run_key(CONFIG, Method("coreset", "vae", 1.0), 0, "d"),
        run_key(CONFIG, Method("coreset", "vae", 0.5), 0, "d"),
        run_key(CONFIG, Method("coreset", "vae", "balanced"), 0, "d"),
        run_key(CONFIG, Method("medal"), 0, "d"),
        run_key(ExperimentConfig("mnist-sample", 100, 50, 10, 5, 30), Method("coreset"), 0, "d"),
        # Offline, "mnist" falls back to the embedded sample: those runs must not pass for real MNIST.
        run_key(CONFIG, Method("coreset"), 0, "MNIST embedded 5k sample"),
    }
    assert len(keys) == 8
    assert run_key(CONFIG, Method("coreset"), 0, "d") == run_key(CONFIG, Method("coreset"), 0, "d")


def test_record_round_trip_and_resume_state(tmp_path):
    store = ResultStore("t", root=tmp_path)
    record = store.record(CONFIG, Method("coreset"), 0, "d")
    rows, state = record.load()
    assert state is None and rows.empty

    frame = pd.DataFrame([_row(0, run_key=record.key), _row(1, run_key=record.key)], columns=list(COLUMNS))
    record.commit_step(frame, RunState(2, list(range(30)), 0.25, False))
    rows, state = record.load()
    assert state == RunState(2, list(range(30)), 0.25, False)
    assert rows["accuracy"].tolist() == [0.5, 0.6]
    header = json.loads(record.state_path.read_text())
    assert header["method"]["heuristic"] == "coreset" and header["experiment"]["budget"] == 10


def test_a_balanced_run_keeps_its_alpha_the_alphas_used_and_its_label(tmp_path):
    method = Method.parse("coreset+vae(α=balanced)")
    record = ResultStore("t", root=tmp_path).record(CONFIG, method, 0, "d")
    frame = pd.DataFrame([_row(step, run_key=record.key, method=method.label, use_vae=True, alpha="balanced",
                               alpha_used=used) for step, used in enumerate([4.5, 4.25, math.nan])],
                         columns=list(COLUMNS))
    record.commit_step(frame, RunState(3, list(range(30)), 0.25, True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no selection follows the last step: its NaN is no damage
        rows, state = record.load()
    assert state.finished and rows["alpha"].tolist() == ["balanced"] * 3
    assert rows["alpha_used"].tolist()[:2] == [4.5, 4.25] and math.isnan(rows["alpha_used"].iloc[2])
    assert catalog.list_runs(tmp_path)["method"].tolist() == [method.label]


def test_a_carried_model_is_saved_as_cpu_tensors_whatever_device_it_trained_on(tmp_path, monkeypatch):
    """Fine-tuning checkpoints load with a plain torch.load on a machine without a GPU."""
    with FakeTensorMode():  # CUDA tensors without a GPU: their metadata, no data
        model = torch.nn.Linear(3, 2, device="cuda")
    assert {value.device.type for value in model.state_dict().values()} == {"cuda"}
    saved = []

    def save(obj, path):  # fake tensors hold no data to write: record what would be written
        saved.append(obj)
        open(path, "wb").close()

    monkeypatch.setattr(torch, "save", save)
    record = ResultStore("t", root=tmp_path).record(CONFIG, Method("coreset"), 0, "d")
    record.commit_step(pd.DataFrame([_row(0, run_key=record.key)], columns=list(COLUMNS)),
                       RunState(1, list(range(20)), 0.0, False), modules={"model": model, "lp": None})
    (weights,) = saved
    assert weights["lp"] is None and set(weights["model"]) == {"weight", "bias"}
    assert {value.device.type for value in weights["model"].values()} == {"cpu"}


def test_state_behind_rows_is_trusted_over_extra_rows(tmp_path):
    """A crash between writing rows and state must not skip the step whose state was lost."""
    record = ResultStore("t", root=tmp_path).record(CONFIG, Method("coreset"), 0, "d")
    record.commit_step(pd.DataFrame([_row(0, run_key=record.key)], columns=list(COLUMNS)),
                       RunState(1, list(range(20)), 0.0, False))
    atomic_write_text(record.csv_path, pd.DataFrame([_row(0, run_key=record.key), _row(1, run_key=record.key)],
                                                    columns=list(COLUMNS)).to_csv(index=False))
    rows, state = record.load()
    assert len(rows) == 1 and state.completed_steps == 1 and not state.finished


def test_load_filters_to_current_configurations(tmp_path):
    store = ResultStore("t", root=tmp_path)
    old = ExperimentConfig("mnist-sample", 100, 50, 10, 5, 30)
    for config in (CONFIG, old):
        record = store.record(config, Method("coreset"), 0, "d")
        record.commit_step(pd.DataFrame([_row(0, config, run_key=record.key)], columns=list(COLUMNS)),
                           RunState(1, list(range(config.initial_labels + config.budget)), 0.0, True))
    assert len(store.load()) == 2
    current = store.load([CONFIG])
    assert current["config_key"].unique().tolist() == [CONFIG.key()]
    assert len(load_results(tmp_path)) == 2
    # A run of the same configuration stored under an older schema (without the columns added since) is
    # read by load_results, but never mixed into the current configuration's rows.
    record = store.record(CONFIG, Method("coreset"), 1, "d")
    record.commit_step(pd.DataFrame([_row(0, run_key=record.key, seed=1)], columns=list(COLUMNS)),
                       RunState(1, list(range(CONFIG.initial_labels + CONFIG.budget)), 0.0, True))
    record.csv_path.write_text(pd.read_csv(record.csv_path).drop(columns=list(results.ADDED_COLUMNS)).to_csv(
        index=False))
    older = min(SCHEMA_VERSION, *results.ADDED_COLUMNS.values()) - 1
    record.state_path.write_text(json.dumps({**json.loads(record.state_path.read_text()), "schema": older}))
    everything = load_results(tmp_path)
    assert len(everything) == 3 and everything.loc[everything["seed"] == 1, "balanced_accuracy"].isna().all()
    assert store.load([CONFIG])["seed"].tolist() == [0]
    assert load_results(tmp_path / "nothing").columns.tolist() == list(COLUMNS)


def _pool(name: str, size: int, description: str) -> Dataset:
    return Dataset(name, torch.zeros(size, 1, 28, 28, dtype=torch.uint8), torch.zeros(size, dtype=torch.long),
                   "multi-class", tuple("0123456789"), description)


def test_vae_checkpoint_path_depends_on_pool_source_vae_settings_and_numerics(tmp_path):
    cpu_1 = {"device": "cpu", "torch_threads": 1}
    a = vae.checkpoint_path(_pool("mnist", 100, "d"), VAEConfig(), 0, cpu_1, root=tmp_path)
    assert a == vae.checkpoint_path(_pool("mnist", 100, "d"), VAEConfig(), 0, cpu_1, root=tmp_path)
    assert a != vae.checkpoint_path(_pool("mnist", 200, "d"), VAEConfig(), 0, cpu_1, root=tmp_path)
    assert a != vae.checkpoint_path(_pool("mnist", 100, "d"), VAEConfig(epochs=3), 0, cpu_1, root=tmp_path)
    assert a != vae.checkpoint_path(_pool("mnist", 100, "other source"), VAEConfig(), 0, cpu_1, root=tmp_path)
    assert a != vae.checkpoint_path(_pool("mnist", 100, "d"), VAEConfig(), 0, {"device": "cpu", "torch_threads": 2},
                                    root=tmp_path), "the thread count changes the trained weights"
    assert a != vae.checkpoint_path(_pool("mnist", 100, "d"), VAEConfig(), 0, {"device": "cuda"}, root=tmp_path)
    assert a.parent == tmp_path / "vae" and a.name.startswith("mnist-")


def test_keys_that_look_like_numbers_are_read_back_as_text(tmp_path):
    record = ResultStore("t", root=tmp_path).record(CONFIG, Method("coreset"), 0, "d")
    record.key = "8972232623e7"  # a hex key that pandas would read as 8.97e18
    rows = pd.DataFrame([_row(0, run_key=record.key, config_key="1234e5")], columns=list(COLUMNS))
    record.commit_step(rows, RunState(1, list(range(20)), 0.0, False))
    loaded, state = record.load()
    assert loaded["run_key"].tolist() == ["8972232623e7"] and loaded["config_key"].tolist() == ["1234e5"]
    assert state.completed_steps == 1


@pytest.mark.parametrize("text", ["nan", "oops"])
def test_text_in_a_number_column_is_damage_not_a_finished_run(tmp_path, text):
    # From the review of issue 23: with text read as text, "nan" typed into `accuracy` made the column strings,
    # the run counted as finished, and the run summary crashed on the mean.
    record = ResultStore("t", root=tmp_path).record(CONFIG, Method("coreset"), 0, "d")
    rows = pd.DataFrame([_row(0, run_key=record.key), _row(1, run_key=record.key)], columns=list(COLUMNS))
    record.commit_step(rows, RunState(2, list(range(30)), 0.0, False))
    lines = record.csv_path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("accuracy")] = text
    lines[2] = ",".join(cells)
    record.csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert results.read_rows(record.csv_path)["accuracy"].dtype.kind == "f"
    with pytest.warns(UserWarning, match="row 1 is damaged"):
        loaded, state = record.load()
    assert len(loaded) == 1 and state.completed_steps == 1


@pytest.mark.parametrize("text", ["null", "nan", "NA", "None", "NaN", "n/a", "#N/A", ""])
def test_every_text_column_is_read_back_as_written(tmp_path, text):
    # pandas reads these strings as missing by default (pandas #48712, #32084): a heuristic named "null" would
    # come back as NaN, its rows look damaged, and every rerun start again from step 0.
    stored = ResultStore("t", root=tmp_path).record(CONFIG, Method("coreset"), 0, "d")
    # A key is a file name: the key column takes the text where it can name a file.
    record = results.RunRecord(stored.directory, text if text.isalnum() else "k", stored.header)
    row = _row(0, **{**{column: text for column in results.TEXT_COLUMNS}, "run_key": record.key})
    rows = pd.DataFrame([row, {**row, "step": 1, "accuracy": 0.6}], columns=list(COLUMNS))
    record.commit_step(rows, RunState(2, list(range(30)), 0.0, False))
    for column in results.TEXT_COLUMNS:
        assert results.read_rows(record.csv_path)[column].tolist() == [row[column]] * 2, column
    if text:  # every stored row is valid and read back as written
        loaded, state = record.load()
        assert state.completed_steps == 2 and len(loaded) == 2
        assert loaded[list(results.TEXT_COLUMNS)].to_dict("records") == [
            {column: row[column] for column in results.TEXT_COLUMNS}] * 2
        assert loaded["alpha"].isna().all() and loaded["accuracy"].tolist() == [0.5, 0.6]
        assert load_results(tmp_path)["method"].tolist() == [text] * 2  # the analysis sees the run
    else:  # an empty required field is damage, as a missing one was
        with pytest.warns(UserWarning, match="row 0 is damaged"):
            loaded, _ = record.load()
        assert loaded.empty


def test_results_list_is_sorted_and_tells_the_sets_apart(tmp_path, monkeypatch, capsys):
    from alvae_utils.experiment.profiles import get_profile
    from alvae_utils.workflow.cli import main

    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    ci = get_profile("ci")
    store = ResultStore("ci", root=tmp_path)
    started = ci.study_sweep().study_start_sweep().experiments[0]  # notebook 06: only `start` tells it apart
    stored = [(ci.beyond_sweep().experiments[0], "random", 1), (ci.experiments[0], "random", 1),
              (ci.experiments[0], "coreset", 0), (ci.experiments[0], "random", 0), (started, "coreset", 0)]
    for config, heuristic, seed in stored:
        record = store.record(config, Method(heuristic), seed, "d")
        labeled = list(range(config.initial_labels))  # a run started: its initial labels, no step yet
        record.commit_step(pd.DataFrame(columns=list(COLUMNS)), RunState(0, labeled, 0.0, False))
    assert main(["results", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:8] == ["profile", "dataset", "sweep", "method", "start", "seed", "pool", "η"]
    beyond = ci.beyond_sweep().experiments[0]
    paper = [str(ci.experiments[0].pool_size), str(ci.experiments[0].max_labels)]
    assert [line.split()[2:8] for line in lines[1:]] == [
        ["02_active_learning", "coreset", "scratch", "0", *paper],
        ["02_active_learning", "random", "scratch", "0", *paper],
        ["02_active_learning", "random", "scratch", "1", *paper],
        ["05_beyond_the_paper", "random", "scratch", "1", str(beyond.pool_size), str(beyond.max_labels)],
        ["06_task_agnostic_study", "coreset", "simclr", "0", str(started.pool_size), str(started.max_labels)]]
    assert main(["results", "list", "--method", "coreset (SimCLR start) "]) == 0  # as notebook 06 names it
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2:6] for line in lines[1:]] == [["06_task_agnostic_study", "coreset", "simclr", "0"]]
    assert main(["results", "list", "--method", "random (SimCLR start)"]) == 2  # stored from scratch only
    error = capsys.readouterr().err
    assert "no stored run has method 'random (SimCLR start)'" in error and "coreset (SimCLR start)" in error
