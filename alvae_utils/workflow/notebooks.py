"""The notebook table: every numbered notebook, its parameters, how it runs and what it writes.

One :class:`Notebook` entry per notebook declares its name, its parameters (a
dataclass: names, types and defaults, mirrored by the notebook's ``parameters``
cell), whether ``make figures`` runs it once per dataset, whether it trains the
task model, whether it reads what another notebook stored, and the figure files
it writes, as patterns. :mod:`alvae_utils.workflow.papermill` runs the table; adding a
notebook is one entry here plus the ``.ipynb`` file.

papermill only *warns* about a parameter the notebook does not declare, and
then injects it as a stray variable. Each notebook therefore calls
:func:`check_parameters` right after its ``parameters`` cell: any unknown name,
wrong type or invalid value stops the notebook before expensive work starts.
"""

from __future__ import annotations

import ast
import functools
import json
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import pandas as pd

from ..execution.settings import Execution
from ..config import AT_LEAST_ONE, NON_NEGATIVE, ConfigError, Range, check_value, setting
from ..analysis.figures import patterns_of
from ..data.datasets import DATASETS
from ..experiment.overrides import apply, normalise, valid_keys
from ..paths import results_root
from ..experiment.profiles import PROFILES, Profile, get_profile
from ..experiment.catalog import stored_sets
from ..experiment.results import ResultStore
from ..selection.methods import Method


@dataclass(frozen=True)
class _Profile:
    profile: str = "quick"


@dataclass(frozen=True)
class _Overrides:
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Dataset(_Profile):
    dataset: str = ""  # "": the first dataset of the profile (of the notebook's sweep), filled in by check_parameters


# Dataclass fields come in reverse MRO order: these bases keep the parameters in the order the cells declare.
@dataclass(frozen=True)
class NotebookParameters(_Overrides, _Profile):
    """What every notebook takes: the settings profile, and overrides of its settings."""


@dataclass(frozen=True)
class DatasetParameters(_Overrides, _Dataset):
    """A notebook run once per dataset: the profile, the dataset, and overrides."""


@dataclass(frozen=True)
class TestParameters:
    """A notebook that tests differences: its significance level."""

    alpha_level: float = setting(0.05, allowed=Range(0, 1, low_open=True, high_open=True),
                                 help="significance level of the Holm-adjusted p-values")


@dataclass(frozen=True)
class VAETrainingParameters(DatasetParameters):
    """01_vae_training."""

    n_reconstructions: int = setting(10, allowed=AT_LEAST_ONE, help="originals/reconstructions shown")


@dataclass(frozen=True)
class ActiveLearningParameters(DatasetParameters, Execution):
    """02_active_learning; it runs sweeps, so the fields of :class:`~.settings.Execution` are parameters."""


@dataclass(frozen=True)
class SignificanceParameters(TestParameters, NotebookParameters):
    """03_significance_tests. An empty ``profile`` analyses the one set of stored runs there is."""

    profile: str = ""


@dataclass(frozen=True)
class TSNEParameters(NotebookParameters):
    """04_tsne."""

    seed: int = setting(0, allowed=NON_NEGATIVE, help="seed of the initial labels, the sample and t-SNE")


@dataclass(frozen=True)
class BeyondParameters(TestParameters, DatasetParameters, Execution):
    """05_beyond_the_paper; it runs sweeps, so the fields of :class:`~.settings.Execution` are too."""


@dataclass(frozen=True)
class StudyParameters(TestParameters, DatasetParameters, Execution):
    """06_task_agnostic_study; it runs sweeps, so the fields of :class:`~.settings.Execution` are too."""

    power: float = setting(0.8, allowed=Range(0, 1, low_open=True, high_open=True),
                           help="power at which each test's detectable AUBC difference is reported")

    def __post_init__(self) -> None:
        if self.power <= self.alpha_level:  # before any run: the power table would fail after all of them
            raise ConfigError(f"06_task_agnostic_study: parameter 'power' ({self.power:g}) must be above "
                              f"'alpha_level' ({self.alpha_level:g}): with no difference a test rejects with "
                              "probability alpha_level already, so no difference has that power. Use e.g. power=0.8.")


