"""One place per concept: heuristics and feature families are registered once and then work everywhere.

The toy heuristic and the two toy families below are added through the public
registration functions only, and run end to end (run_sweep, the CLI, figures,
statistics) without any other module knowing them. The ``ci`` profile's run keys
are pinned, so a restructure can never silently orphan stored results.
"""

import json
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from alvae_utils.execution import SweepFailed, run_sweep
from alvae_utils.experiment import loop, planning
from alvae_utils.analysis import figures
from alvae_utils.analysis.styles import method_style
from alvae_utils.workflow.cli import main
from alvae_utils.config import ConfigError, ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.device import images_to_float
from alvae_utils.selection.features import FAMILIES, FeatureFamily, get_family, register_family
from alvae_utils.data.fixtures import write_medmnist_npz
from alvae_utils.selection.heuristics import APPEND, HEURISTICS, Heuristic, register_heuristic
from alvae_utils.selection.methods import variant_pairs, Method
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.results import ResultStore, data_fingerprint, load_results, run_key
from alvae_utils.selection.ranking import top_k_select
from alvae_utils.training.vae import checkpoint_path

CPU_1 = {"device": "cpu", "torch_threads": 1}  # the pinned VAE keys: fitted on the CPU at 1 thread

CONFIG = ExperimentConfig(
    dataset="mnist-sample", pool_size=80, eval_size=40, initial_labels=10, budget=10, max_labels=30,
    train=TrainConfig(initial_epochs=1, epoch_increment=1, batch_size=10), vae=VAEConfig(latent_dim=4, epochs=1),
)
TIMINGS = ["train_seconds", "select_seconds", "eval_seconds", "features_seconds"]


@pytest.fixture
def toys():
    """Register a heuristic and two families for one test, recording every call; unregister afterwards."""
    calls = {"select": [], "randproj_fits": 0, "classmeans_fits": []}

    def max_norm(inputs, mask, budget):
        picks = top_k_select(inputs.features.norm(dim=1), mask, budget)
        calls["select"].append((inputs.features.clone(), mask.clone(), picks.clone()))
        return picks

    def fit_projection(context):
        calls["randproj_fits"] += 1
        generator = torch.Generator().manual_seed(context.pool_seed)
        return torch.randn(28 * 28, 6, generator=generator) / 28

    def fit_class_means(context):
        labels = context.pool.labels[context.labeled]
        calls["classmeans_fits"].append((len(context.labeled), context.seed))
        pixels = images_to_float(context.pool.images[context.labeled]).flatten(1)
        return torch.stack([pixels[labels == c].mean(0) if (labels == c).any() else torch.zeros(28 * 28)
                            for c in range(len(context.pool.class_names))])

    register_heuristic(Heuristic(name="maxnorm", select=max_norm, needs=("features",), extra_features=APPEND,
                                 title="Max norm", colour="tab:olive"))
    register_family(FeatureFamily(
        name="randproj", title="random projection", fit=fit_projection,
        encode=lambda projection, images: images_to_float(images).flatten(1) @ projection))
    register_family(FeatureFamily(
        name="classmeans", title="class-mean distance", fit=fit_class_means, refit_each_step=True, uses_labels=True,
        encode=lambda means, images: torch.cdist(images_to_float(images).flatten(1), means)))
    yield calls
    HEURISTICS.pop("maxnorm")
    FAMILIES.pop("randproj")
    FAMILIES.pop("classmeans")


def _ci_data(root):
    """The ci profile's pools and evaluation sets, from a freshly generated fixture file under ``root``."""
    from alvae_utils.data.datasets import load_experiment_data

    write_medmnist_npz(root / "chestmnist.npz", n_train=600, n_val=200, n_test=200, flag="chestmnist", seed=0)
    return {e.dataset: load_experiment_data(e.dataset, e.pool_size, e.eval_size, seed=e.pool_seed, root=root,
                                            download=False) for e in get_profile("ci").experiments}


def test_ci_profile_keys_are_pinned(tmp_path):
    """Run, configuration and VAE keys hash settings, data source and data content: the same on every CPU.

    After a deliberate SCHEMA_VERSION bump, ``ALVAE_UPDATE_KEYS=1 pytest tests/test_registry.py -k pinned``
    rewrites the pinned file; review its diff like code.
    """
    pinned = Path(__file__).parent / "ci_profile_keys.json"
    profile, data = get_profile("ci"), _ci_data(tmp_path)
    keys = {"run_keys": {e.dataset: {m.label: [run_key(e, m, seed, data[e.dataset][0].description,
                                                       data_fingerprint(*data[e.dataset])) for seed in profile.seeds]
                                     for m in profile.methods} for e in profile.experiments},
            "vae_checkpoints": {e.dataset: checkpoint_path(data[e.dataset][0], e.vae, e.pool_seed, CPU_1,
                                                           root=tmp_path).name for e in profile.experiments},
            "config_keys": {e.dataset: e.key() for e in profile.experiments}}
    if os.environ.get("ALVAE_UPDATE_KEYS") == "1":
        pinned.write_text(json.dumps(keys, indent=1, ensure_ascii=False) + "\n")
    expected = json.loads(pinned.read_text())
    for part in ("run_keys", "config_keys", "vae_checkpoints"):
        assert keys[part] == expected[part], part


