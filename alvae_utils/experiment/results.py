"""Resumable, atomic storage of Algorithm 1 runs: their rows, state and carried model.

Layout under ``results_root()``::

    <profile>/<dataset>/<run_key>.csv         tidy rows, one per completed AL step (:data:`COLUMNS`)
    <profile>/<dataset>/<run_key>.state.json  config, data source, method, seed, current labeled set
    <profile>/<dataset>/<run_key>.model.pt    the model carried across steps (fine-tuning only)
    <profile>/<dataset>/<run_key>.lock        held while a process writes the run (alvae_utils.experiment.locks)
    vae/<dataset>-<vae_key>.pt                 VAE checkpoints, shared by all profiles (alvae_utils.training.vae)

A run is identified by a hash of its full configuration, its data source, method
and seed, so a changed setting can never be mixed into old results. The data
source matters on its own: offline, ``mnist`` falls back to the embedded 5k
sample, and those runs must not be resumed once the real MNIST files are in
place. Both files of a run are rewritten atomically (temp file +
``os.replace``) after every step: a crash loses at most the step in progress,
and a rerun resumes from the last completed step.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import subprocess
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .. import __version__
from ..config import SCHEMA_VERSION, ConfigError, ExperimentConfig, config_hash
from ..data.datasets import Dataset
from ..device import numerics
from ..selection.methods import BALANCED, Method
from ..paths import REPO_ROOT, atomic_path, results_root, unwritable
from ..progress import AlvaeWarning
from .locks import RunLock

COLUMNS: tuple[str, ...] = (
    "profile", "dataset", "data_description", "method", "heuristic", "use_vae", "alpha", "alpha_used", "seed",
    "step", "n_labels", "accuracy", "balanced_accuracy", "medmnist_acc", "auc", "train_accuracy", "epochs",
    "train_seconds", "select_seconds", "eval_seconds", "features_seconds", "config_key", "run_key",
)


def step_row(*, profile: str, config: ExperimentConfig, method: Method, seed: int, step: int, n_labels: int,
             data_description: str, metrics: dict[str, float], train_accuracy: float, epochs: int,
             train_seconds: float, select_seconds: float, eval_seconds: float, features_seconds: float,
             alpha_used: float, run_key: str) -> dict[str, object]:
    """One stored row (:data:`COLUMNS`, in order) for a completed Algorithm 1 step.

    ``metrics`` holds ``accuracy``, ``balanced_accuracy``, ``medmnist_acc`` and ``auc`` (see
    :func:`alvae_utils.training.metrics.evaluate`); times are wall-clock seconds;
    ``select_seconds`` is the selection that produced this step's labels;
    ``features_seconds`` fitted and encoded the feature family at this step (NaN
    without a family, for one fitted once per pool before the runs that use it, whose
    one-off fit belongs to no step, and at the last step of a heuristic that only
    selects with the features, since nothing is selected there). ``alpha`` is the method's α as given (a number,
    or ``"balanced"``; NaN without a family); ``alpha_used`` is the number that scales
    the family's block (Eq. 6): a numeric α itself, or the balanced α estimated by
    the selection that followed this step (NaN at the last step, which none follows);
    NaN without a family.
    """
    row = {
        "profile": profile, "dataset": config.dataset, "data_description": data_description,
        "method": method.label, "heuristic": method.heuristic, "use_vae": method.features == "vae",
        "alpha": method.alpha if method.features else float("nan"), "alpha_used": alpha_used, "seed": seed,
        "step": step, "n_labels": n_labels, "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"], "medmnist_acc": metrics["medmnist_acc"],
        "auc": metrics["auc"], "train_accuracy": train_accuracy, "epochs": epochs,
        "train_seconds": train_seconds, "select_seconds": select_seconds, "eval_seconds": eval_seconds,
        "features_seconds": features_seconds, "config_key": config.key(reads_simclr(config, method)),
        "run_key": run_key,
    }
    return {column: row[column] for column in COLUMNS}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, so readers see the old or the new file, never half of one.

    UTF-8 whatever the locale: labels such as ``coreset+vae(α=0.5)`` must survive a C or cp1252 locale.
    """
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def run_key(config: ExperimentConfig, method: Method, seed: int, data_description: str,
            data_fingerprint: str = "") -> str:
    """Hash of everything that determines a run's numbers.

    ``data_description`` names the data's source; ``data_fingerprint`` hashes its
    content (:func:`data_fingerprint`), so a replaced file of the same name and shape
    gives a new key. SimCLR's settings enter only the keys of runs that read them (:func:`reads_simclr`).
    """
    experiment = config.key_fields(simclr=reads_simclr(config, method))
    return config_hash({"schema": SCHEMA_VERSION, "experiment": experiment, "data": data_description,
                        "data_fingerprint": data_fingerprint, "method": method.key_fields(), "seed": seed})