@dataclass(frozen=True)
class Notebook:
    """One numbered notebook in ``notebooks/``.

    Its :attr:`figures` come from the figure records (:mod:`alvae_utils.analysis.figures`).
    """

    name: str
    parameters: type  # a frozen dataclass; its fields are the notebook's parameters
    per_dataset: bool = False  # run once for each dataset of the profile
    trains_task_model: bool = False  # needs the ImageNet weights under a pretrained profile
    runs_sweeps: bool = False  # its parameters include the execution settings (execution.settings)
    reads_results_of: str | None = None  # the notebook whose stored results it analyses
    settings: tuple[str, ...] = ()  # glob patterns of the override keys it uses (alvae_utils.experiment.overrides)
    # The profile of the runs it makes, derived from the named one (e.g. Profile.beyond_sweep); None: that one.
    sweep: Callable[[Profile], Profile] | None = None

    @property
    def figures(self) -> tuple[str, ...]:
        """Glob patterns of the files it writes into the figures folder, with ``{dataset}`` (per-dataset
        notebooks), ``{heuristic}`` (each heuristic of the profile's methods that has figures,
        :func:`alvae_utils.analysis.figures.figure_heuristics`) and ``{family}`` (each feature family of
        those methods) to fill in: the patterns of its figure records."""
        return patterns_of(self.name)


# All experiment keys, also where only the pool matters: the experiment is checked as a whole (η ≤ pool).
_EXPERIMENT = ("pool_size", "eval_size", "pool_seed", "pool_imbalance", "initial_labels", "budget", "max_labels")
_AL_RUNS = (*_EXPERIMENT, "train.*", "vae.*", "methods", "seeds")
NOTEBOOKS: dict[str, Notebook] = {notebook.name: notebook for notebook in (
    Notebook("01_vae_training", VAETrainingParameters, per_dataset=True,
             settings=(*_EXPERIMENT, "vae.*")),
    Notebook("02_active_learning", ActiveLearningParameters, per_dataset=True, trains_task_model=True, runs_sweeps=True,
             settings=_AL_RUNS),
    Notebook("03_significance_tests", SignificanceParameters, reads_results_of="02_active_learning",
             settings=_AL_RUNS),
    Notebook("04_tsne", TSNEParameters, trains_task_model=True,
             settings=("tsne.*", "train.lr", "train.momentum", "train.batch_size", "train.pretrained", "vae.*")),
    Notebook("05_beyond_the_paper", BeyondParameters, per_dataset=True, trains_task_model=True, runs_sweeps=True,
             sweep=Profile.beyond_sweep,
             settings=(*_AL_RUNS, "tsne.*")),
    Notebook("06_task_agnostic_study", StudyParameters, per_dataset=True, trains_task_model=True, runs_sweeps=True,
             sweep=Profile.study_sweep, settings=(*_AL_RUNS, "simclr.*")),
)}
"""The notebooks, in run order."""

# Names an IPython kernel defines on its own.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


