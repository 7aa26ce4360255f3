"""Planning a sweep: every (method, seed) run of one dataset, checked and ready for an executor.

:func:`plan_sweep` runs every check before any training starts and loads the data; it returns a
:class:`SweepPlan` of independent runs (:class:`PlannedRun`, each an Algorithm 1 run,
:func:`alvae_utils.experiment.loop.run_algorithm1`) and the once-per-pool family fits they need
(:class:`FamilyFit`). An executor (:mod:`alvae_utils.execution`) runs them.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from ..config import ConfigError, ExperimentConfig, SimCLRConfig, VAEConfig, config_hash
from ..data.datasets import Dataset, load_experiment_data
from ..device import numerics, pinned_threads
from ..selection.features import FAMILIES, SIMCLR_FAMILY, FeatureContext, FeatureFamily, pool_features
from ..selection.heuristics import HEURISTICS, Heuristic, needs_predictions
from ..selection.methods import Method
from ..models.resnet import check_pretrained_weights_available
from ..progress import note
from .locks import RunLock, holding
from .profiles import Profile, get_profile
from .loop import run_algorithm1
from .results import ResultStore, RunRecord, StoreDamaged, data_fingerprint


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
    simclr: SimCLRConfig = SimCLRConfig()

    def fit(self, device: torch.device, threads: int | None = None, progress: bool = True,
            lock_owner: str | None = None) -> torch.Tensor:
        """The pool's (N, k) float32 features, on the CPU, fitted with torch pinned to ``threads`` like a run.

        Fitted under a lock (:meth:`lock`), so that of two processes fitting the same family on the
        same pool with the same numerics, one fits and the other waits, then loads the family's cache.
        Raises ValueError naming the family when its features are not finite (N, k ≥ 1).
        """
        FAMILIES.setdefault(self.family.name, self.family)  # registered in a notebook, fitted in a worker
        with pinned_threads(threads):
            context = FeatureContext(self.pool, self.vae, self.pool_seed, device, progress, cache_root=self.cache_root,
                                     simclr=self.simclr)
            what = f"fitting the {self.family.title} of {self.pool.name}"
            with holding(self.lock(device, lock_owner), on_wait=lambda holder: note(
                    f"[alvae] {what}: waiting for {holder.describe()}, which fits it; then its cache is loaded.")):
                return pool_features(self.family, context).cpu()

    def lock(self, device: torch.device, owner: str | None = None) -> RunLock:
        """The lock of this fit (:mod:`~alvae_utils.experiment.locks`): its family, pool, settings and numerics
        (read with torch's threads pinned as the fit has them), in the cache root's ``locks/`` folder."""
        key = config_hash({"family": self.family.name, "pool": self.pool.name, "data": self.pool.description,
                           "fingerprint": self.pool.fingerprint, "pool_size": len(self.pool),
                           "pool_seed": self.pool_seed, "vae": asdict(self.vae), "numerics": numerics(device)})
        return RunLock(self.cache_root / "locks" / f"fit-{self.family.name}-{key}.lock", owner)


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
    heuristic_entry: Heuristic
    family_entry: FeatureFamily | None

    @property
    def label(self) -> str:
        """``"mnist coreset+vae seed 0"``."""
        return f"{self.experiment.dataset} {self.method.label} seed {self.seed}"

    @property
    def total_steps(self) -> int:
        """Steps of a finished run: the points of its learning curve."""
        return len(self.experiment.label_counts())

    @property
    def once_fitted_family(self) -> str | None:
        """The name of the family fitted once per pool that this run waits for (:class:`FamilyFit`), if any: its
        method's, else ``simclr`` when its task model starts from that encoder (``train.init=simclr``). (A run with
        both loads, or fits, the encoder itself: the fit is cached, seeded and keyed on its numerics.)"""
        family = self.family_entry
        if family is not None and family.fitted_once:
            return family.name
        return SIMCLR_FAMILY.name if self.experiment.train.init == SIMCLR_FAMILY.name else None

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
        config, heuristic, family = self.experiment, self.heuristic_entry, self.family_entry
        counts = config.label_counts()
        done = self.completed_steps() if completed is None else completed
        eval_size = len(self.inputs.evaluation)
        work = sum(3 * counts[step] * config.train.epochs_for_step(step) + eval_size
                   for step in range(done, len(counts)))
        selections = max(0, len(counts) - 1 - done)
        if needs_predictions(heuristic):
            work += selections * config.pool_size
        if family is not None and not family.fitted_once:
            work += selections * 3 * config.pool_size * config.vae.epochs_per_refit
        return work

    def _record(self) -> RunRecord:
        pool, evaluation = self.inputs.pool, self.inputs.evaluation
        return self.store.record(self.experiment, self.method, self.seed, pool.description,
                                 data_fingerprint(pool, evaluation))

    def run(self, device: torch.device, threads: int | None = None, progress: bool = True,
            on_step: Callable[[int], None] | None = None, placement: Mapping[str, object] | None = None,
            lock_owner: str | None = None) -> pd.DataFrame:
        """:func:`run_algorithm1` with torch pinned to ``threads`` threads (None: as it is); returns its rows.

        ``lock_owner``: the work this attempt belongs to, shared by a Ray task's retries (see
        :mod:`~alvae_utils.experiment.locks`).
        """
        heuristic, family = self.heuristic_entry, self.family_entry
        HEURISTICS.setdefault(heuristic.name, heuristic)
        if family is not None:
            FAMILIES.setdefault(family.name, family)
        with pinned_threads(threads):
            return run_algorithm1(
                self.experiment, self.method, self.seed, self.inputs.pool, self.inputs.evaluation, self.store,
                family_features=self.inputs.family_features.get(family.name) if family else None, device=device,
                progress=progress, on_step=on_step, placement=placement, lock_owner=lock_owner)


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: its runs, and the once-per-pool family fits that its unfinished runs need first.

    An executor does each fit once (:meth:`fits`), then attaches its features to the runs
    that need it (:attr:`PlannedRun.once_fitted_family`); the other runs need not wait for it.
    """

    inputs: SweepInputs  # shared by the runs, without family features
    runs: tuple[PlannedRun, ...]

    def fits(self, runs: Sequence[PlannedRun] | None = None) -> tuple[FamilyFit, ...]:
        """One fit per family fitted once per pool that a run of ``runs`` (default: all) still needs, as stored now.

        A run with ``train.init=simclr`` needs the SimCLR fit too: its task model starts from that encoder,
        which the run loads from the fit's cache. A finished run is only loaded, so it needs none; one whose
        stored rows are damaged resumes, and needs its family again.
        """
        fits: dict[str, FamilyFit] = {}
        for run in self.runs if runs is None else runs:
            if run.completed_steps() >= run.total_steps:
                continue
            family = run.family_entry
            needed = [family] if family is not None and family.fitted_once else []
            if run.experiment.train.init == SIMCLR_FAMILY.name:
                needed.append(SIMCLR_FAMILY)
            for family in needed:
                fits.setdefault(family.name, FamilyFit(family, run.inputs.pool, run.experiment.vae,
                                                       run.experiment.pool_seed, run.store.root.parent,
                                                       run.experiment.simclr))
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

    All checks (configuration, methods, seeds, pretrained weights, a writable results root, data files) run
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
    store = ResultStore(profile.name, overrides=profile.stored_overrides)
    store.check_writable()

    pool, evaluation = load_experiment_data(experiment.dataset, experiment.pool_size, experiment.eval_size,
                                            seed=experiment.pool_seed, imbalance=experiment.pool_imbalance)
    inputs = SweepInputs(pool, evaluation)
    runs = tuple(PlannedRun(experiment, method, seed, store, inputs, method.heuristic_entry, method.family)
                 for method, seed in itertools.product(methods, run_seeds))
    return SweepPlan(inputs, runs)