def reads_simclr(config: ExperimentConfig, method: Method) -> bool:
    """Whether a run's numbers depend on the SimCLR settings: it appends the ``simclr`` family's features, or
    its task model starts from the SimCLR encoder (``train.init=simclr``)."""
    return method.features == "simclr" or config.train.init == "simclr"


def data_fingerprint(pool: Dataset, evaluation: Dataset) -> str:
    """The content of the data a run uses: the pool's and the evaluation set's fingerprints."""
    return f"{pool.fingerprint}-{evaluation.fingerprint}"


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_provenance(device: torch.device) -> dict[str, object]:
    """What produced a run, recorded in its state: alvae version, git commit, torch, device, threads, and what
    its numbers depend on (:func:`~alvae_utils.device.numerics`: on CUDA the GPU model and software)."""
    return {"alvae": __version__, "git_commit": _git_commit(), "torch": torch.__version__, "device": str(device),
            "torch_threads": torch.get_num_threads(), "numerics": numerics(device)}


OPTIONAL_COLUMNS: frozenset[str] = frozenset({"balanced_accuracy", "medmnist_acc", "auc", "alpha", "alpha_used",
                                               "select_seconds", "features_seconds"})
"""Columns that may be NaN by design: ``balanced_accuracy`` (multi-label data, where ``medmnist_acc`` is
set; a multi-class row without it is damaged, unless its run predates the column, :data:`ADDED_COLUMNS`),
``medmnist_acc`` (multi-class data), ``auc`` (no class can be
scored), ``alpha`` (no feature family), ``alpha_used`` (no feature family, or the last step of a
balanced run; a row with α set and no ``alpha_used`` otherwise is damaged), ``select_seconds`` (lost
when a run resumed from a damaged record) and ``features_seconds`` (no family, or one fitted once per
pool). Every other column must hold a value, or the row is damaged."""

ADDED_COLUMNS: dict[str, int] = {"balanced_accuracy": 5}
"""Columns added after runs were stored, with the schema version that added them. A run stored under
an older schema (its state's ``schema``) lacks them: its rows are valid, and read with NaN there; a run
stored since that lacks one is damaged."""


def _alpha_used_missing(row: dict[str, object], last_step: int) -> bool:
    """Whether a row lacks the ``alpha_used`` that its method's α says it must have (see :data:`OPTIONAL_COLUMNS`)."""
    alpha = row["alpha"]
    return (not pd.isna(alpha) and pd.isna(row["alpha_used"])
            and not (alpha == BALANCED and row["step"] == last_step))


def _balanced_accuracy_missing(row: dict[str, object]) -> bool:
    """Whether a multi-class row (no MedMNIST ACC) lacks its balanced accuracy (see :data:`OPTIONAL_COLUMNS`)."""
    return pd.isna(row["medmnist_acc"]) and pd.isna(row["balanced_accuracy"])


def step_count(experiment: dict[str, object]) -> int:
    """Steps of a finished run, from the experiment stored in its state: |{ξ, ξ + β, …, η}|."""
    return len(range(int(experiment["initial_labels"]), int(experiment["max_labels"]) + 1,
                     int(experiment["budget"])))