class _MessageOnly:
    """An error a notebook shows as its message alone: IPython renders ``_render_traceback_`` instead of the
    traceback, which would only point into the package."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ParameterError(_MessageOnly, ConfigError):
    """A notebook parameter (or override) that cannot run; the message names it, its value and the fix."""


class NothingToAnalyse(_MessageOnly, RuntimeError):
    """A notebook found no stored results to analyse; the message says which notebook to run first, and how."""


def _parameter_cell_names(namespace: Mapping[str, object]) -> set[str]:
    """Names assigned in the cells just before this one: the parameters cell and papermill's injected cell.

    In a live kernel this is how a name added to the parameters cell by hand is
    caught, even though the namespace also holds every later cell's variables.
    """
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        return set()
    cells = [history[-2]] + ([history[-3]] if len(history) >= 3 and history[-2].startswith("# Parameters") else [])
    names = set()
    for source in cells:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def _unknown_parameters(notebook: str, unknown: list[str], declared: Iterable[str]) -> ConfigError:
    hints = []
    for name in unknown:
        keys = [key for key in valid_keys() if key == name or key.endswith(f".{name}")]
        if keys:
            hints.append(f"{name} is a setting: put it in overrides, e.g. overrides = {{{keys[0]!r}: ...}}")
    return ConfigError(
        f"{notebook}: unknown parameter(s) {', '.join(unknown)}; this notebook takes {', '.join(declared)} "
        f"(papermill -p NAME VALUE).{''.join(chr(10) + hint for hint in hints)}")


def check_parameters(notebook: str, namespace: Mapping[str, object]):
    """Validate the notebook's parameters in ``namespace`` (its ``globals()``); return them as a dataclass.

    Call it directly after the ``parameters`` cell (and papermill's injected
    cell), before anything else is defined. Unknown names are those assigned in
    those cells, and, on the first call in a kernel (no ``params`` yet, as under
    papermill and nbval), any other name in the namespace; re-running the cell
    interactively, after later cells defined their own variables, does not flag
    those. Types and ranges come from the parameters dataclass; ``overrides`` are
    checked against the settings the notebook uses (:mod:`alvae_utils.experiment.overrides`).
    An empty ``dataset`` becomes the first dataset of the profile (of the notebook's sweep).
    Raises :class:`ParameterError` (a ConfigError that a notebook shows without traceback)
    naming the parameter, the value and the fix.
    """
    try:
        return _checked(notebook, namespace)
    except ConfigError as error:
        if isinstance(error, ParameterError):
            raise
        raise ParameterError(str(error)) from None


def _checked(notebook: str, namespace: Mapping[str, object]):
    """:func:`check_parameters`, raising the ConfigErrors of the checks it calls as they come."""
    try:
        entry = NOTEBOOKS[notebook]
    except KeyError:
        raise ConfigError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}.") from None
    spec = entry.parameters
    declared = [f.name for f in fields(spec)]
    given = {name: value for name, value in namespace.items()
             if not name.startswith("_") and name not in _KERNEL_NAMES
             and not isinstance(value, (types.ModuleType, types.FunctionType, type))}
    candidates = _parameter_cell_names(namespace) | (set() if "params" in namespace else set(given))
    unknown = sorted(candidates - set(declared))
    if unknown:
        raise _unknown_parameters(notebook, unknown, declared)
    values = {}
    for name in declared:
        if name not in given:
            raise ConfigError(f"{notebook}: parameter {name!r} is missing; run the parameters cell first.")
        values[name] = check_value(spec, name, given[name], label=f"{notebook}: parameter {name!r}")
    values["overrides"] = normalise(values["overrides"], allowed=entry.settings, where=f"{notebook}: ")
    params = spec(**values)
    if params.profile or not entry.reads_results_of:
        if params.profile not in PROFILES:
            raise ConfigError(f"{notebook}: unknown profile {params.profile!r}; choose one of {', '.join(PROFILES)}"
                              + (" (or \"\" for the stored runs)." if entry.reads_results_of else "."))
        profile = profile_of(params)  # raises when the overrides do not form a valid run
        if getattr(params, "dataset", None) == "":
            params = replace(params, dataset=profile.datasets[0])
        # A notebook that runs the profile itself (02) takes any registered dataset, adapted as on the command
        # line (Profile.experiment_for); the others need one of the profile's experiments.
        adapts = entry.runs_sweeps and entry.sweep is None and getattr(params, "dataset", None) in DATASETS
        if getattr(params, "dataset", None) is not None and params.dataset not in profile.datasets and not adapts:
            setting = entry.sweep.__name__.removesuffix("_sweep") if entry.sweep else ""
            where = f"profile {params.profile!r}" if entry.sweep is None else \
                f"the sweep of {notebook} (profile {params.profile!r}'s `{setting}` setting)"
            raise ConfigError(f"{notebook}: {where} has no experiment for dataset {params.dataset!r}; it defines "
                              f"{', '.join(profile.datasets)}.")
        # Kept with the parameters, so that the notebook's cells use what was checked instead of building it again.
        object.__setattr__(params, "_profile", profile)
        if entry.runs_sweeps:
            object.__setattr__(params, "_execution", execution_of(params).resolved(profile))
    return params


def execution_of(params: Execution) -> Execution:
    """The execution settings among a sweep notebook's parameters: as :func:`check_parameters` resolved them
    (the profile's executor filled in), or as given."""
    checked = vars(params).get("_execution")
    return checked if checked is not None else Execution(**{f.name: getattr(params, f.name) for f in fields(Execution)})


def notebook_profile(notebook: str, profile: str, overrides: Mapping[str, object] | None = None) -> Profile:
    """The profile ``notebook`` runs: the named one (or the sweep the notebook derives from it), overrides applied.

    Raises ConfigError for an unknown profile, one that defines no such sweep, or overrides that do not form a run.
    """
    entry = NOTEBOOKS[notebook]
    base = get_profile(profile)
    return apply(entry.sweep(base) if entry.sweep is not None else base, overrides or {})


def profile_of(params) -> Profile:
    """The profile a notebook runs, from its parameters (see :func:`notebook_profile`)."""
    checked = vars(params).get("_profile")
    if checked is not None:  # built and checked by check_parameters
        return checked
    notebook = next((name for name, entry in NOTEBOOKS.items() if entry.parameters is type(params)), None)
    if notebook is None:
        return apply(get_profile(params.profile), params.overrides)
    return notebook_profile(notebook, params.profile, params.overrides)


@functools.cache
def _sweep_runs(notebook: str, profile: str, overrides: str) -> list[tuple[dict, frozenset[str]]]:
    """The experiments (as stored in a state header) that ``notebook`` runs for ``profile`` with ``overrides``
    (JSON), each with the labels of the methods it runs there (notebook 06: its SimCLR-start sweep too);
    none when they do not form a run of it."""
    try:
        made = notebook_profile(notebook, profile, json.loads(overrides))
        sweeps = [made, made.study_start_sweep()] if NOTEBOOKS[notebook].sweep == Profile.study_sweep else [made]
    except (ConfigError, KeyError, ValueError):
        return []
    return [(json.loads(json.dumps(asdict(experiment))), frozenset(m.label for m in sweep.methods))
            for sweep in sweeps for experiment in sweep.experiments]


def sweep_of(header: Mapping[str, object]) -> str:
    """The notebook whose sweep made a stored run (its state ``header``): the first that runs sweeps and whose
    profile, with the run's overrides, defines the run's experiment and method; "" when none does."""
    overrides = json.dumps(header.get("overrides", {}), sort_keys=True)
    try:
        label = Method.from_key_fields(header["method"]).label
    except (KeyError, TypeError, ValueError):
        return ""
    return next((name for name, entry in NOTEBOOKS.items() if entry.runs_sweeps
                 and any(header.get("experiment") == experiment and label in labels
                         for experiment, labels in _sweep_runs(name, str(header.get("profile")), overrides))), "")


def _set_overrides(notebook: str, entry: Mapping[str, object]) -> dict[str, object]:
    """A stored set's overrides, with the seeds and methods that it holds when they are not its profile's."""
    named = dict(entry["overrides"])
    profile = notebook_profile(notebook, entry["profile"], named)
    if entry["seeds"] != list(profile.seeds):
        named["seeds"] = entry["seeds"]
    if set(entry["methods"]) != {method.label for method in profile.methods}:
        named["methods"] = entry["methods"]
    return named


def stored_runs(notebook: str, params) -> tuple[Profile, pd.DataFrame]:
    """(profile, rows) of the stored runs a notebook such as 03 analyses.

    With ``params.profile`` empty the profile and overrides follow what is stored,
    when exactly one set of runs exists. Raises :class:`NothingToAnalyse` when no
    run is stored, saying which notebook to run first with which parameters, and
    ConfigError listing the sets when several exist.
    """
    source = NOTEBOOKS[notebook].reads_results_of
    if not params.profile and params.overrides:
        raise ParameterError(f"{notebook}: overrides {dict(params.overrides)!r} given without a profile; name the "
                          "profile too, or leave both empty to analyse the one set of runs that is stored.")
    if not params.profile:
        sets = stored_sets(keep=lambda header: sweep_of(header) == source)  # what this notebook would analyse
        if not sets:
            raise NothingToAnalyse(f"{notebook}: nothing to analyse, no runs of {source} are stored under "
                                   f"{results_root()}. Run {source} first, e.g. with profile='ci', "
                                   "dataset='mnist-sample'.")
        if len(sets) > 1:
            listing = "\n".join(f"  profile={entry['profile']!r}, overrides={_set_overrides(source, entry)!r}: "
                                 f"{entry['runs']} runs" for entry in sets)
            raise ParameterError(f"{notebook}: several sets of runs are stored; pick one with the parameters "
                              f"profile (and overrides):\n{listing}")
        params = replace(params, profile=sets[0]["profile"], overrides=sets[0]["overrides"])
    profile = profile_of(params)
    rows = ResultStore(profile.name).load(profile.experiments)
    chosen = dict(profile.overrides)
    if "methods" in chosen:
        rows = rows[rows["method"].isin(chosen["methods"])]
    if "seeds" in chosen:
        rows = rows[rows["seed"].isin(chosen["seeds"])]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        runs = "; ".join(f"profile={profile.name!r}, dataset={dataset!r}, overrides={dict(params.overrides)!r}"
                         for dataset in profile.datasets)
        raise NothingToAnalyse(f"{notebook}: nothing to analyse, no stored runs of profile {profile.label!r}. "
                               f"Run {source} first with {runs}.")
    return profile, rows
