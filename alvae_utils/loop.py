"""Algorithm 1 of the paper: measuring an active-learning method.

::

    L ← ξ random points (seeded: every method with the same seed gets the same L)
    train T on L, evaluate, record (|L|, accuracy)
    repeat until |L| = η:
        S ← β points of U chosen by H;  L ← L ∪ S
        retrain T from scratch on L (the paper's choice; fine-tuning is an option)
        evaluate and record

A method is a heuristic H (:mod:`alvae_utils.heuristics`) and optionally a feature
family (:mod:`alvae_utils.features`) whose features, scaled by α, are appended to
T's (Eq. 6) or given to the loss-prediction module (LP+VAE); α = balanced is
estimated at every selection (:func:`alvae_utils.selection.balanced_alpha`). Each step is
persisted by :mod:`alvae_utils.results` before the next begins, so an interrupted
run resumes from its last completed step and gives the same numbers as an
uninterrupted one: every random choice is seeded from (seed, step)
(:mod:`alvae_utils.seeds`), and a retrained model depends only on L and those seeds.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from .config import ConfigError, ExperimentConfig, VAEConfig
from .data import Dataset, load_experiment_data
from .device import default_device, pinned_threads
from .features import FAMILIES, FeatureContext, FeatureFamily, pool_features
from .heuristics import APPEND, HEURISTICS, LOSS_MODULE, Heuristic, select
from .methods import Method
from .metrics import evaluate
from .models import LossPredictionModule, TaskModel, check_pretrained_weights_available
from .profiles import Profile, get_profile
from .progress import track
from .results import ResultStore, RunRecord, RunState, StoreDamaged, data_fingerprint, run_provenance, step_row
from .seeds import ALPHA, FEATURES, MODEL, SELECT, TRAIN, derive_seed
from .selection import BALANCED, augment_features, balanced_alpha, initial_labeled_indices
from .training import build_task_model, predict, train_task_model


PREDICTED = frozenset({"features", "logits", "predicted_loss"})
"""Heuristic inputs that need T's predictions of the whole pool at every selection."""


def _step_family_features(method: Method, config: ExperimentConfig, pool: Dataset, labeled: torch.Tensor,
                          seed: int, step: int, fitted_once: torch.Tensor | None, device: torch.device,
                          progress: bool) -> torch.Tensor | None:
    """The method's family features of the pool (N, k) at this step, on ``device``; None without a family."""
    family = method.family
    if family is None:
        return None
    if not family.refit_each_step:
        return fitted_once.to(device)
    context = FeatureContext(pool, config.vae, config.pool_seed, device, progress,
                             labeled=labeled.clone() if family.uses_labels else None,
                             seed=derive_seed(FEATURES, family.name, seed, step))
    return pool_features(family, context).to(device)  # checked: finite (N, k) float32


