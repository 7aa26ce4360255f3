"""The papermill driver: which notebooks run, the ci sandbox, and failure reporting."""

import pytest

from alvae_utils.config import ConfigError
from alvae_utils.workflow import papermill as workflow
from alvae_utils.workflow.notebooks import NOTEBOOKS
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.data.datasets import load_dataset
from alvae_utils.data.idx import DEBIAN_FASHION_MNIST, FALLBACK_DESCRIPTION


def test_jobs_run_per_dataset_notebooks_for_each_available_dataset_in_order():
    available = {"01_vae_training": ["mnist"], "02_active_learning": ["mnist"],
                 "05_beyond_the_paper": ["mnist", "fashionmnist"], "06_task_agnostic_study": ["mnist"]}
    jobs = workflow._jobs(get_profile("quick"), available, list(NOTEBOOKS))
    assert [name for name, _ in jobs] == ["01_vae_training", "02_active_learning", "03_significance_tests", "04_tsne",
                                          "05_beyond_the_paper", "05_beyond_the_paper", "06_task_agnostic_study"]
    assert jobs[1] == ("02_active_learning", {"profile": "quick", "dataset": "mnist"})
    assert [params["dataset"] for name, params in jobs if name == "05_beyond_the_paper"] == ["mnist", "fashionmnist"]
    both = workflow._jobs(get_profile("ci"), {"02_active_learning": ["mnist-sample", "chestmnist"]},
                          ["02_active_learning"])
    assert [params["dataset"] for _, params in both] == ["mnist-sample", "chestmnist"]


