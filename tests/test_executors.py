"""The executor registry: a new executor is one registration, then selectable everywhere executors are."""

import pytest

from alvae_utils import Executor, register_executor
from alvae_utils.config import ConfigError
from alvae_utils.execution import EXECUTORS, Execution
from alvae_utils.experiment.results import load_results
from alvae_utils.workflow.cli import main
from alvae_utils.workflow.notebooks import check_parameters

SMALL = ["--pool-size", "40", "--eval-size", "20", "--initial", "10", "--budget", "10", "--max-labels", "20"]


@pytest.fixture
def reverse():
    """A toy executor: the runs in reverse order, in this process, recording the order it ran them in."""
    ran: list[str] = []

    def run_reversed(plan, execution, device, progress, desc, placements):
        runs, fit_errors = plan.fitted(device or "cpu", execution.run_threads, progress=False)
        assert not fit_errors
        frames = {}
        for run in reversed(runs):
            ran.append(run.label)
            frames[run.label] = run.run(device or "cpu", execution.run_threads, progress=False)
        return [frames[run.label] for run in runs]

    register_executor(Executor("reverse", "the runs in reverse order, here", run_reversed))
    yield ran
    del EXECUTORS["reverse"]


def test_a_registered_executor_runs_from_the_cli(reverse, tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--profile", "ci", "--dataset", "mnist-sample", "--heuristic", "random", "--seed", "0", "1",
                 "--executor", "reverse", *SMALL]) == 0
    assert reverse == ["mnist-sample random seed 1", "mnist-sample random seed 0"]
    assert sorted(load_results(tmp_path).groupby("seed").size().tolist()) == [2, 2]


def test_a_registered_executor_is_a_notebook_parameter_and_refuses_other_executors_settings(reverse):
    namespace = {"profile": "ci", "dataset": "mnist-sample", "overrides": {}, "executor": "reverse", "address": "",
                 "cpus_per_run": 1.0, "gpus_per_run": 0.0, "threads": 0, "max_retries": 3}
    params = check_parameters("02_active_learning", namespace)
    assert params.executor == "reverse"
    with pytest.raises(ConfigError, match="gpus_per_run are Ray's settings; give executor='ray'"):
        Execution("reverse", gpus_per_run=0.5).validate()


def test_the_cli_lists_the_registered_executors(reverse, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "{,serial,ray,reverse}" in capsys.readouterr().out


def test_an_unknown_executor_names_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown executor 'dask'; choose serial or ray"):
        Execution("dask").validate()

