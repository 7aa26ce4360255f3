"""Every entry point checks what it accepts before any work, and the environment cannot change results."""

import os
import subprocess
import sys

import pytest

from alvae_utils import paths
from alvae_utils.workflow import papermill as workflow
from alvae_utils.workflow.cli import main
from alvae_utils.config import ConfigError
from alvae_utils.workflow.notebooks import check_parameters
from alvae_utils.experiment.profiles import get_profile


def _namespace(cells: list[str], **values):
    return {"In": ["", *cells, "params = check_parameters(...)"], "Out": {}, "get_ipython": lambda: None, **values}


@pytest.mark.parametrize("notebook, values, message", [
    ("04_tsne", {"profile": "ci", "overrides": {}, "seed": -1}, "parameter 'seed' must be ≥ 0, got -1"),
    ("01_vae_training", {"profile": "ci", "dataset": "mnist-sample", "overrides": {}, "n_reconstructions": 0},
     "parameter 'n_reconstructions' must be ≥ 1, got 0"),
    ("03_significance_tests", {"profile": "ci", "overrides": {}, "alpha_level": 1.0},
     r"parameter 'alpha_level' must be in \(0, 1\), got 1.0"),
])
def test_notebook_parameters_are_range_checked_before_any_work(notebook, values, message):
    with pytest.raises(ConfigError, match=message):
        check_parameters(notebook, _namespace([], **values))


def test_a_parameter_named_params_does_not_switch_the_unknown_name_check_off():
    """papermill -p params 1 -p alpa_level 0.5: both names are in the injected cell."""
    injected = "# Parameters\nparams = 1\nalpa_level = 0.5\n"
    namespace = _namespace(['profile: str = ""\noverrides: dict = {}\nalpha_level: float = 0.05', injected],
                           profile="", overrides={}, alpha_level=0.05, params=1, alpa_level=0.5)
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) alpa_level, params"):
        check_parameters("03_significance_tests", namespace)


def test_cli_rejects_an_unknown_or_missing_device_before_loading_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--heuristic", "random",
                 "--device", "foo"]) == 2
    assert capsys.readouterr().err == ("error: unknown device 'foo'; use cpu, cuda or cuda:N "
                                       "(default: cuda when available).\n")
    if not __import__("torch").cuda.is_available():
        assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--heuristic", "random",
                     "--device", "cuda:0"]) == 2
        assert "has no CUDA device; use cpu" in capsys.readouterr().err


def test_a_relative_results_root_means_the_same_folder_in_a_shell_and_in_a_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", "build/test-relative-results")
    for cwd in (paths.REPO_ROOT, paths.REPO_ROOT / "notebooks", tmp_path):
        monkeypatch.chdir(cwd)
        assert paths.results_root() == paths.REPO_ROOT / "build" / "test-relative-results"
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path / "absolute"))
    assert paths.results_root() == tmp_path / "absolute"


def test_a_missing_kernel_is_named_with_the_fix_before_any_notebook_runs(monkeypatch):
    monkeypatch.setattr(workflow, "KERNEL_NAME", "alvae-not-registered")
    with pytest.raises(workflow.NothingToRun, match=r"no Jupyter kernel named 'alvae-not-registered' is "
                                                     r"registered.*Fix: `make setup`, or `"):
        workflow.make_figures("ci", only=["03_significance_tests"])


def test_the_store_reads_and_writes_utf8_whatever_the_locale(tmp_path):
    """A run labelled with α must survive a C (ASCII) locale: LC_ALL=C with Python's UTF-8 mode off."""
    script = f"""
import sys
sys.path.insert(0, {str(paths.REPO_ROOT)!r})
import pandas as pd
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.results import COLUMNS, ResultStore, RunState
from alvae_utils.experiment.profiles import get_profile
experiment = get_profile("ci").experiments[0]
record = ResultStore("ci", root=__import__("pathlib").Path({str(tmp_path)!r})).record(
    experiment, Method("coreset", "vae", 0.5), 0, "MNIST, \\u03b1-test")
rows = pd.DataFrame([dict.fromkeys(COLUMNS, 0) | {{"method": Method("coreset", "vae", 0.5).label,
                                                    "run_key": record.key}}])
record.commit_step(rows, RunState(1, list(range(20)), 0.0, False))
print(record.load()[0]["method"].tolist() == ["coreset+vae(\\u03b1=0.5)"])
"""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
    listing = subprocess.run([sys.executable, "-m", "alvae_utils", "results", "list"], capture_output=True,
                             env={**env, "ALVAE_RESULTS_ROOT": str(tmp_path)}, cwd=paths.REPO_ROOT)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert b"coreset+vae(\\u03b1=0.5)" in listing.stdout  # printed, escaped, under an ASCII locale


def test_a_dataset_outside_the_profile_adapts_to_its_small_splits(capsys):
    experiment, notes = get_profile("quick").experiment_for("pneumoniamnist")
    assert experiment.eval_size is None and experiment.pool_size == 3_000
    assert notes == ["pneumoniamnist's val split has 524 images, fewer than the profile's eval_size=1000: "
                     "evaluating on the whole split."]
    breast, notes = get_profile("quick").experiment_for("breastmnist")
    assert (breast.pool_size, breast.eval_size) == (546, None) and len(notes) == 2
    assert get_profile("quick").experiment_for("mnist") == (get_profile("quick").experiment("mnist"), [])
    with pytest.raises(ConfigError, match="unknown dataset 'cifar10'"):
        get_profile("quick").experiment_for("cifar10")


@pytest.mark.parametrize("seeds", [["-1"], ["0", "0"]])
def test_cli_seeds_are_checked_before_any_work(tmp_path, monkeypatch, capsys, seeds):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--heuristic", "random", "--seed", *seeds]) == 2
    assert "seeds must be distinct integers ≥ 0" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.csv"))