TEXT_COLUMNS: dict[str, type] = {column: str for column in (
    "profile", "dataset", "data_description", "method", "heuristic", "config_key", "run_key")}
"""Read as text: a hex key such as ``8972232623e7`` would otherwise be read as the number 8.97e18."""

NUMBER_COLUMNS: frozenset[str] = frozenset(COLUMNS) - set(TEXT_COLUMNS) - {"alpha", "use_vae"}
"""Read as numbers (``alpha`` holds a number or ``"balanced"``, ``use_vae`` a bool)."""


def read_rows(path: Path | io.StringIO) -> pd.DataFrame:
    """A CSV of stored rows, read back as written: :data:`TEXT_COLUMNS` as text, every other column's empty
    field (what ``to_csv`` writes for NaN) as NaN.

    pandas reads ``"null"``, ``"nan"``, ``"NA"`` or ``"None"`` as missing by default (pandas #48712,
    #32084), so a heuristic named ``null`` would come back as NaN and its run look damaged.
    """
    rows = pd.read_csv(path, encoding="utf-8", dtype=TEXT_COLUMNS, keep_default_na=False,
                       na_values={column: [""] for column in COLUMNS if column not in TEXT_COLUMNS})
    for column in NUMBER_COLUMNS & set(rows.columns):
        # Text where a number belongs (a hand edit) becomes NaN, so that the row counts as damaged.
        if not pd.api.types.is_numeric_dtype(rows[column]):
            rows[column] = pd.to_numeric(rows[column], errors="coerce")
    return rows


@dataclass(frozen=True)
class DamagedLine:
    """The first line of a rows file that is not a whole row: the row it held (0 = the first), its line number
    (1 = the header) and what is wrong with it."""

    row: int
    line: int
    problem: str


class _Undecodable(Exception):
    """A line that is not UTF-8 (raised from inside :func:`csv.reader`'s iteration)."""


def read_rows_before_damage(path: Path) -> tuple[pd.DataFrame, DamagedLine | None]:
    """The rows of ``path`` (:func:`read_rows`) before its first damaged line, and that line (None when whole).

    A line is damaged when it is not UTF-8, not CSV, or holds another number of fields than the header (a
    half-written line, a hand edit, garbage appended): one bad line, often the last, would otherwise make pandas
    refuse the whole file, or read a short line's missing fields as NaN. Raises what :func:`read_rows` raises
    for a file without a readable header.
    """
    lines = path.read_bytes().splitlines(keepends=True)
    decoded: list[str] = []

    def text_lines():
        for raw in lines:
            try:
                decoded.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise _Undecodable from None
            yield decoded[-1]

    reader = csv.reader(text_lines())
    width, kept, row, damage = None, 0, 0, None
    try:
        for record in reader:
            if not record:  # a blank line, which pandas skips too
                kept = reader.line_num
                continue
            if width is None:
                width = len(record)
            elif len(record) != width:
                damage = DamagedLine(row, kept + 1, f"{len(record)} fields where the header has {width}")
                break
            else:
                row += 1
            kept = reader.line_num
    except _Undecodable:
        damage = DamagedLine(row, len(decoded) + 1, "not UTF-8 text")
    except csv.Error as error:
        damage = DamagedLine(row, kept + 1, f"not CSV: {error}")
    if damage is None or width is None:
        return read_rows(path), None
    return read_rows(io.StringIO("".join(decoded[:kept]))), damage


class StoreDamaged(RuntimeError):
    """A stored run cannot be read; the message names the file and how to recompute the run."""


@dataclass
class RunState:
    """What a rerun needs to continue: completed steps and the labeled set for the next one."""

    completed_steps: int
    labeled: list[int]  # pool indices of L for step ``completed_steps``, in the order they were labeled
    pending_select_seconds: float  # time of the selection that produced ``labeled`` (NaN when lost)
    finished: bool
    model_file: str | None = None  # fine-tuning: the file of the model carried into step ``completed_steps``


