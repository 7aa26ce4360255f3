"""The results store detects damage, resumes from the last valid step, and commits each step as one unit."""

import json
import os
import warnings
from dataclasses import replace

import pandas as pd
import pytest
import torch

from alvae_utils.experiment import loop
from alvae_utils.workflow.cli import main
from alvae_utils.config import ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.data.datasets import load_experiment_data
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.catalog import list_runs
from alvae_utils.experiment.results import (
    ADDED_COLUMNS, ResultStore, StoreDamaged, data_fingerprint, load_results,
)

CONFIG = ExperimentConfig(
    dataset="mnist-sample", pool_size=80, eval_size=40, initial_labels=10, budget=10, max_labels=20,
    train=TrainConfig(initial_epochs=1, epoch_increment=1, batch_size=10), vae=VAEConfig(latent_dim=4, epochs=1),
)
FINE_TUNE = replace(CONFIG, train=replace(CONFIG.train, fine_tune=True))
TIMINGS = ["train_seconds", "select_seconds", "eval_seconds", "features_seconds"]


@pytest.fixture(scope="module")
def data():
    return load_experiment_data(CONFIG.dataset, CONFIG.pool_size, CONFIG.eval_size, seed=0)


CORESET = Method("coreset")


def _run(root, data, config=CONFIG, method=CORESET):
    store = ResultStore("t", root=root)
    rows = loop.run_algorithm1(config, method, 0, *data, store, device=torch.device("cpu"), progress=False)
    return rows, store.record(config, method, 0, data[0].description, data_fingerprint(*data))


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=TIMINGS).reset_index(drop=True),
                                  b.drop(columns=TIMINGS).reset_index(drop=True), check_dtype=False)


def test_a_results_file_cut_inside_its_last_row_is_recomputed(tmp_path, data, spy):
    reference, record = _run(tmp_path, data)
    text = record.csv_path.read_text(encoding="utf-8")
    record.csv_path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1], encoding="utf-8")
    with pytest.warns(UserWarning, match=r"row 1 is damaged .*; the run resumes from step 1"):
        rows, state = record.load()
    assert len(rows) == 1 and state.completed_steps == 1 and not state.finished
    assert len(state.labeled) == 20, "L at step 1 is the prefix of the stored L"
    calls = spy(loop, "train_task_model")
    with pytest.warns(UserWarning, match="row 1 is damaged"):
        resumed, _ = _run(tmp_path, data)
    assert calls["n"] == 1, "only the damaged step is recomputed"
    _same(resumed, reference)
    assert pd.isna(resumed["select_seconds"].iloc[1]), "the lost selection time is not invented"