@pytest.fixture
def offline_empty(tmp_path, monkeypatch):
    """No network, an empty data root and an empty torch hub cache."""
    monkeypatch.setenv("ALVAE_OFFLINE", "1")
    monkeypatch.setenv("ALVAE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_quick_offline_plan_runs_mnist_from_the_sample_and_skips_chestmnist(offline_empty):
    plan = workflow._plan(get_profile("quick"), only=None)
    # Notebooks 05 and 06 also run on Fashion-MNIST where Debian's dataset-fashion-mnist is installed.
    fashion = DEBIAN_FASHION_MNIST.is_dir()
    assert [(name, params.get("dataset")) for name, params in plan.jobs] == [
        ("01_vae_training", "mnist"), ("02_active_learning", "mnist"), ("03_significance_tests", None),
        ("04_tsne", None), ("05_beyond_the_paper", "mnist"),
        *([("05_beyond_the_paper", "fashionmnist")] if fashion else []), ("06_task_agnostic_study", "mnist"),
        *([("06_task_agnostic_study", "fashionmnist")] if fashion else [])]
    assert plan.data["mnist"] == FALLBACK_DESCRIPTION
    assert plan.data["04_tsne"] == f"{FALLBACK_DESCRIPTION} (chestmnist unavailable)"
    assert "chestmnist.npz" in plan.skipped["chestmnist"]
    assert ("fashionmnist" in plan.data) == bool(fashion) and ("fashionmnist" in plan.skipped) == (not fashion)
    if not fashion:
        assert "dataset-fashion-mnist" in plan.skipped["fashionmnist"], "says what to install"


def test_paper_profile_offline_says_what_to_place_before_running_anything(offline_empty, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook was started"))
    with pytest.raises(workflow.NothingToRun) as error:
        workflow.make_figures("paper")
    message = str(error.value)
    for needed in ("resnet18-f37072fd.pth", "train-images-idx3-ubyte.gz", "chestmnist.npz", "04_tsne"):
        assert needed in message


def test_ci_sandbox_keeps_out_of_the_users_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(workflow, "build_dir", lambda: tmp_path / "build")
    env = workflow.ci_sandbox()
    for name in ("ALVAE_DATA_ROOT", "ALVAE_RESULTS_ROOT", "ALVAE_FIGURES_DIR"):
        assert env[name].startswith(str(tmp_path / "build" / "ci"))
    assert env["ALVAE_OFFLINE"] == "1"
    chest = load_dataset("chestmnist", "train", root=env["ALVAE_DATA_ROOT"], download=False)
    ci = get_profile("ci")
    assert len(chest) >= ci.experiment("chestmnist").pool_size and len(chest) >= ci.tsne.pool_size


def test_unknown_notebook_is_rejected_before_running_anything():
    with pytest.raises(ValueError, match="unknown notebook.*02_active_learnin"):
        workflow.make_figures("ci", only=["02_active_learnin"])


def test_a_failing_notebook_names_the_cell_and_the_executed_copy(tmp_path, monkeypatch):
    import papermill

    def fail(input_path, output_path, **kwargs):
        raise papermill.PapermillExecutionError(3, 7, "x", "AssertionError", "reconstructions do not beat", [])

    monkeypatch.setattr(papermill, "execute_notebook", fail)
    monkeypatch.setattr(workflow, "build_dir", lambda: tmp_path / "build")
    monkeypatch.setattr(workflow, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(workflow, "_plan", lambda profile, only, execution: workflow.Plan(
        [("01_vae_training", {"profile": "quick", "dataset": "mnist"})], {"mnist": "MNIST"}, {}))
    with pytest.raises(workflow.NotebookFailed, match=r"01_vae_training-mnist failed in cell 7: AssertionError"):
        workflow.make_figures("quick")


def test_figure_files_are_read_from_the_notebook_table(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_FIGURES_DIR", str(tmp_path))
    names = ["fig1_mnist_coreset.png", "fig1_mnist_coreset.pdf", "fig1_mnist_coreset_auc.png",
             "fig2_mnist_lossprediction.png", "al_chestmnist_coreset.png", "vae_mnist_loss.png",
             "fig5_tsne_resnet.png", "fig6_tsne_resnet_vae.pdf", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("x")
    quick = get_profile("quick")
    found = {notebook: [path.name for path in workflow.figure_files(quick, notebook, "mnist")]
             for notebook in NOTEBOOKS}
    assert sorted(found["02_active_learning"]) == ["fig1_mnist_coreset.pdf", "fig1_mnist_coreset.png",
                                                   "fig1_mnist_coreset_auc.png", "fig2_mnist_lossprediction.png"]
    assert found["01_vae_training"] == ["vae_mnist_loss.png"]
    assert found["03_significance_tests"] == []
    assert sorted(found["04_tsne"]) == ["fig5_tsne_resnet.png", "fig6_tsne_resnet_vae.pdf"]
    assert found["05_beyond_the_paper"] == []
    for name in ("beyond_mnist_coreset.png", "beyond_mnist_coreset_alpha.pdf", "beyond_mnist_medal.png"):
        (tmp_path / name).write_text("x")
    # The heuristics come from notebook 05's own sweep: core-set alone at quick, all three at ci.
    beyond = [path.name for path in workflow.figure_files(quick.beyond_sweep(), "05_beyond_the_paper", "mnist")]
    assert sorted(beyond) == ["beyond_mnist_coreset.png", "beyond_mnist_coreset_alpha.pdf"]
    ci = workflow.figure_files(get_profile("ci").beyond_sweep(), "05_beyond_the_paper", "mnist")
    assert "beyond_mnist_medal.png" in [path.name for path in ci]


def test_make_figures_lists_what_the_notebooks_wrote_once_and_no_old_file(tmp_path, monkeypatch, capsys):
    import papermill

    from alvae_utils.analysis import figures

    monkeypatch.setenv("ALVAE_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setattr(workflow, "build_dir", lambda: tmp_path / "build")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "beyond_mnist_coreset.png").write_text("an old file, not written by this run")
    history = [{"epoch": e, "loss": 2.0 / e, "reconstruction": 1.5 / e, "kl": 0.5} for e in (1, 2)]

    def fake_execute(input_path, output_path, parameters, **kwargs):  # a kernel drawing the same figure twice
        for _ in range(2):
            figures.draw("vae_loss", history, stem={"dataset": "mnist-sample"})

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    written = workflow.make_figures("ci", only=["03_significance_tests"])
    assert [path.name for path in written] == ["vae_mnist-sample_loss.png", "vae_mnist-sample_loss.pdf"]
    out = capsys.readouterr().out
    assert "2 figure files written" in out and "beyond_mnist_coreset" not in out


def test_make_figures_refuses_a_figures_folder_it_cannot_write_before_any_notebook(tmp_path, monkeypatch):
    # Found for issue 23 (kind 1): the first figure of a notebook used to fail after its runs had trained.
    import papermill

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ALVAE_FIGURES_DIR", str(blocker / "figures"))
    monkeypatch.setattr(papermill, "execute_notebook", lambda *args, **kwargs: pytest.fail("a notebook ran"))
    with pytest.raises(ConfigError, match=r"cannot write to .*a-file/figures .*ALVAE_FIGURES_DIR"):
        workflow.make_figures("quick", only=["03_significance_tests"])
