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
    # Settings that used to be found out only after the VAE, a step or Ray had started:
    (["--set", "methods=coreset+vae(α=1e300)"], "α=1e+300 is above the largest accepted α, 1e+06"),
    (["--heuristic", "coreset", "--vae", "--alpha", "2e6"], "α=2000000.0 is above the largest accepted α"),
    (["--heuristic", "coreset", "--budget", "50"], "budget β=50 is larger than η − ξ = 20 (η=30, ξ=10)"),
    (["--heuristic", "coreset", "--vae", "--initial", "1"], "ξ=1 must be between 2 (the task model trains in batches"),
    (["--heuristic", "coreset", "--executor", "ray", "--cpus-per-run", "1e-9"],
     "cpus_per_run=1e-09 (--cpus-per-run) is below 0.0001"),
    (["--heuristic", "coreset", "--executor", "ray", "--gpus-per-run", "1e-5"],
     "gpus_per_run=1e-05 (--gpus-per-run) is below 0.0001"),
    # Two ways to give one setting: refused, never one of them silently.
    (["--heuristic", "coreset", "--seed", "0", "--set", "seeds=1"], "--seed and --set seeds=... both set seeds"),
    (["--heuristic", "coreset", "--budget", "10", "--set", "budget=20"], "--budget and --set budget=... both"),
    (["--heuristic", "coreset", "--initial", "10", "--set", "initial_labels=20"], "--initial and --set initial_"),
    (["--heuristic", "coreset", "--max-labels", "30", "--set", "max_labels=20"], "--max-labels and --set max_"),
    (["--heuristic", "coreset", "--eval-size", "30", "--set", "eval_size=20"], "--eval-size and --set eval_"),
    (["--heuristic", "coreset", "--set", "pool_size=50"], "--pool-size and --set pool_size=... both"),
    (["--heuristic", "coreset", "--no-pretrained", "--set", "train.pretrained=true"], "--pretrained and --set"),
    (["--heuristic", "coreset", "--fine-tune", "--set", "train.fine_tune=false"], "--fine-tune and --set"),
    (["--heuristic", "coreset", "--set", "methods=coreset"], "--heuristic and --set methods=... both"),
    # η = ξ: no selection step at all (issue 23, kind 1).
    (["--heuristic", "coreset", "--initial", "10", "--max-labels", "10"],
     "η=10 equals ξ=10: no selection step would run (β=10 labels are never added)"),
    # Numbers in messages are short: 1e+308, not the 309 digits of int(1e308) (issue 23).
    (["--heuristic", "coreset", "--set", "pool_imbalance=1e308"],
     "leaves class 9, the smallest, no image (6e-307 expected); raise pool_size to at least 1e+308 or lower"),
    (["--heuristic", "coreset", "--budget", str(10 ** 40)], "budget β=1e+40 is larger than the unlabeled pool"),
    # --heuristic takes names and full labels; a label does not mix with the options that build one.
    (["--heuristic", "typiclust+vae(α=2)", "--vae"], "--heuristic typiclust+vae(α=2) is a method label, which names "
                                                     "its own family and α, and --vae sets them too"),
    (["--heuristic", "coreset+vae(α=2", "random"], "cannot parse method 'coreset+vae(α=2'"),
    (["--heuristic", "coreset", "--features", "vae(α=2)"], "--features takes a family name (vae, "),
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


def _stored_run(root, profile: str, method, seed: int = 0):
    """A finished one-step run of ``method`` stored under ``root`` without training (rows as a run writes them)."""
    import math

    import pandas as pd

    from alvae_utils.config import ExperimentConfig
    from alvae_utils.experiment.results import COLUMNS, ResultStore, RunState

    config = ExperimentConfig("mnist-sample", 100, 50, 10, 10, 10)
    record = ResultStore(profile, root=root).record(config, method, seed, "d")
    row = {**{column: 0 for column in COLUMNS}, "profile": profile, "dataset": config.dataset, "method": method.label,
           "heuristic": method.heuristic, "alpha": method.alpha if method.features else math.nan, "alpha_used": 1.0,
           "seed": seed, "n_labels": 10, "config_key": config.key(), "run_key": record.key, "data_description": "d"}
    record.commit_step(pd.DataFrame([row], columns=list(COLUMNS)), RunState(1, list(range(10)), 0.0, True))
    return record