@pytest.mark.parametrize("damage", [
    lambda last: last.rstrip("\n") + ',garbage,"half-quoted\n',  # hand-damaged: more fields, an open quote
    lambda last: last[: len(last) // 2].rsplit(",", 1)[0] + "\n",  # half-written: fewer fields
    lambda last: last.encode("utf-8")[:-3] + b"\xff\xfe\n",  # not UTF-8
], ids=["garbage", "truncated", "binary"])
def test_one_bad_last_line_keeps_the_rows_before_it_and_resumes_to_the_same_numbers(tmp_path, data, spy, damage):
    """pandas refuses a whole file for one line with too many fields, or one that is not UTF-8: every row was
    discarded and the run started again (issue 23, kind 2)."""
    reference, record = _run(tmp_path, data)
    lines = record.csv_path.read_text(encoding="utf-8").splitlines(keepends=True)
    bad = damage(lines[-1])
    record.csv_path.write_bytes("".join(lines[:-1]).encode("utf-8") + (bad if isinstance(bad, bytes)
                                                                        else bad.encode("utf-8")))
    message = r"row 1 is damaged \(line 3: .*\); the run resumes from step 1, keeping the rows"
    with pytest.warns(UserWarning, match=message):
        rows, state = record.load()
    _same(rows, reference.iloc[:1])
    assert state.completed_steps == 1 and len(state.labeled) == 20
    (status,) = list_runs(tmp_path)["status"]
    assert status.startswith("damaged: ") and "row 1 is damaged (line 3:" in status
    calls = spy(loop, "train_task_model")
    with pytest.warns(UserWarning, match=message):
        resumed, _ = _run(tmp_path, data)
    assert calls["n"] == 1, "only the damaged step is recomputed"
    _same(resumed, reference)
    assert list_runs(tmp_path)["status"].tolist() == ["finished"]


def test_garbage_after_the_committed_rows_is_reported_and_the_rows_kept(tmp_path, data):
    reference, record = _run(tmp_path, data)
    with record.csv_path.open("a", encoding="utf-8") as file:
        file.write("a,b\n")
    with pytest.warns(UserWarning, match=r"line 4 is damaged \(2 fields where the header has \d+\); it follows "
                                         r"the 2 committed row\(s\), which are kept"):
        rows, state = record.load()
    _same(rows, reference)
    assert state.finished
    assert "line 4 is damaged" in list_runs(tmp_path)["status"].item()


@pytest.mark.parametrize("config", [CONFIG, FINE_TUNE], ids=["retrain", "fine-tune"])
def test_a_failed_write_at_any_boundary_resumes_to_the_uninterrupted_numbers(tmp_path, data, monkeypatch, config):
    reference, _ = _run(tmp_path / "reference", data, config)
    real_replace = os.replace
    writes_per_run = 2 * (3 if config.train.fine_tune else 2)  # rows, (model), state per step; 2 steps
    for failing in range(1, writes_per_run + 1):
        calls = {"n": 0}

        def flaky(src, dst, _failing=failing, _calls=calls):
            _calls["n"] += 1
            if _calls["n"] == _failing:
                raise OSError(f"simulated failure of write {_failing}")
            return real_replace(src, dst)

        root = tmp_path / f"fail-{failing}"
        monkeypatch.setattr(os, "replace", flaky)
        with pytest.raises(OSError, match=f"write {failing}"):
            _run(root, data, config)
        monkeypatch.setattr(os, "replace", real_replace)
        resumed, record = _run(root, data, config)
        _same(resumed, reference)
        assert record.load()[1].finished
        models = sorted(path.name for path in root.rglob("*.pt"))
        assert models == ([f"{record.key}.model-step1.pt"] if config.train.fine_tune else []), models


def test_a_fine_tuned_run_whose_model_is_lost_starts_again(tmp_path, data):
    reference, record = _run(tmp_path, data, FINE_TUNE)
    state = json.loads(record.state_path.read_text(encoding="utf-8"))
    state.update(completed_steps=1, finished=False, labeled=state["labeled"][:20])
    record.state_path.write_text(json.dumps(state), encoding="utf-8")
    (record.directory / state["model_file"]).unlink()
    with pytest.warns(UserWarning, match="the model carried into step 1 is not stored; the fine-tuned run starts"):
        resumed, _ = _run(tmp_path, data, FINE_TUNE)
    _same(resumed, reference)


def test_an_unreadable_state_is_named_with_the_fix(tmp_path, data, capsys, monkeypatch):
    _, record = _run(tmp_path, data)
    record.state_path.write_text('{"completed_steps": 2, "label', encoding="utf-8")
    with pytest.raises(StoreDamaged, match=rf"{record.state_path.name} cannot be read \(JSONDecodeError.*Remove the "
                                           rf"run with `python -m alvae_utils results clean --run {record.key}`"):
        _run(tmp_path, data)
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["results", "list"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"damaged: {record.state_path.name} cannot be read (JSONDecodeError" in out
    assert f"results clean --run {record.key}" in out


def test_results_list_and_clean(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    _run(tmp_path, data, CONFIG, Method("coreset"))
    _, unfinished = _run(tmp_path, data, CONFIG, Method("random"))
    state = json.loads(unfinished.state_path.read_text(encoding="utf-8"))
    unfinished.state_path.write_text(json.dumps({**state, "finished": False, "completed_steps": 1,
                                                 "labeled": state["labeled"][:20]}), encoding="utf-8")
    runs = list_runs(tmp_path)
    assert runs.set_index("method")["status"].to_dict() == {"coreset": "finished", "random": "in progress"}
    assert runs.set_index("method")["steps"].to_dict() == {"coreset": "2/2", "random": "1/2"}
    assert main(["results", "list", "--method", "random"]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "coreset" not in out
    assert main(["results", "clean"]) == 2
    assert "needs a choice of runs" in capsys.readouterr().err
    assert main(["results", "clean", "--unfinished"]) == 0
    assert "removed 1 run(s), 2 file(s)." in capsys.readouterr().out
    assert list_runs(tmp_path)["method"].tolist() == ["coreset"]
    assert main(["results", "clean", "--run", "nope"]) == 2


def test_only_committed_rows_are_read_as_results(tmp_path, data):
    from alvae_utils.experiment.results import load_results

    reference, record = _run(tmp_path, data)
    leftover = record.directory / f".{record.key}.0123456789ab.tmp.csv"  # what a kill inside a write leaves
    leftover.write_text(record.csv_path.read_text(encoding="utf-8"), encoding="utf-8")
    orphan = record.directory / "0123456789ab.csv"  # rows whose state is gone
    orphan.write_text(record.csv_path.read_text(encoding="utf-8"), encoding="utf-8")
    _same(load_results(tmp_path), reference)


def test_missing_rows_and_a_short_labeled_set_are_reported(tmp_path, data):
    _, record = _run(tmp_path, data)
    lines = record.csv_path.read_text(encoding="utf-8").splitlines(keepends=True)
    record.csv_path.write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"has 1 rows where the state says 2 steps"):
        rows, state = record.load()
    assert len(rows) == 1 and not state.finished
    stored = json.loads(record.state_path.read_text(encoding="utf-8"))
    record.state_path.write_text(json.dumps({**stored, "labeled": stored["labeled"][:5]}), encoding="utf-8")
    with pytest.raises(StoreDamaged, match=r"the labeled set holds 5 entries .* where step 2 needs 20"):
        record.load()
    from alvae_utils.experiment.catalog import stored_sets

    with pytest.raises(StoreDamaged, match=record.state_path.name):
        stored_sets(tmp_path)


def test_a_finished_fine_tuned_run_needs_no_carried_model(tmp_path, data, monkeypatch):
    reference, record = _run(tmp_path, data, FINE_TUNE)
    for model in record.directory.glob("*.pt"):
        model.unlink()
    monkeypatch.setattr(loop, "train_task_model", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    again, _ = _run(tmp_path, data, FINE_TUNE)
    _same(again, reference)


def test_a_missing_alpha_used_is_damage_except_after_the_last_selection(tmp_path, data):
    method = Method.parse("coreset+vae(α=balanced)")
    features = torch.randn(CONFIG.pool_size, 4, generator=torch.Generator().manual_seed(0))
    store = ResultStore("t", root=tmp_path)
    reference = loop.run_algorithm1(CONFIG, method, 0, *data, store, family_features=features,
                                    device=torch.device("cpu"), progress=False)
    record = store.record(CONFIG, method, 0, data[0].description, data_fingerprint(*data))
    assert reference["alpha_used"].iloc[0] > 0 and pd.isna(reference["alpha_used"].iloc[1])
    rows, state = record.load()  # the last step's NaN is by design: no warning
    assert state.finished and len(rows) == 2
    record.csv_path.write_text(reference.assign(alpha_used=float("nan")).to_csv(index=False), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"row 0 is damaged \(alpha_used\); the run resumes from step 0"):
        rows, state = record.load()
    assert rows.empty and state.completed_steps == 0


def test_balanced_accuracy_is_required_of_new_multiclass_rows_and_absent_from_older_runs(tmp_path, data,
                                                                                        monkeypatch):
    reference, record = _run(tmp_path, data)
    assert reference["balanced_accuracy"].between(0, 1).all() and reference["medmnist_acc"].isna().all()
    state = json.loads(record.state_path.read_text(encoding="utf-8"))
    monkeypatch.setattr(loop, "train_task_model", lambda *a, **k: pytest.fail("a valid run was recomputed"))

    # A run stored before the column existed: its rows are valid, with no balanced accuracy.
    record.csv_path.write_text(reference.drop(columns="balanced_accuracy").to_csv(index=False), encoding="utf-8")
    record.state_path.write_text(json.dumps({**state, "schema": ADDED_COLUMNS["balanced_accuracy"] - 1}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, loaded = record.load()
        everything = load_results(tmp_path)
    assert loaded.finished and len(rows) == 2 and rows["balanced_accuracy"].isna().all()
    _same(rows.drop(columns="balanced_accuracy"), reference.drop(columns="balanced_accuracy"))
    assert list(everything.columns) == list(reference.columns)

    # A run stored since, without the column, is damaged.
    record.state_path.write_text(json.dumps({**state, "schema": ADDED_COLUMNS["balanced_accuracy"]}))
    with pytest.warns(UserWarning, match=r"lacks column\(s\) \['balanced_accuracy'\]; the run starts again"):
        rows, loaded = record.load()
    assert rows.empty and loaded.completed_steps == 0

    # With the column: a multi-class row (no MedMNIST ACC) must hold a value, a multi-label row need not.
    record.state_path.write_text(json.dumps(state))
    damaged = reference.copy()
    damaged.loc[1, "balanced_accuracy"] = float("nan")
    record.csv_path.write_text(damaged.to_csv(index=False), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"row 1 is damaged \(balanced_accuracy\); the run resumes from step 1"):
        rows, _ = record.load()
    assert len(rows) == 1
    multilabel = reference.assign(balanced_accuracy=float("nan"), medmnist_acc=reference["accuracy"])
    record.csv_path.write_text(multilabel.to_csv(index=False), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, loaded = record.load()
    assert loaded.finished and len(rows) == 2
