"""Algorithm 1 end to end on real digits (the embedded MNIST sample), with resumption."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from alvae_utils.execution import run_sweep
from alvae_utils.experiment import loop, planning
from alvae_utils.training import vae as vae_module
from alvae_utils.config import ConfigError, ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.selection.methods import Method
from alvae_utils.data.datasets import load_experiment_data
from alvae_utils.experiment.results import ResultStore, data_fingerprint
from alvae_utils.selection.pool import initial_labeled_indices

TIMINGS = ["train_seconds", "select_seconds", "eval_seconds", "features_seconds"]
CONFIG = ExperimentConfig(
    "mnist-sample", pool_size=120, eval_size=60, initial_labels=10, budget=10, max_labels=30,
    train=TrainConfig(initial_epochs=1, epoch_increment=1, batch_size=10), vae=VAEConfig(latent_dim=4, epochs=1),
)


@pytest.fixture(scope="module")
def data():
    pool, evaluation = load_experiment_data(CONFIG.dataset, CONFIG.pool_size, CONFIG.eval_size, seed=0)
    return pool, evaluation


@pytest.fixture(scope="module")
def vae_features(data):
    torch.manual_seed(0)
    return torch.randn(CONFIG.pool_size, 4)  # selection only needs some fixed features per point


def _run(tmp_path, data, method, seed=0, config=CONFIG, vae_features=None):
    pool, evaluation = data
    store = ResultStore("test", root=tmp_path)
    rows = loop.run_algorithm1(config, method, seed, pool, evaluation, store, family_features=vae_features,
                               device=torch.device("cpu"), progress=False)
    _, state = store.record(config, method, seed, pool.description, data_fingerprint(pool, evaluation)).load()
    return rows, state


@pytest.mark.parametrize("label", ["random", "entropy", "coreset", "coreset+vae", "medal", "lossprediction",
                                   "lossprediction+vae"])
def test_every_heuristic_runs_end_to_end(tmp_path, data, vae_features, label):
    method = Method.parse(label)
    rows, state = _run(tmp_path, data, method, vae_features=vae_features if method.features else None)
    assert rows["n_labels"].tolist() == [10, 20, 30]
    assert rows["step"].tolist() == [0, 1, 2]
    assert rows["epochs"].tolist() == [1, 2, 3]
    assert rows["accuracy"].between(0, 1).all() and rows["method"].eq(label).all()
    assert state.finished and len(state.labeled) == 30
    assert len(set(state.labeled)) == 30, "selections are unique and disjoint from L"
    assert all(0 <= i < CONFIG.pool_size for i in state.labeled)


def test_every_heuristic_starts_from_the_same_initial_labels(tmp_path, data, vae_features):
    firsts = set()
    for label in ["random", "coreset", "coreset+vae", "lossprediction"]:
        method = Method.parse(label)
        _, state = _run(tmp_path, data, method, vae_features=vae_features if method.features else None)
        firsts.add(tuple(state.labeled[:10]))
    assert len(firsts) == 1
    other_seed = initial_labeled_indices(CONFIG.pool_size, 10, seed=1)
    assert tuple(other_seed.tolist()) not in firsts


def test_killed_run_resumes_to_the_same_result(tmp_path, data, vae_features, monkeypatch):
    method = Method.parse("coreset+vae")
    reference, reference_state = _run(tmp_path / "uninterrupted", data, method, vae_features=vae_features)

    real_train = loop.train_task_model
    calls = {"n": 0}

    def crash_on_second_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash during step 1")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train_task_model", crash_on_second_step)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crashed", data, method, vae_features=vae_features)
    crashed = ResultStore("test", root=tmp_path / "crashed")
    partial, state = crashed.record(CONFIG, method, 0, data[0].description, data_fingerprint(*data)).load()
    assert len(partial) == 1 and state.completed_steps == 1 and not state.finished

    monkeypatch.setattr(loop, "train_task_model", real_train)
    resumed, resumed_state = _run(tmp_path / "crashed", data, method, vae_features=vae_features)
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMINGS), reference.drop(columns=TIMINGS),
                                  check_dtype=False)
    assert resumed_state.labeled == reference_state.labeled


def test_finished_runs_are_loaded_not_recomputed(tmp_path, data, monkeypatch):
    first, _ = _run(tmp_path, data, Method("random"))
    monkeypatch.setattr(loop, "train_task_model", lambda *a, **k: pytest.fail("finished run was retrained"))
    again, _ = _run(tmp_path, data, Method("random"))
    pd.testing.assert_frame_equal(first, again, check_dtype=False)


def test_runs_on_another_data_source_are_not_reused(tmp_path, data, monkeypatch):
    """Offline, ``mnist`` falls back to the embedded sample; once real MNIST is in place nothing of it is reused."""
    pool, evaluation = data
    _run(tmp_path, data, Method("random"))

    class Trained(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(loop, "train_task_model", refuse)
    _run(tmp_path, data, Method("random"))  # same source: loaded from the store
    with pytest.raises(Trained):
        _run(tmp_path, (replace(pool, description="another source"), evaluation), Method("random"))


def test_same_seed_same_numbers_on_cpu(tmp_path, data):
    a, _ = _run(tmp_path / "a", data, Method("lossprediction"))
    b, _ = _run(tmp_path / "b", data, Method("lossprediction"))
    pd.testing.assert_frame_equal(a.drop(columns=TIMINGS), b.drop(columns=TIMINGS))


def test_fine_tune_mode_resumes_from_its_saved_model(tmp_path, data, monkeypatch):
    config = replace(CONFIG, train=replace(CONFIG.train, fine_tune=True))
    reference, _ = _run(tmp_path / "ref", data, Method("coreset"), config=config)
    real_train = loop.train_task_model
    calls = {"n": 0}

    def crash_on_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train_task_model", crash_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crash", data, Method("coreset"), config=config)
    monkeypatch.setattr(loop, "train_task_model", real_train)
    resumed, _ = _run(tmp_path / "crash", data, Method("coreset"), config=config)
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMINGS), reference.drop(columns=TIMINGS),
                                  check_dtype=False)


def test_vae_method_without_features_is_rejected(tmp_path, data):
    with pytest.raises(ConfigError, match="needs the pool's VAE features"):
        _run(tmp_path, data, Method("coreset", "vae"))


@pytest.mark.parametrize("changes, message", [
    ({"budget": 200}, "larger than the unlabeled pool"),
    ({"initial_labels": 500}, "initial labels"),
    ({"max_labels": 5}, "smaller than ξ"),
    ({"budget": 0}, "must be positive"),
])
def test_sweep_rejects_bad_input_before_training(tmp_path, monkeypatch, changes, message):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    monkeypatch.setattr(planning, "load_experiment_data", lambda *a, **k: pytest.fail("data loaded before checks"))
    with pytest.raises(ConfigError, match=message):
        run_sweep("ci", "mnist-sample", experiment=replace(CONFIG, **changes), progress=False)


def test_sweep_rejects_unknown_heuristic_and_negative_alpha(tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "load_experiment_data", lambda *a, **k: pytest.fail("data loaded before checks"))
    with pytest.raises(ConfigError, match="unknown heuristic"):
        run_sweep("ci", "mnist-sample", methods=[Method("nope")], experiment=CONFIG, progress=False)
    with pytest.raises(ConfigError, match="α must be ≥ 0"):
        run_sweep("ci", "mnist-sample", methods=[Method("coreset", "vae", -0.5)], experiment=CONFIG,
                       progress=False)


def test_sweep_trains_the_vae_once_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    calls = {"n": 0}
    real = vae_module.train_vae

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(vae_module, "train_vae", counting)
    config = replace(CONFIG, max_labels=20)
    methods = [Method("coreset", "vae"), Method("lossprediction", "vae")]
    rows = run_sweep("ci", "mnist-sample", methods=methods, seeds=[0, 1], experiment=config, progress=False)
    assert calls["n"] == 1
    assert len(rows) == 2 * 2 * 2 and set(rows["method"]) == {"coreset+vae", "lossprediction+vae"}
    run_sweep("ci", "mnist-sample", methods=methods, seeds=[0, 1], experiment=config, progress=False)
    assert calls["n"] == 1, "the cached VAE is reused"
    assert len(list((tmp_path / "vae").glob("*.pt"))) == 1


def test_a_plan_fits_each_family_once_and_only_for_unfinished_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    config = replace(CONFIG, max_labels=20)
    methods = [Method("random"), Method("coreset", "vae"), Method("lossprediction", "vae", 2.0)]
    plan = planning.plan_sweep("ci", "mnist-sample", methods, [0, 1], experiment=config)
    assert [fit.family.name for fit in plan.fits()] == ["vae"], "one fit for the four runs that use the VAE"
    assert [run.once_fitted_family for run in plan.runs] == [None, None, "vae", "vae", "vae", "vae"]
    assert plan.fits()[0].cache_root == tmp_path
    run_sweep("ci", "mnist-sample", methods, [0, 1], experiment=config, progress=False)
    assert plan.fits() == () and plan.fits(plan.runs[:2]) == (), \
        "finished runs are loaded, so nothing is fitted for them"


def test_a_finished_vae_run_whose_rows_are_damaged_gets_its_vae_again_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    methods = [Method("coreset", "vae")]
    rows = run_sweep("ci", "mnist-sample", methods, [0], experiment=CONFIG, progress=False)
    csv = next((tmp_path / "ci").rglob("*.csv"))
    damaged = pd.read_csv(csv)
    damaged.loc[1, "accuracy"] = float("nan")
    damaged.to_csv(csv, index=False)
    plan = planning.plan_sweep("ci", "mnist-sample", methods, [0], experiment=CONFIG)
    assert plan.runs[0].completed_steps() == 1 and [fit.family.name for fit in plan.fits()] == ["vae"]
    with pytest.warns(UserWarning, match="damaged"):
        again = run_sweep("ci", "mnist-sample", methods, [0], experiment=CONFIG, progress=False)
    pd.testing.assert_frame_equal(rows.drop(columns=TIMINGS), again.drop(columns=TIMINGS))


def test_remaining_work_counts_training_evaluation_selection_and_refits(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    config = replace(CONFIG, vae=replace(CONFIG.vae, refit_epochs=2))
    plan = planning.plan_sweep("ci", "mnist-sample", [Method("random"), Method("coreset"), Method("coreset", "ssvae")],
                           [0], experiment=config)
    random_, coreset, ssvae = (run.remaining_work() for run in plan.runs)
    # |L| = 10, 20, 30 with 1, 2, 3 epochs: 140 training images, 3 units each; 60 evaluated at each of 3 steps.
    assert random_ == 3 * (10 * 1 + 20 * 2 + 30 * 3) + 3 * 60
    assert coreset == random_ + 2 * 120, "the pool's predictions at each of the 2 selections"
    assert ssvae == coreset + 2 * 3 * 120 * 2, "2 refit epochs over the pool at each selection"
    run_sweep("ci", "mnist-sample", [Method("random")], [0], experiment=config, progress=False)
    assert plan.runs[0].remaining_work() == 0