def test_registration_rejects_malformed_entries():
    with pytest.raises(ConfigError, match="already registered"):
        register_heuristic(HEURISTICS["coreset"])
    with pytest.raises(ConfigError, match="lower case"):
        register_heuristic(replace(HEURISTICS["coreset"], name="Core+set"))
    with pytest.raises(ConfigError, match="only the loss-prediction module"):
        register_heuristic(replace(HEURISTICS["lossprediction"], name="lp2", trains_loss_module=False,
                                   extra_features=None))
    with pytest.raises(ConfigError, match="refit_each_step=True"):
        register_family(replace(get_family("vae"), name="vae2", uses_labels=True))
    with pytest.raises(ConfigError, match="unknown feature family 'nope'; choose one of vae"):
        Method("coreset", "nope").validate()


def test_a_registered_heuristic_and_families_run_end_to_end_through_run_sweep(tmp_path, monkeypatch, toys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    methods = [Method.parse(label) for label in
               ("maxnorm", "maxnorm+vae", "maxnorm+randproj", "coreset+classmeans", "lossprediction+classmeans")]
    rows = run_sweep("ci", CONFIG.dataset, methods=methods, seeds=[0], experiment=CONFIG, progress=False)

    assert set(rows["method"]) == {m.label for m in methods}
    assert (rows.groupby("method")["n_labels"].apply(list) == pd.Series([[10, 20, 30]] * 5,
                                                                        index=sorted(m.label for m in methods))).all()
    # The toy heuristic read the features the loop gave it: T_f (512), + VAE μ (4), + projections (6) ...
    widths = sorted({features.shape[1] for features, _, _ in toys["select"]})
    assert widths == [512, 512 + 4, 512 + 6]
    # ... and picked, each time, the unlabeled points of largest norm (brute force).
    for features, mask, picks in toys["select"]:
        norms = features.norm(dim=1).tolist()
        unlabeled = [i for i in range(len(norms)) if not mask[i]]
        best = sorted(unlabeled, key=lambda i: (-norms[i], i))[:10]
        assert picks.tolist() == best
    # Fitted once per pool: once for the whole sweep. Refitted, on L and seeded per step: before every selection of
    # core-set (not at its last step, which selects nothing), and at every step of loss prediction, whose module
    # trains on the features.
    assert toys["randproj_fits"] == 1
    sizes = [size for size, _ in toys["classmeans_fits"]]
    assert sizes == [10, 20, 10, 20, 30]
    assert len({seed for _, seed in toys["classmeans_fits"]}) == 3, "one seed per step, shared by both runs"


def test_a_refitted_family_resumes_to_the_same_numbers(tmp_path, spy, toys):
    method = Method.parse("coreset+classmeans")
    pool_eval = planning.load_experiment_data(CONFIG.dataset, CONFIG.pool_size, CONFIG.eval_size, seed=0)

    def run(root):
        return loop.run_algorithm1(CONFIG, method, 0, *pool_eval, ResultStore("t", root=root),
                                   device=torch.device("cpu"), progress=False)

    reference = run(tmp_path / "reference")
    train = spy(loop, "train_task_model", interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "crashed")
    train["restore"]()
    resumed = run(tmp_path / "crashed")
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMINGS), reference.drop(columns=TIMINGS), check_dtype=False)


