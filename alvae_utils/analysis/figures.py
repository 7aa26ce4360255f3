"""Which figures exist: one record per figure (:class:`FigureRecord`), and the methods each one draws.

A figure is declared once, by :func:`register_figure`: its file-stem pattern, the notebook whose
cell draws it, its title, and the plot function of :mod:`alvae_utils.analysis.plots` that draws
it from computed tables. A notebook cell draws it by name (:func:`draw`); the notebook table
(:mod:`alvae_utils.workflow.notebooks`) and ``make figures``' list of written files derive from
the records. Figures 1–4 compare one heuristic with its feature-family variants (``coreset`` vs
``coreset+vae``), with random as a reference line, on one dataset.
"""

from __future__ import annotations

import itertools
import os
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from ..data.datasets import dataset_title
from ..registry import Registry
from ..selection.heuristics import HEURISTICS, get_heuristic
from ..selection.methods import parsed_methods, random_pairs
from . import plots, study_plots

PER_RUN_FIELDS = frozenset({"dataset", "heuristic", "family"})
"""Stem fields that the notebook run fills in (its dataset, and each heuristic and family of its figures)."""
FORMATS = ("png", "pdf")
WRITTEN_VARIABLE = "ALVAE_FIGURES_WRITTEN"
"""A file to which :func:`draw` appends each path it writes (``make figures`` lists them at the end)."""


@dataclass(frozen=True)
class FigureRecord:
    """One figure, declared once.

    ``stem`` is its file stem, a :meth:`str.format` pattern: ``{dataset}``, ``{heuristic}`` and
    ``{family}`` are filled in per notebook run; any other field takes one of its ``choices``
    (e.g. the paper's figure number). ``draw`` is the plot function: computed tables in, a
    matplotlib Figure out.
    """

    name: str
    notebook: str  # the notebook whose cell draws it
    stem: str
    title: str  # what it shows, e.g. "Figs. 1–4: learning curves of a heuristic and its variants"
    draw: Callable[..., Figure]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def file_stem(self, **fields: str) -> str:
        """The stem of one drawn figure; ValueError naming a missing field or a value outside its choices."""
        needed = {name for _, name, _, _ in string.Formatter().parse(self.stem) if name}
        if needed - set(fields):
            raise ValueError(f"figure {self.name!r} needs {', '.join(sorted(needed - set(fields)))} to name its file.")
        for name, allowed in self.choices.items():
            if fields.get(name) not in allowed:
                raise ValueError(f"figure {self.name!r}: {name}={fields.get(name)!r} is not one of {allowed}.")
        return self.stem.format(**fields)

    def patterns(self) -> tuple[str, ...]:
        """The files it may write, with ``{dataset}``, ``{heuristic}`` and ``{family}`` left to fill in."""
        names = list(self.choices)
        keep = {name: "{" + name + "}" for name in PER_RUN_FIELDS}
        return tuple(f"{self.stem.format(**keep, **dict(zip(names, values, strict=True)))}.{extension}"
                     for values in itertools.product(*self.choices.values()) for extension in FORMATS)


FIGURES: Registry[FigureRecord] = Registry("figure")


def register_figure(record: FigureRecord, replace: bool = False) -> FigureRecord:
    """Register ``record`` under its name; ConfigError for a bad or taken name (unless ``replace``)."""
    return FIGURES.add(record.name, record, replace=replace)


def draw(name: str, *tables: object, stem: Mapping[str, str], directory: Path | None = None,
         **options: object) -> tuple[Figure, list[Path]]:
    """Draw the registered figure ``name`` from computed ``tables`` (and plot ``options``) and save it.

    ``stem`` fills the record's stem pattern. Returns the figure and the files written (PNG and PDF,
    :func:`alvae_utils.analysis.plots.save_figure`). Raises ConfigError for an unknown figure.
    """
    record = FIGURES[name]
    file_stem = record.file_stem(**stem)
    fig = record.draw(*tables, **options)
    written = plots.save_figure(fig, file_stem, directory)
    manifest = os.environ.get(WRITTEN_VARIABLE)
    if manifest:
        with open(manifest, "a", encoding="utf-8") as handle:
            handle.writelines(f"{path}\n" for path in written)
    return fig, written


def patterns_of(notebook: str) -> tuple[str, ...]:
    """The figure files ``notebook`` may write (patterns of its records, in registration order)."""
    return tuple(pattern for record in FIGURES.values() if record.notebook == notebook
                 for pattern in record.patterns())

REFERENCE = "random"
"""The method drawn as a reference line in every heuristic's figure."""

# The paper's figure numbers; other datasets/heuristics get descriptive names.
PAPER_FIGURES: dict[tuple[str, str], str] = {
    ("mnist", "coreset"): "fig1",
    ("mnist", "lossprediction"): "fig2",
    ("chestmnist", "coreset"): "fig3",
    ("chestmnist", "lossprediction"): "fig4",
}
AL_PREFIXES = (*PAPER_FIGURES.values(), "al")

