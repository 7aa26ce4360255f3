"""python -m alvae_utils: runs, sweeps and rejects bad input."""

import subprocess
import sys

import pytest

from alvae_utils.workflow.cli import main
from alvae_utils.experiment.results import load_results

SMALL = ["--pool-size", "60", "--eval-size", "40", "--initial", "10", "--budget", "10", "--max-labels", "20",
         "--no-progress"]


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "alvae_utils", "run", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ["--profile", "--dataset", "--heuristic", "--vae", "--compare-vae", "--alpha", "--seed",
                   "--pool-size", "--initial", "--budget", "--max-labels", "--fine-tune", "--pretrained"]:
        assert option in result.stdout


def test_run_one_and_then_a_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--dataset", "mnist-sample", "--heuristic", "coreset", "--vae", "--seed", "0",
                 "--profile", "ci", *SMALL]) == 0
    assert "coreset+vae" in capsys.readouterr().out
    assert main(["run", "--dataset", "mnist-sample", "--heuristic", "random", "medal", "--compare-vae",
                 "--seed", "0", "1", "--profile", "ci", *SMALL]) == 0
    rows = load_results(tmp_path)
    assert set(rows["method"]) == {"coreset+vae", "random", "medal", "medal+vae"}
    assert set(rows["seed"]) == {0, 1} and set(rows["n_labels"]) == {10, 20}


@pytest.mark.parametrize("args, message", [
    (["--heuristic", "badname"], "unknown heuristic 'badname'"),
    (["--heuristic", "coreset", "--budget", "0"], "budget β must be positive"),
    (["--heuristic", "coreset", "--budget", "500"], "larger than the unlabeled pool"),
    (["--heuristic", "coreset", "--initial", "100"], "initial labels"),
    (["--heuristic", "coreset", "--max-labels", "5"], "smaller than ξ"),
    (["--heuristic", "coreset", "--vae", "--alpha", "-1"], "α must be ≥ 0"),
    (["--heuristic", "random", "--vae"], "has no VAE variant"),
])
def test_bad_input_is_rejected_with_a_clear_message(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    base = ["run", "--dataset", "mnist-sample", "--profile", "ci", "--pool-size", "60", "--no-progress"]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.csv")), "nothing ran"


def test_unknown_dataset_lists_the_valid_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    assert main(["run", "--dataset", "cifar10", "--heuristic", "random", "--profile", "ci", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "mnist-sample" in err and "chestmnist" in err