class RunRecord:
    """The stored rows, state and (fine-tuning) carried model of one (config, method, seed) run.

    A step commits as one unit: the rows are rewritten, the carried model is written
    to a file of its own step, and only then is the state — the commit point, which
    names that file — replaced; the previous step's model file is removed last. A
    crash anywhere in between leaves the previous commit intact, and whatever was
    written ahead of it is ignored. On loading, the rows are checked against the
    state (steps 0 … k−1 in order, this run's key, a value in every column outside
    :data:`OPTIONAL_COLUMNS`); a damaged run resumes from its last valid step (a
    fine-tuned one from the start, as earlier models are not kept), with a warning.
    """

    def __init__(self, directory: Path, key: str, header: dict[str, object]):
        self.directory = directory
        self.key = key
        self.header = header
        self.csv_path = directory / f"{key}.csv"
        self.state_path = directory / f"{key}.state.json"

    def model_path(self, step: int) -> Path:
        """The file of the model carried out of ``step`` (fine-tuning)."""
        return self.directory / f"{self.key}.model-step{step}.pt"

    def read_state(self) -> dict[str, object] | None:
        """The stored state as written (None for a run never started); StoreDamaged if unreadable."""
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            completed, labeled = int(state["completed_steps"]), list(state["labeled"])
            experiment = state["experiment"]
            steps = step_count(experiment)
            if not 0 <= completed <= steps:
                raise ValueError(f"completed_steps={completed} is not between 0 and {steps}")
            expected = int(experiment["initial_labels"]) + min(completed, steps - 1) * int(experiment["budget"])
            if len(labeled) != expected or len(set(labeled)) != len(labeled):
                raise ValueError(f"the labeled set holds {len(labeled)} entries ({len(set(labeled))} distinct) "
                                 f"where step {completed} needs {expected} distinct ones")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise StoreDamaged(
                f"{self.state_path} cannot be read ({type(error).__name__}: {error}). Remove the run with "
                f"`python -m alvae_utils results clean --run {self.key}` and rerun to recompute it.") from None
        return state

    def _valid_rows(self, completed: int, last_step: int, schema: int) -> pd.DataFrame:
        """The leading rows that agree with a state of ``completed`` steps; warns about the first damaged one.

        ``last_step`` is the run's final step, the one step of a balanced run without an ``alpha_used``;
        ``schema`` the version the run was stored under, which says the columns it may lack (:data:`ADDED_COLUMNS`).
        """
        if not self.csv_path.exists():
            return pd.DataFrame(columns=list(COLUMNS))
        try:
            rows, damage = read_rows_before_damage(self.csv_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            warnings.warn(f"{self.csv_path} cannot be read ({type(error).__name__}); the run starts again.",
                          AlvaeWarning, stacklevel=3)
            return pd.DataFrame(columns=list(COLUMNS))
        if damage is not None and damage.row < completed:
            warnings.warn(f"{self.csv_path}: row {damage.row} is damaged (line {damage.line}: {damage.problem}); "
                          f"the run resumes from step {damage.row}, keeping the rows before it.",
                          AlvaeWarning, stacklevel=3)
            completed = damage.row  # warned here: the checks below see only the rows kept
        elif damage is not None:
            warnings.warn(f"{self.csv_path}: line {damage.line} is damaged ({damage.problem}); it follows the "
                          f"{completed} committed row(s), which are kept.", AlvaeWarning, stacklevel=3)
        older = [column for column, since in ADDED_COLUMNS.items() if column not in rows.columns and schema < since]
        rows = rows.assign(**{column: float("nan") for column in older})  # not recorded then: NaN, not damage
        missing = [column for column in COLUMNS if column not in rows.columns]
        if missing:
            warnings.warn(f"{self.csv_path} lacks column(s) {missing}; the run starts again.",
                          AlvaeWarning, stacklevel=3)
            return pd.DataFrame(columns=list(COLUMNS))
        if len(rows) < completed:
            warnings.warn(f"{self.csv_path} has {len(rows)} rows where the state says {completed} steps; the run "
                          f"resumes from step {len(rows)} at the latest.", AlvaeWarning, stacklevel=3)
        required = [column for column in COLUMNS if column not in OPTIONAL_COLUMNS]
        valid = 0
        for step, row in enumerate(rows.iloc[:completed].itertuples(index=False)):
            values = row._asdict()
            problem = ("step" if values["step"] != step else "run_key" if values["run_key"] != self.key
                       else next((c for c in required if pd.isna(values[c]) or values[c] == ""), None)
                       or ("alpha_used" if _alpha_used_missing(values, last_step) else None)
                       or ("balanced_accuracy" if "balanced_accuracy" not in older
                           and _balanced_accuracy_missing(values) else None))
            if problem:
                warnings.warn(f"{self.csv_path}: row {step} is damaged ({problem}); the run resumes from step "
                              f"{step}.", AlvaeWarning, stacklevel=3)
                break
            valid += 1
        return rows.iloc[:valid].loc[:, list(COLUMNS)]

    def load(self) -> tuple[pd.DataFrame, RunState | None]:
        """Valid rows and the state to resume from; (empty, None) for a run never started.

        Raises StoreDamaged when the state file cannot be read.
        """
        state = self.read_state()
        if state is None:
            return pd.DataFrame(columns=list(COLUMNS)), None
        stored = int(state["completed_steps"])
        rows = self._valid_rows(stored, step_count(state["experiment"]) - 1, int(state.get("schema", 1)))
        completed = len(rows)
        model_file = state.get("model_file")
        fine_tune = bool(state["experiment"]["train"]["fine_tune"])  # the state holds the header it was written with
        done = completed == stored and bool(state["finished"])  # a finished run carries no model further
        if fine_tune and completed and not done and (model_file is None or completed < stored
                                                     or not (self.directory / model_file).exists()):
            warnings.warn(f"{self.state_path}: the model carried into step {completed} is not stored; "
                          "the fine-tuned run starts again.", AlvaeWarning, stacklevel=2)
            rows, completed = rows.iloc[:0], 0
        if completed == stored:
            return rows, RunState(completed, list(state["labeled"]), float(state["pending_select_seconds"]),
                                  bool(state["finished"]), model_file)
        # L only grows by appending picks, so L at an earlier step is a prefix of the stored one.
        experiment = state["experiment"]
        size = int(experiment["initial_labels"]) + completed * int(experiment["budget"])
        return rows, RunState(completed, list(state["labeled"])[:size], float("nan"), False, None)

    def commit_step(self, rows: pd.DataFrame, state: RunState,
                    modules: dict[str, nn.Module | None] | None = None) -> None:
        """Persist one step as a unit: rows, then the carried model (``modules``, fine-tuning), then the state.

        ``modules`` are saved by name (``None`` entries as absent) to the file of step
        ``state.completed_steps − 1``, as CPU tensors whatever device they trained on, so
        that any ``torch.load`` reads the file on any machine; the state names it, and the
        other model files of the run (the previous step's, or leftovers of an interrupted
        write) go only after the state is committed.
        """
        atomic_write_text(self.csv_path, rows.to_csv(index=False))
        if modules is not None:
            model_path = self.model_path(state.completed_steps - 1)
            weights = {name: None if module is None else {key: value.detach().cpu()
                                                          for key, value in module.state_dict().items()}
                       for name, module in modules.items()}
            with atomic_path(model_path) as tmp:
                torch.save(weights, tmp)
            state = replace(state, model_file=model_path.name)
        atomic_write_text(self.state_path, json.dumps({**self.header, **asdict(state)}))
        for model in self.directory.glob(f"{self.key}.model-step*.pt"):  # earlier steps' models, leftovers too
            if model.name != state.model_file:
                model.unlink(missing_ok=True)

    def load_model(self, modules: dict[str, nn.Module | None], state: RunState, device: torch.device) -> None:
        """Load the model that ``state`` names into ``modules`` (same names; ``None`` entries are skipped)."""
        weights = torch.load(self.directory / state.model_file, map_location=device, weights_only=True)
        for name, module in modules.items():
            if module is not None:
                module.load_state_dict(weights[name])

    def lock(self, owner: str | None = None) -> RunLock:
        """The run's lock (:mod:`~alvae_utils.experiment.locks`), for the work of ``owner`` (a retried task's)."""
        return RunLock(self.directory / f"{self.key}.lock", owner)

    def files(self) -> list[Path]:
        """Every file of this run that exists."""
        return sorted(path for path in self.directory.glob(f"{self.key}.*") if path.is_file())


class ResultStore:
    """All runs of one profile: ``results_root()/<profile>/``.

    ``overrides`` (a profile's :attr:`~alvae_utils.experiment.profiles.Profile.stored_overrides`: those
    that change an Algorithm 1 run) are recorded in each run's state; :func:`stored_sets` reads them back.
    """

    def __init__(self, profile: str, root: Path | None = None, overrides: Mapping[str, object] | None = None):
        self.profile = profile
        self.root = (root or results_root()) / profile
        self.overrides = dict(overrides or {})

    def record(self, config: ExperimentConfig, method: Method, seed: int, data_description: str,
               data_fingerprint: str = "", provenance: dict[str, object] | None = None) -> RunRecord:
        """The record of one run (see :func:`run_key`); ``provenance`` (:func:`run_provenance`) goes into its state."""
        key = run_key(config, method, seed, data_description, data_fingerprint)
        header = {"schema": SCHEMA_VERSION, "profile": self.profile, "overrides": self.overrides,
                  "experiment": asdict(config), "data_description": data_description,
                  "data_fingerprint": data_fingerprint, "method": method.key_fields(), "seed": seed,
                  "produced_by": provenance or {}}
        return RunRecord(self.root / config.dataset, key, header)

    def check_writable(self) -> None:
        """ConfigError, before any work, when runs cannot be stored under :attr:`root` (a read-only or missing
        mount): otherwise the first step would train and then fail to commit."""
        error = unwritable(self.root)
        if error is not None:
            raise ConfigError(f"runs cannot be stored under {self.root} ({type(error).__name__}: {error}); make the "
                              "folder writable, or set $ALVAE_RESULTS_ROOT to one that is.")

    def load(self, experiments: Iterable[ExperimentConfig] | None = None) -> pd.DataFrame:
        """Stored rows of this profile as one tidy DataFrame (see ``COLUMNS``).

        With ``experiments``, only rows of exactly those configurations, stored under the
        current :data:`~alvae_utils.config.SCHEMA_VERSION`: results of an older configuration, or
        of an older schema (whose runs a bump recomputes under new keys), left in the folder are
        never mixed in.
        """
        rows = load_results(self.root, schema=None if experiments is None else SCHEMA_VERSION)
        if experiments is not None:
            keys = {key for e in experiments for key in (e.key(), e.key(simclr=True))}  # runs reading SimCLR: 2nd
            rows = rows[rows["config_key"].isin(keys)].reset_index(drop=True)
        return rows


def load_results(directory: Path | None = None, schema: int | None = None) -> pd.DataFrame:
    """The valid rows of every stored run below ``directory`` (default: every profile in ``results_root()``).

    Rows are read through each run's state (:meth:`RunRecord.load`): rows beyond what the
    state committed, damaged rows, files without a state and leftover temporary files are
    never read as results. With ``schema``, only runs stored under that schema version.
    """
    directory = Path(directory or results_root())
    frames = []
    for state_path in sorted(directory.rglob("*.state.json")):
        # load() reads the state (StoreDamaged, naming the file, when it cannot be read).
        record = RunRecord(state_path.parent, state_path.name.removesuffix(".state.json"), {})
        if schema is not None and int(record.read_state().get("schema", 1)) != schema:
            continue
        rows, _ = record.load()
        if not rows.empty:
            frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)