for record in (
    FigureRecord("vae_loss", "01_vae_training", "vae_{dataset}_loss", "The VAE's training loss (ELBO terms) per epoch",
                 plots.plot_vae_history),
    FigureRecord("vae_reconstructions", "01_vae_training", "vae_{dataset}_reconstructions",
                 "Evaluation images and their reconstructions from μ", plots.plot_reconstructions),
    FigureRecord("vae_latent", "01_vae_training", "vae_{dataset}_latent",
                 "t-SNE of the VAE means μ of the evaluation images, coloured by class", plots.plot_latent_space),
    FigureRecord("learning_curves", "02_active_learning", "{figure}_{dataset}_{heuristic}{metric}",
                 "Figs. 1–4: learning curves of a heuristic and its feature-family variants, with random",
                 plots.plot_learning_curves, choices={"figure": AL_PREFIXES, "metric": ("", "_auc")}),
    FigureRecord("versus_random", "02_active_learning", "al_{dataset}_vs_random{metric}",
                 "Learning curves of every heuristic of the sweep (plain, or TypiClust's family variant) with random",
                 plots.plot_learning_curves, choices={"metric": ("", "_auc")}),
    FigureRecord("tsne_task", "04_tsne", "fig5_tsne_resnet",
                 "Fig. 5: t-SNE of the task model's features, with core-set's picks", plots.plot_tsne),
    FigureRecord("tsne_family", "04_tsne", "fig6_tsne_resnet_{family}",
                 "Fig. 6: t-SNE of the task model's features with a family's appended, with core-set's picks",
                 plots.plot_tsne),
    FigureRecord("beyond_alpha", "05_beyond_the_paper", "beyond_{dataset}_{heuristic}_alpha",
                 "A heuristic's AUBC against α, with the plain heuristic and random as references",
                 plots.plot_aubc_vs_alpha),
    FigureRecord("beyond_curves", "05_beyond_the_paper", "beyond_{dataset}_{heuristic}",
                 "Learning curves of a heuristic with the VAEs beyond the paper's", plots.plot_learning_curves),
    FigureRecord("study_ranking", "06_task_agnostic_study", "study_{dataset}_ranking",
                 "Every method of the study: AUBC with its 95% interval, ranked", study_plots.plot_aubc_ranking),
    FigureRecord("study_gains", "06_task_agnostic_study", "study_{dataset}_gains",
                 "Each task-aware heuristic's AUBC gain from each family, with what its test could detect",
                 study_plots.plot_family_gains),
    FigureRecord("study_curves", "06_task_agnostic_study", "study_{dataset}_curves",
                 "Learning curves of the best method of each kind, with random", plots.plot_learning_curves),
):
    register_figure(record)


def heuristic_methods(labels: Iterable[str], heuristic: str) -> list[str]:
    """Labels drawn in ``heuristic``'s figure: the heuristic and its variants (in the given order), then random."""
    labels = list(labels)
    members = [label for label, method in parsed_methods(labels).items() if method.heuristic == heuristic]
    return members + ([REFERENCE] if members and REFERENCE in labels and heuristic != REFERENCE else [])


def versus_random_methods(labels: Iterable[str]) -> list[str]:
    """Labels drawn in the ``versus_random`` figure: each heuristic compared with random
    (:func:`~alvae_utils.selection.methods.random_pairs`), then random; none when there is nothing to compare."""
    treatments = [treatment for _, treatment in random_pairs(labels)]
    return [*treatments, REFERENCE] if treatments else []


def figure_heuristics(labels: Iterable[str]) -> list[str]:
    """Heuristics (in registry order) that accept feature families and have a method among ``labels``."""
    present = {method.heuristic for method in parsed_methods(labels).values()}
    return [name for name, spec in HEURISTICS.items() if spec.extra_features is not None and name in present]


def al_figure_fields(dataset: str, heuristic: str, metric: str = "accuracy") -> dict[str, str]:
    """The stem fields of a ``learning_curves`` figure: ``fig1_mnist_coreset``; ``..._auc`` for the AUC
    companion; other pairs named ``al_<dataset>_<heuristic>``."""
    return {"figure": PAPER_FIGURES.get((dataset, heuristic), "al"), "dataset": dataset, "heuristic": heuristic,
            "metric": "" if metric == "accuracy" else f"_{metric}"}


def al_figure_title(dataset: str, heuristic: str, labels: Iterable[str] = ()) -> str:
    """``"MNIST: Core-set vs +VAE"``: the heuristic and the families of its variants among ``labels``."""
    families = dict.fromkeys(method.family.title for method in parsed_methods(labels).values()
                             if method.heuristic == heuristic and method.family is not None)
    versus = f" vs {', '.join('+' + title for title in families)}" if families else ""
    return f"{dataset_title(dataset)}: {get_heuristic(heuristic).title}{versus}"