def _select_step(method: Method, budget: int, labeled: torch.Tensor, pool_images: torch.Tensor, task: str,
                 model: TaskModel, lp_module: LossPredictionModule | None, family_features: torch.Tensor | None,
                 extra_features: torch.Tensor | None, generator: torch.Generator,
                 alpha_generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Step 6 of Algorithm 1: gather what the heuristic needs, then β new pool indices in pick order.

    Also returns the α that scaled the appended family block (NaN when none was appended);
    a balanced α is estimated here, from T_f of this step's model, with pairs drawn by
    ``alpha_generator``.
    """
    heuristic = method.spec
    mask = torch.zeros(len(pool_images), dtype=torch.bool, device=pool_images.device)
    mask[labeled.to(mask.device)] = True
    inputs: dict[str, object] = {"task": task, "generator": generator}
    alpha = float("nan")
    if PREDICTED & set(heuristic.needs):
        predictions = predict(model, pool_images, lp_module=lp_module, extra_features=extra_features)
        features = predictions.features
        if heuristic.extra_features == APPEND and family_features is not None:
            alpha = (balanced_alpha(features, family_features, alpha_generator) if method.alpha == BALANCED
                     else float(method.alpha))
            features = augment_features(features, family_features, alpha)
        inputs.update(features=features, logits=predictions.logits, predicted_loss=predictions.predicted_loss)
    return select(method.heuristic, mask, budget, **inputs), alpha


def run_algorithm1(config: ExperimentConfig, method: Method, seed: int, pool: Dataset, evaluation: Dataset,
                   store: ResultStore, family_features: torch.Tensor | None = None,
                   device: torch.device | None = None, progress: bool = True,
                   on_step: Callable[[int], None] | None = None,
                   placement: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Run (or resume, or just load) one Algorithm 1 run; returns its rows (:data:`alvae_utils.results.COLUMNS`).

    ``family_features`` (N, k) are the pool's features from the method's family
    when that family is fitted once per pool (the VAE means μ for ``+vae``);
    :class:`FamilyFit` computes them. A family refitted at every step is fitted
    here. ``on_step(completed)`` is called after each step is stored; ``placement``
    (where an executor placed the run) joins the provenance in the run's state.

    On the CPU the numbers depend on torch's thread count (oneDNN reduces in another
    order), so the caller pins it (:func:`alvae_utils.device.pinned_threads`) and the
    state records it. Raises ConfigError for an invalid configuration or method, a
    pool of the wrong size, missing family features, or an unfinished run stored by
    another device type or CPU thread count (resuming would mix two sets of numbers).
    """
    config.validate()
    method.validate()
    if len(pool) != config.pool_size:
        raise ConfigError(f"pool has {len(pool)} images but the configuration says {config.pool_size}.")
    device = device or default_device()
    record = store.record(config, method, seed, pool.description, data_fingerprint(pool, evaluation),
                          provenance={**run_provenance(device), **(placement or {})})
    rows, state = record.load()
    if state is not None and state.finished:  # a finished run is only loaded: it needs no features
        return rows
    family = method.family
    if family is not None and not family.refit_each_step and family_features is None:
        raise ConfigError(f"method {method.label} needs the pool's {family.title} features; pass family_features.")
    if state is not None:
        _check_same_numerics(record, device)

    heuristic = method.spec
    counts = config.label_counts()
    pool_images, pool_labels = pool.images.to(device), pool.labels.to(device)
    eval_images, eval_labels = evaluation.images.to(device), evaluation.labels.to(device)

    if state is None:
        labeled = initial_labeled_indices(config.pool_size, config.initial_labels, seed)
        start, select_seconds = 0, 0.0
    else:
        labeled = torch.tensor(state.labeled, dtype=torch.long)
        start, select_seconds = state.completed_steps, state.pending_select_seconds

    fine_tune = config.train.fine_tune
    model = lp_module = None
    steps = track(range(start, len(counts)), desc=f"{config.dataset} {method.label} seed {seed} steps",
                  total=len(counts), initial=start, enabled=progress)
    for step in steps:
        if len(labeled) != counts[step]:
            raise RuntimeError(f"step {step}: |L| = {len(labeled)}, expected {counts[step]}")
        finished = step == len(counts) - 1
        # Appended features serve only the selection, and the last step selects nothing: no refit there.
        refit = family is not None and family.refit_each_step and (
            not finished or heuristic.extra_features == LOSS_MODULE)
        started = time.perf_counter()
        step_features = (None if family is not None and family.refit_each_step and not refit else
                         _step_family_features(method, config, pool, labeled, seed, step, family_features, device,
                                               progress))
        # A family fitted once per pool was fitted before the run: no step spent time on it.
        features_seconds = time.perf_counter() - started if refit else float("nan")
        # LP+VAE: α·V(u) joins the concatenation c before the module's last layer.
        extra_features = (method.alpha * step_features
                          if step_features is not None and heuristic.extra_features == LOSS_MODULE else None)
        if model is None or not fine_tune:
            # A fine-tuned run starts from the step-0 initialisation; resuming one reloads its carried model.
            model, lp_module = build_task_model(
                pool.num_outputs, config.train, seed=derive_seed(MODEL, seed, 0 if fine_tune else step),
                device=device, with_loss_prediction=heuristic.trains_loss_module,
                extra_dim=0 if extra_features is None else extra_features.shape[1])
            if fine_tune and step > 0:
                record.load_model({"model": model, "lp": lp_module}, state, device)
        on_device = labeled.to(device)
        trained = train_task_model(
            model, pool_images[on_device], pool_labels[on_device], pool.task, config.train.epochs_for_step(step),
            config.train, seed=derive_seed(TRAIN, seed, step), lp_module=lp_module,
            extra_features=None if extra_features is None else extra_features[on_device], progress=progress)
        started = time.perf_counter()
        metrics = evaluate(model, eval_images, eval_labels, evaluation.task)
        eval_seconds = time.perf_counter() - started

        row_select_seconds = select_seconds  # the selection that produced this step's labels
        # A numeric α scales the family's block at every step; a balanced one is estimated by the selection below.
        alpha_used = float("nan") if family is None or method.alpha == BALANCED else float(method.alpha)
        if not finished:
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(derive_seed(SELECT, seed, step))
            picked, alpha_selected = _select_step(
                method, config.budget, labeled, pool_images, pool.task, model, lp_module, step_features,
                extra_features, generator, torch.Generator().manual_seed(derive_seed(ALPHA, seed, step)))
            select_seconds = time.perf_counter() - started
            labeled = torch.cat([labeled, picked.cpu()])
            if method.alpha == BALANCED:
                alpha_used = alpha_selected

        row = step_row(profile=store.profile, config=config, method=method, seed=seed, step=step,
                       n_labels=counts[step], data_description=pool.description,
                       metrics=metrics, train_accuracy=trained.train_accuracy, epochs=trained.epochs,
                       train_seconds=trained.seconds, select_seconds=row_select_seconds, eval_seconds=eval_seconds,
                       features_seconds=features_seconds, alpha_used=alpha_used, run_key=record.key)
        new_row = pd.DataFrame([row])
        rows = pd.concat([rows, new_row], ignore_index=True) if len(rows) else new_row
        record.commit_step(rows, RunState(step + 1, labeled.tolist(), select_seconds, finished),
                           modules={"model": model, "lp": lp_module} if fine_tune else None)
        if on_step is not None:
            on_step(step + 1)
    return rows


def _check_same_numerics(record: RunRecord, device: torch.device) -> None:
    """ConfigError when an unfinished run was stored by another device type, or on the CPU by another thread count."""
    produced = (record.read_state() or {}).get("produced_by") or {}
    if "device" not in produced:  # recorded by a version before provenance
        return
    stored_type, threads = torch.device(str(produced["device"])).type, produced.get("torch_threads")
    mismatch = (f"device {produced['device']}, now {device}" if stored_type != device.type
                else f"{threads} torch thread(s), now {torch.get_num_threads()}"
                if device.type == "cpu" and threads != torch.get_num_threads() else None)
    if mismatch:
        raise ConfigError(
            f"run {record.key} was started with {mismatch}; its numbers depend on that, so resuming would mix "
            f"two sets of numbers. Resume it as it was started (threads: --threads {threads}, or Ray with that "
            f"many CPUs per run), or remove it with `python -m alvae_utils results clean --run {record.key}`.")


@dataclass(frozen=True)
class SweepInputs:
    """What all runs of one dataset share: the pool, the evaluation set and the once-fitted family features.

    ``family_features`` maps a family name to its (N, k) features of the pool, on the CPU;
    it is empty until the sweep's :class:`FamilyFit` are done (:meth:`SweepPlan.fitted`).
    """

    pool: Dataset
    evaluation: Dataset
    family_features: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FamilyFit:
    """Fitting one feature family once per pool for a sweep: an executor's unit of work that runs depend on.

    One fit serves every run of the sweep that uses the family, so no two workers fit the
    same one; the family's own cache (the VAE's checkpoint) lets the next sweep load it.
    """

    family: FeatureFamily
    pool: Dataset
    vae: VAEConfig
    pool_seed: int
    cache_root: Path  # the sweep's results root: the fit is cached there, wherever it runs

    def fit(self, device: torch.device, threads: int | None = None, progress: bool = True) -> torch.Tensor:
        """The pool's (N, k) float32 features, on the CPU, fitted with torch pinned to ``threads`` like a run.

        Raises ValueError naming the family when its features are not finite (N, k ≥ 1).
        """
        FAMILIES.setdefault(self.family.name, self.family)  # registered in a notebook, fitted in a worker
        with pinned_threads(threads):
            context = FeatureContext(self.pool, self.vae, self.pool_seed, device, progress, cache_root=self.cache_root)
            return pool_features(self.family, context).cpu()


@dataclass(frozen=True)
class PlannedRun:
    """One Algorithm 1 run of a sweep, ready to run anywhere: an executor's unit of work.

    ``inputs`` are shared by the sweep's runs; an executor may ship them once and
    attach them again where the run executes (:meth:`with_inputs`). The method's
    registry entries travel with the run, so a heuristic or family registered in a
    notebook also exists in a worker process that never ran that cell.
    """

    experiment: ExperimentConfig
    method: Method
    seed: int
    store: ResultStore
    inputs: SweepInputs | None
    entries: tuple[Heuristic, FeatureFamily | None]

    @property
    def label(self) -> str:
        """``"mnist coreset+vae seed 0"``."""
        return f"{self.experiment.dataset} {self.method.label} seed {self.seed}"

    @property
    def total_steps(self) -> int:
        """Steps of a finished run: the points of its learning curve."""
        return len(self.experiment.label_counts())

    @property
    def fitted_once(self) -> str | None:
        """The name of the family fitted once per pool that this run needs (:class:`FamilyFit`), if any."""
        family = self.entries[1]
        return None if family is None or family.refit_each_step else family.name

    def with_inputs(self, inputs: SweepInputs | None) -> PlannedRun:
        return replace(self, inputs=inputs)

    def completed_steps(self) -> int:
        """Steps a rerun starts after: those stored with valid rows; 0 for a run never started, or whose state
        is damaged (running it says so)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # damaged rows: running the run warns, once
                _, state = self._record().load()
        except StoreDamaged:
            return 0
        return 0 if state is None else state.completed_steps

    def remaining_work(self, completed: int | None = None) -> int:
        """An estimate of the work left, in images through a network (a training image counts 3: forward, backward).

        Training (|L| × epochs at each remaining step), evaluation, the pool's predictions
        at each selection when the heuristic needs them, and a family refitted at every
        step (its epochs over the pool), after ``completed`` steps (default: as stored now).
        Executors start the costliest runs first (longest-processing-time order), so that no
        long run is left alone at the end.
        """
        config, (heuristic, family) = self.experiment, self.entries
        counts = config.label_counts()
        done = self.completed_steps() if completed is None else completed
        eval_size = len(self.inputs.evaluation)
        work = sum(3 * counts[step] * config.train.epochs_for_step(step) + eval_size
                   for step in range(done, len(counts)))
        selections = max(0, len(counts) - 1 - done)
        if PREDICTED & set(heuristic.needs):
            work += selections * config.pool_size
        if family is not None and family.refit_each_step:
            work += selections * 3 * config.pool_size * config.vae.epochs_per_refit
        return work

    def _record(self) -> RunRecord:
        pool, evaluation = self.inputs.pool, self.inputs.evaluation
        return self.store.record(self.experiment, self.method, self.seed, pool.description,
                                 data_fingerprint(pool, evaluation))

    def run(self, device: torch.device, threads: int | None = None, progress: bool = True,
            on_step: Callable[[int], None] | None = None, placement: Mapping[str, object] | None = None
            ) -> pd.DataFrame:
        """:func:`run_algorithm1` with torch pinned to ``threads`` threads (None: as it is); returns its rows."""
        heuristic, family = self.entries
        HEURISTICS.setdefault(heuristic.name, heuristic)
        if family is not None:
            FAMILIES.setdefault(family.name, family)
        with pinned_threads(threads):
            return run_algorithm1(
                self.experiment, self.method, self.seed, self.inputs.pool, self.inputs.evaluation, self.store,
                family_features=self.inputs.family_features.get(family.name) if family else None, device=device,
                progress=progress, on_step=on_step, placement=placement)


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: its runs, and the once-per-pool family fits that its unfinished runs need first.

    An executor does each fit once (:meth:`fits`), then attaches its features to the runs
    that need it (:attr:`PlannedRun.fitted_once`); the other runs need not wait for it.
    """

    inputs: SweepInputs  # shared by the runs, without family features
    runs: tuple[PlannedRun, ...]

    def fits(self, runs: Sequence[PlannedRun] | None = None) -> tuple[FamilyFit, ...]:
        """One fit per family fitted once per pool that a run of ``runs`` (default: all) still needs, as stored now.

        A finished run is only loaded, so it needs none; one whose stored rows are damaged
        resumes, and needs its family again.
        """
        fits: dict[str, FamilyFit] = {}
        for run in self.runs if runs is None else runs:
            if run.fitted_once and run.fitted_once not in fits and run.completed_steps() < run.total_steps:
                fits[run.fitted_once] = FamilyFit(run.entries[1], run.inputs.pool, run.experiment.vae,
                                                  run.experiment.pool_seed, run.store.root.parent)
        return tuple(fits.values())

    def fitted(self, device: torch.device, threads: int | None = None, progress: bool = True
               ) -> tuple[list[PlannedRun], dict[str, str]]:
        """Every fit done here, one after another, on ``device`` with ``threads``.

        Returns the runs with their features, and ``{family name: error}`` for each fit that
        raised: the runs that use that family cannot run, the others can.
        """
        features, errors = {}, {}
        for fit in self.fits():
            try:
                features[fit.family.name] = fit.fit(device, threads, progress)
            except Exception as error:  # reported with the runs that need it, after the others ran
                errors[fit.family.name] = f"{type(error).__name__}: {error}"
        inputs = replace(self.inputs, family_features=features)
        return [run.with_inputs(inputs) for run in self.runs], errors


def plan_sweep(profile: Profile | str, dataset: str, methods: Sequence[Method] | None = None,
               seeds: Sequence[int] | None = None, experiment: ExperimentConfig | None = None) -> SweepPlan:
    """Every (method, seed) run of one dataset, checked and ready to hand to an executor.

    All checks (configuration, methods, seeds, pretrained weights, data files) run
    here, before any training starts, and the data is loaded. Feature families fitted
    once per pool (the VAE) are not fitted here: :meth:`SweepPlan.fits` lists them, one
    fit per family that an unfinished run uses.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    experiment = experiment or profile.experiment(dataset)
    methods = list(methods or profile.methods)
    run_seeds = list(profile.seeds if seeds is None else seeds)
    bad = [seed for seed in run_seeds if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0]
    if bad or not run_seeds or len(set(run_seeds)) != len(run_seeds):
        raise ConfigError(f"seeds must be distinct integers ≥ 0, at least one; got {run_seeds}.")
    experiment.validate()
    for method in methods:
        method.validate()
    if experiment.train.pretrained:
        check_pretrained_weights_available()

    pool, evaluation = load_experiment_data(experiment.dataset, experiment.pool_size, experiment.eval_size,
                                            seed=experiment.pool_seed)
    store, inputs = ResultStore(profile.name, overrides=profile.overrides), SweepInputs(pool, evaluation)
    runs = tuple(PlannedRun(experiment, method, seed, store, inputs, (method.spec, method.family))
                 for method, seed in itertools.product(methods, run_seeds))
    return SweepPlan(inputs, runs)