def test_results_clean_selects_as_run_spells_and_says_when_nothing_matches(tmp_path, monkeypatch, capsys):
    from alvae_utils.experiment.catalog import list_runs
    from alvae_utils.selection.methods import Method

    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    _stored_run(tmp_path, "ci", Method("coreset", "vae", 1e17))  # stored before α had a bound
    _stored_run(tmp_path, "ci", Method("coreset"))
    assert main(["results", "clean", "--profile", "qiuck"]) == 2
    assert "no stored run has profile 'qiuck'; stored: ci" in capsys.readouterr().err
    assert main(["results", "list", "--method", "medal"]) == 2
    assert "no stored run has method 'medal'; stored: coreset, coreset+vae(α=1e+17)" in capsys.readouterr().err
    assert main(["results", "clean", "--method", "coreset", "--unfinished"]) == 0  # each matches, together none
    assert "nothing removed" in capsys.readouterr().out
    assert len(list_runs(tmp_path)) == 2
    assert main(["results", "clean", "--method", "coreset+vae(α=1e17)"]) == 0
    assert "removed 1 run(s)" in capsys.readouterr().out
    assert list_runs(tmp_path)["method"].tolist() == ["coreset"]


def test_a_results_root_that_cannot_be_written_stops_the_run_before_any_work(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("a file where the results folder should be")
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(not_a_folder))
    monkeypatch.setattr("alvae_utils.experiment.planning.load_experiment_data",
                        lambda *args, **kwargs: pytest.fail("the data was loaded before the results root was checked"))
    assert main(["run", "--dataset", "mnist-sample", "--profile", "ci", "--heuristic", "coreset", "--vae",
                 "--no-progress"]) == 2
    assert f"runs cannot be stored under {not_a_folder / 'ci'}" in capsys.readouterr().err


def test_heuristic_takes_a_full_method_label_as_methods_does():
    """`--heuristic 'typiclust+vae(α=2)'` said "unknown heuristic" (issue 23): labels are read as --set methods= reads
    them, and names as before, in the order given."""
    from alvae_utils.config import ConfigError
    from alvae_utils.experiment.profiles import get_profile
    from alvae_utils.selection.methods import Method
    from alvae_utils.workflow.cli import _methods, _parser

    def methods(*args):
        parsed = _parser().parse_args(["run", "--dataset", "mnist-sample", "--profile", "ci", *args])
        return [method.label for method in _methods(parsed, get_profile("ci"))]

    assert methods("--heuristic", "medal+vae(α=2)", "random", "coreset+vae(α=balanced)", "typiclust+vae") == [
        "medal+vae(α=2)", "random", "coreset+vae(α=balanced)", "typiclust+vae"]
    assert methods("--heuristic", "coreset", "--compare-vae") == ["coreset", "coreset+vae"]
    assert methods("--heuristic", "coreset+vae(α=1e0)") == [Method.parse("coreset+vae(α=1)").label]
    # The issue's own example is read as a label, and refused for what it is (TypiClust has no α), not as an
    # unknown heuristic.
    with pytest.raises(ConfigError, match=r"typiclust takes no α \(got 2\.0\).*Write typiclust\+vae"):
        methods("--heuristic", "typiclust+vae(α=2)")
    # A label names its own α and family: --alpha and --compare point at the label, not at --features.
    with pytest.raises(ConfigError, match=r"write α into the label, e\.g\. --heuristic 'coreset\+vae\(α=2\)'"):
        methods("--heuristic", "coreset+vae", "--alpha", "2")
    with pytest.raises(ConfigError, match=r"list the methods to compare instead, e\.g\. --heuristic coreset coreset"):
        methods("--heuristic", "coreset+vae", "--compare")
    with pytest.raises(ConfigError, match=r"α=1000001\.0 is above the largest accepted α, 1e\+06"):
        methods("--heuristic", "coreset+vae(α=1000001)")