def test_a_registered_heuristic_and_family_run_through_the_cli(tmp_path, monkeypatch, capsys, toys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    small = ["--pool-size", "60", "--eval-size", "40", "--initial", "10", "--budget", "10", "--max-labels", "20",
             "--no-progress", "--profile", "ci", "--dataset", "mnist-sample", "--seed", "0"]
    assert main(["run", "--heuristic", "maxnorm", "--features", "randproj", "--compare", *small]) == 0
    assert main(["run", "--heuristic", "maxnorm", "--vae", *small]) == 0
    rows = load_results(tmp_path)
    assert set(rows["method"]) == {"maxnorm", "maxnorm+randproj", "maxnorm+vae"}
    assert main(["run", "--heuristic", "random", "--features", "randproj", *small]) == 2
    assert "has no random projection variant" in capsys.readouterr().err


def test_figures_statistics_and_styles_read_the_registries(toys):
    labels = ["random", "maxnorm", "maxnorm+randproj", "maxnorm+vae(α=0.5)", "coreset", "coreset+classmeans"]
    assert figures.figure_heuristics(labels) == ["coreset", "maxnorm"]
    assert figures.heuristic_methods(labels, "maxnorm") == ["maxnorm", "maxnorm+randproj", "maxnorm+vae(α=0.5)",
                                                            "random"]
    assert figures.al_figure_title("mnist", "maxnorm", labels) == "MNIST: Max norm vs +random projection, +VAE"
    assert variant_pairs(labels) == [("coreset", "coreset+classmeans"), ("maxnorm", "maxnorm+randproj"),
                                           ("maxnorm", "maxnorm+vae(α=0.5)")]
    assert method_style("maxnorm")["color"] == "tab:olive"
    assert Method.parse("maxnorm+vae(α=0.5)") == Method("maxnorm", "vae", 0.5)


@pytest.mark.parametrize("returned, problem", [
    (lambda mask, budget: torch.full((budget,), int((~mask).nonzero()[0])), "the same index more than once"),
    (lambda mask, budget: mask.nonzero().squeeze(1)[:budget], "points that are already labeled"),
    (lambda mask, budget: -torch.arange(1, budget + 1), "outside the pool"),
    (lambda mask, budget: (~mask).nonzero().squeeze(1)[: budget - 1], "9 indices, not β = 10"),
    (lambda mask, budget: (~mask).nonzero().squeeze(1)[:budget].float(), "not a 1-D int64 tensor"),
    (lambda mask, budget: (~mask).nonzero().squeeze(1)[:budget].tolist(), "list, not a 1-D int64 tensor"),
])
def test_a_heuristic_returning_bad_indices_is_stopped_before_anything_is_stored(tmp_path, monkeypatch, returned,
                                                                                 problem):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    register_heuristic(Heuristic(name="broken", needs=("generator",), title="Broken", colour="k",
                                 select=lambda inputs, mask, budget: returned(mask, budget)))
    try:
        # The run fails, and the sweep reports it (with its error) once the other runs have finished.
        with pytest.raises(SweepFailed, match=f"broken seed 0: ValueError: heuristic 'broken' returned "
                                                       f".*{problem}"):
            run_sweep("ci", CONFIG.dataset, methods=[Method("broken")], seeds=[0], experiment=CONFIG,
                                progress=False)
    finally:
        HEURISTICS.pop("broken")
    # A step commits only after its selection, so no labeled set made of bad indices is ever stored.
    assert not list(tmp_path.rglob("*.state.json"))


@pytest.mark.parametrize("encode, message", [
    (lambda fitted, images: torch.full((len(images), 3), float("nan")), "gave NaN or infinite features"),
    (lambda fitted, images: torch.zeros(len(images) - 5, 3), r"gave \(75, 3\) for 80 pool images"),
    (lambda fitted, images: torch.zeros(len(images)), r"gave \(80,\) for 80 pool images"),
    (lambda fitted, images: torch.zeros(len(images), 0), r"gave \(80, 0\)"),
])
def test_a_family_giving_bad_features_is_named_and_fails_only_its_runs(tmp_path, monkeypatch, encode, message):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    register_family(FeatureFamily(name="badfeat", title="Bad", fit=lambda context: None, encode=encode))
    trained = []
    real = loop.train_task_model
    monkeypatch.setattr(loop, "train_task_model", lambda *a, **k: trained.append(1) or real(*a, **k))
    try:
        with pytest.raises(SweepFailed, match=r"(?s)1 run\(s\) failed \(1 finished.*lossprediction\+badfeat "
                                                       f"seed 0: fitting the Bad it uses failed \\(ValueError: "
                                                       f"feature family 'badfeat' {message}"):
            run_sweep("ci", CONFIG.dataset, methods=[Method("lossprediction", "badfeat"), Method("random")],
                                seeds=[0], experiment=CONFIG, progress=False)
    finally:
        FAMILIES.pop("badfeat")
    assert len(trained) == len(CONFIG.label_counts()), "only the random run trained, one model per step"


@pytest.mark.parametrize("name", ["a,b", "x/y", "../x", "a*", "a[0]", "a.b", "tab\tname", "9lives", ""])
def test_names_that_would_break_labels_files_or_globs_are_refused(name):
    with pytest.raises(ConfigError, match="must be lower case letters, digits"):
        register_heuristic(replace(HEURISTICS["coreset"], name=name))


def test_alpha_labels_parse_back_to_the_same_method():
    for alpha in (0.5, 0.1234567, 2, 1e-5, -0.0):
        method = Method("coreset", "vae", alpha)
        assert Method.parse(method.label) == method and method.key_fields() == Method.parse(method.label).key_fields()
    assert Method("coreset", "vae", -0.0).label == "coreset+vae(α=0)"
