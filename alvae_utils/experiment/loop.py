"""Algorithm 1 of the paper: measuring an active-learning method.

::

    L ← ξ random points (seeded: every method with the same seed gets the same L)
    train T on L, evaluate, record (|L|, accuracy)
    repeat until |L| = η:
        S ← β points of U chosen by H;  L ← L ∪ S
        retrain T from scratch on L (the paper's choice; fine-tuning is an option)
        evaluate and record

A method is a heuristic H (:mod:`alvae_utils.selection.heuristics`) and optionally a feature
family (:mod:`alvae_utils.selection.features`) whose features, scaled by α, are appended to
T's (Eq. 6) or given to the loss-prediction module (LP+VAE); α = balanced is
estimated at every selection (:func:`alvae_utils.selection.alpha.balanced_alpha`). Each step is
persisted by :mod:`alvae_utils.experiment.results` before the next begins, so an interrupted
run resumes from its last completed step and gives the same numbers as an
uninterrupted one: every random choice is seeded from (seed, step)
(:mod:`alvae_utils.seeds`), and a retrained model depends only on L and those seeds, given
the same numerics (:func:`alvae_utils.device.numerics`: the CPU's thread count, or the GPU
model and software, under which a run is resumed only as it was started).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import pandas as pd
import torch

from ..config import ConfigError, ExperimentConfig
from ..data.datasets import Dataset
from ..device import default_device, describe_numerics, numerics, reproducible_cuda, synchronized_clock
from ..selection.features import pool_features
from ..selection.bald import mc_dropout_probabilities
from ..selection.heuristics import (
    APPEND, EMBEDDING, LOSS_MODULE, REPRESENTATION, SelectionInputs, needs_predictions, select,
)
from ..selection.methods import BALANCED, Method
from ..training.metrics import evaluate
from ..models.resnet import LossPredictionModule, TaskModel
from ..progress import note, track
from .locks import STALE_AFTER_SECONDS, Holder, RunLock, holding
from .results import ResultStore, RunRecord, RunState, data_fingerprint, run_provenance, step_row
from ..seeds import ALPHA, MODEL, SELECT, TRAIN, derive_seed
from ..selection.alpha import augment_features, balanced_alpha
from ..selection.pool import initial_labeled_indices
from ..training.simclr import get_or_train_simclr, init_from_encoder
from ..training.task_model import build_task_model, predict, train_task_model


def _family_step(method: Method, config: ExperimentConfig, pool: Dataset, labeled: torch.Tensor, seed: int,
                 step: int, finished: bool, fitted_once: torch.Tensor | None, device: torch.device,
                 progress: bool) -> tuple[torch.Tensor | None, float]:
    """The method's family features of the pool (N, k) at this step, on ``device`` (None without a family, or
    when nothing at this step uses them), and the seconds spent fitting them (NaN when nothing was fitted).

    A family fitted once per pool was fitted before the run (``fitted_once``): no step spends time on it.
    A family refitted at every step is refitted here, except at the last step when its features serve only
    the selection, which the last step does not make.
    """
    family = method.family
    if family is None:
        return None, float("nan")
    if family.fitted_once:
        return fitted_once.to(device), float("nan")
    if finished and method.heuristic_entry.extra_features != LOSS_MODULE:
        return None, float("nan")
    started = synchronized_clock(device)
    context = family.step_context(pool, config.vae, config.pool_seed, device, progress, labeled, seed, step,
                                  simclr=config.simclr)
    features = pool_features(family, context).to(device)  # checked: finite (N, k) float32
    return features, synchronized_clock(device) - started


def _select_step(method: Method, budget: int, labeled: torch.Tensor, pool_images: torch.Tensor, task: str,
                 model: TaskModel, lp_module: LossPredictionModule | None, family_features: torch.Tensor | None,
                 extra_features: torch.Tensor | None, generator: torch.Generator,
                 alpha_generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Step 6 of Algorithm 1: gather what the heuristic needs, then β new pool indices in pick order.

    Also returns the α that scaled the appended family block (NaN when none was appended);
    a balanced α is estimated here, from T_f of this step's model (BADGE: from its gradient embedding), with
    pairs drawn by ``alpha_generator``. Only what the heuristic needs is computed: T's predictions of the pool
    when it reads them, the Monte Carlo passes (drawn by ``generator``) only for BALD's ``mc_probabilities``.
    """
    heuristic = method.heuristic_entry
    mask = torch.zeros(len(pool_images), dtype=torch.bool, device=pool_images.device)
    mask[labeled.to(mask.device)] = True
    inputs: dict[str, object] = {"task": task, "generator": generator}
    alpha = float("nan")
    if needs_predictions(heuristic):
        predictions = predict(model, pool_images, lp_module=lp_module, extra_features=extra_features)
        features = predictions.features
        if heuristic.extra_features == APPEND and family_features is not None:
            alpha = (balanced_alpha(features, family_features, alpha_generator) if method.alpha == BALANCED
                     else float(method.alpha))
            features = augment_features(features, family_features, alpha)
        inputs.update(features=features, logits=predictions.logits, predicted_loss=predictions.predicted_loss)
        if "mc_probabilities" in heuristic.needs:
            head = model.net.fc
            inputs["mc_probabilities"] = mc_dropout_probabilities(
                predictions.features, head.weight, head.bias, task, heuristic.mc_dropout, heuristic.mc_samples,
                generator)
    if heuristic.extra_features == EMBEDDING and family_features is not None:
        alpha = (heuristic.balance(SelectionInputs(**{name: inputs.get(name) for name in heuristic.needs
                                                      if name != "family_features"}),
                                   family_features, alpha_generator)
                 if method.alpha == BALANCED else float(method.alpha))
        inputs["family_features"] = alpha * family_features
    elif heuristic.extra_features == REPRESENTATION:
        inputs["family_features"] = family_features
    return select(method.heuristic, mask, budget, **inputs), alpha


def run_algorithm1(config: ExperimentConfig, method: Method, seed: int, pool: Dataset, evaluation: Dataset,
                   store: ResultStore, family_features: torch.Tensor | None = None,
                   device: torch.device | None = None, progress: bool = True,
                   on_step: Callable[[int], None] | None = None,
                   placement: Mapping[str, object] | None = None, lock_owner: str | None = None) -> pd.DataFrame:
    """Run (or resume, or just load) one Algorithm 1 run; returns its rows (:data:`.results.COLUMNS`).

    ``family_features`` (N, k) are the pool's features from the method's family
    when that family is fitted once per pool (the VAE means μ for ``+vae``);
    :class:`FamilyFit` computes them. A family refitted at every step is fitted
    here. ``on_step(completed)`` is called after each step is stored; ``placement``
    (where an executor placed the run) joins the provenance in the run's state.

    An unfinished run is written under its lock (:mod:`alvae_utils.experiment.locks`): while
    another live process holds it, this one waits, saying who holds it, then loads or resumes
    the run as that process left it. ``lock_owner`` names the work across its attempts (a Ray
    task and its retries), so that a retry takes over the lock of the attempt it replaces.
    Raises LockLost when another process took the lock over (this one looked stale).

    On the CPU the numbers depend on torch's thread count (oneDNN reduces in another
    order), so the caller pins it (:func:`alvae_utils.device.pinned_threads`) and the
    state records it. On CUDA the run computes in deterministic IEEE fp32
    (:func:`alvae_utils.device.reproducible_cuda`), and its numbers depend on the GPU model
    and the CUDA, cuDNN and torch versions, which the state records too
    (:func:`alvae_utils.device.numerics`). With ``train.init=simclr`` T's backbone starts at every step from
    the pool's SimCLR encoder (:mod:`alvae_utils.training.simclr`), loaded from its cache (fitted first by the
    sweep's :class:`FamilyFit`; fitted here otherwise). Raises ConfigError for an invalid configuration or
    method, a pool of the wrong size, missing family features, or an unfinished run stored
    with other numerics (resuming would mix two sets of numbers).
    """
    config.validate()
    method.validate()
    if len(pool) != config.pool_size:
        raise ConfigError(f"pool has {len(pool)} images but the configuration says {config.pool_size}.")
    device = torch.device(device) if device is not None else default_device()
    record = store.record(config, method, seed, pool.description, data_fingerprint(pool, evaluation),
                          provenance={**run_provenance(device), **(placement or {})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damage is reported once, by the load under the run's lock
        rows, state = record.load()
    if state is not None and state.finished:  # a finished run is only loaded: it needs no features, and no lock
        return rows
    family = method.family
    if family is not None and family.fitted_once and family_features is None:
        raise ConfigError(f"method {method.label} needs the pool's {family.title} features; pass family_features.")
    label = f"{config.dataset} {method.label} seed {seed}"
    with holding(record.lock(lock_owner), on_wait=lambda holder: _waiting(label, record, holder)) as lock:
        rows, state = record.load()  # as the last writer left it (finished while this process waited, say)
        if state is not None and state.finished:
            return rows
        if state is not None:
            _check_same_numerics(record, device)
        return _steps(config, method, seed, pool, evaluation, store, record, rows, state, family_features, device,
                      progress, on_step, lock)


def _waiting(label: str, record: RunRecord, holder: Holder) -> None:
    """Say that this process waits for another that writes the same run (shown even without progress bars)."""
    note(f"[alvae] {label}: waiting for {holder.describe()}, which is writing this run ({record.key}); it is "
         f"loaded or resumed once that process releases it (a lock without a heartbeat for "
         f"{STALE_AFTER_SECONDS:g} s is stale, and taken over).")


def _steps(config: ExperimentConfig, method: Method, seed: int, pool: Dataset, evaluation: Dataset,
           store: ResultStore, record: RunRecord, rows: pd.DataFrame, state: RunState | None,
           family_features: torch.Tensor | None, device: torch.device, progress: bool,
           on_step: Callable[[int], None] | None, lock: RunLock) -> pd.DataFrame:
    """The steps of the run that remain after ``state`` (None: all), each committed under ``lock``; all its rows."""
    backbone = None
    if config.train.init == "simclr":  # the fit's cache lives in the store's results root
        backbone = get_or_train_simclr(pool, config.simclr.resolved(config.vae), config.pool_seed, device=device,
                                       progress=progress, root=store.root.parent)[0].backbone_state()
    counts = config.label_counts()
    pool_images, pool_labels = pool.images.to(device), pool.labels.to(device)
    eval_images, eval_labels = evaluation.images.to(device), evaluation.labels.to(device)
    labeled, start, select_seconds = _start(config, seed, state)
    model = lp_module = None
    steps = track(range(start, len(counts)), desc=f"{config.dataset} {method.label} seed {seed} steps",
                  total=len(counts), initial=start, enabled=progress)
    with reproducible_cuda(device):
        for step in steps:
            if len(labeled) != counts[step]:
                raise RuntimeError(f"step {step}: |L| = {len(labeled)}, expected {counts[step]}")
            finished = step == len(counts) - 1
            step_features, features_seconds = _family_step(method, config, pool, labeled, seed, step, finished,
                                                           family_features, device, progress)
            # LP+VAE: α·V(u) joins the concatenation c before the module's last layer.
            to_module = step_features is not None and method.heuristic_entry.extra_features == LOSS_MODULE
            extra_features = method.alpha * step_features if to_module else None
            model, lp_module = _model_for_step(config, method, seed, step, pool.num_outputs, extra_features, device,
                                               record, state, model, lp_module, backbone)
            on_device = labeled.to(device)
            trained = train_task_model(
                model, pool_images[on_device], pool_labels[on_device], pool.task, config.train.epochs_for_step(step),
                config.train, seed=derive_seed(TRAIN, seed, step), lp_module=lp_module,
                extra_features=None if extra_features is None else extra_features[on_device], progress=progress)
            started = synchronized_clock(device)
            metrics = evaluate(model, eval_images, eval_labels, evaluation.task)
            eval_seconds = synchronized_clock(device) - started

            row_select_seconds = select_seconds  # the selection that produced this step's labels
            # A numeric α scales the family's block at every step; a balanced one is estimated by the selection below.
            alpha_used = float("nan") if method.family is None or method.alpha == BALANCED else float(method.alpha)
            if not finished:
                started = synchronized_clock(device)
                picked, alpha_selected = _select_step(
                    method, config.budget, labeled, pool_images, pool.task, model, lp_module, step_features,
                    extra_features, torch.Generator().manual_seed(derive_seed(SELECT, seed, step)),
                    torch.Generator().manual_seed(derive_seed(ALPHA, seed, step)))
                select_seconds = synchronized_clock(device) - started
                labeled = torch.cat([labeled, picked.cpu()])
                if method.alpha == BALANCED:
                    alpha_used = alpha_selected

            row = step_row(profile=store.profile, config=config, method=method, seed=seed, step=step,
                           n_labels=counts[step], data_description=pool.description,
                           metrics=metrics, train_accuracy=trained.train_accuracy, epochs=trained.epochs,
                           train_seconds=trained.seconds, select_seconds=row_select_seconds, eval_seconds=eval_seconds,
                           features_seconds=features_seconds, alpha_used=alpha_used, run_key=record.key)
            rows = _commit(record, lock, rows, row, RunState(step + 1, labeled.tolist(), select_seconds, finished),
                           config.train.fine_tune, model, lp_module)
            if on_step is not None:
                on_step(step + 1)
    return rows


def _start(config: ExperimentConfig, seed: int, state: RunState | None) -> tuple[torch.Tensor, int, float]:
    """Step 1 of Algorithm 1, or where a stored run left off: (L as pool indices, first step, the seconds of the
    selection that chose the first step's labels)."""
    if state is None:
        return initial_labeled_indices(config.pool_size, config.initial_labels, seed), 0, 0.0
    return torch.tensor(state.labeled, dtype=torch.long), state.completed_steps, state.pending_select_seconds


def _model_for_step(config: ExperimentConfig, method: Method, seed: int, step: int, num_outputs: int,
                    extra_features: torch.Tensor | None, device: torch.device, record: RunRecord,
                    state: RunState | None, model: TaskModel | None, lp_module: LossPredictionModule | None,
                    backbone: Mapping[str, torch.Tensor] | None = None
                    ) -> tuple[TaskModel, LossPredictionModule | None]:
    """T (and P) for this step: new from the step's seed (retrained from scratch, the paper's choice; its backbone
    then ``backbone``'s weights when given: ``train.init=simclr``), or, when fine-tuning, the model carried from the
    previous step (reloaded from the store when the run resumes)."""
    fine_tune = config.train.fine_tune
    if model is not None and fine_tune:
        return model, lp_module
    # A fine-tuned run starts from the step-0 initialisation; resuming one reloads its carried model.
    model, lp_module = build_task_model(
        num_outputs, config.train, seed=derive_seed(MODEL, seed, 0 if fine_tune else step), device=device,
        with_loss_prediction=method.heuristic_entry.trains_loss_module, dropout=method.heuristic_entry.mc_dropout,
        extra_dim=0 if extra_features is None else extra_features.shape[1])
    if backbone is not None:
        init_from_encoder(model, backbone)
    if fine_tune and step > 0:
        record.load_model({"model": model, "lp": lp_module}, state, device)
    return model, lp_module


def _commit(record: RunRecord, lock: RunLock, rows: pd.DataFrame, row: dict, state: RunState, fine_tune: bool,
            model: TaskModel, lp_module: LossPredictionModule | None) -> pd.DataFrame:
    """Store the step's row and the run's state atomically (and the model, when fine-tuning); the rows so far.

    First the run's lock is refreshed: LockLost, and nothing written, when another process took it over.
    """
    new_row = pd.DataFrame([row])
    rows = pd.concat([rows, new_row], ignore_index=True) if len(rows) else new_row
    lock.refresh()
    record.commit_step(rows, state, modules={"model": model, "lp": lp_module} if fine_tune else None)
    return rows


def _check_same_numerics(record: RunRecord, device: torch.device) -> None:
    """ConfigError when an unfinished run was stored with other numerics (:func:`~alvae_utils.device.numerics`):
    another device type, on the CPU another thread count, on CUDA another GPU model or CUDA, cuDNN or torch."""
    produced = (record.read_state() or {}).get("produced_by") or {}
    if "device" not in produced:  # recorded by a version before provenance
        return
    stored_type, threads = torch.device(str(produced["device"])).type, produced.get("torch_threads")
    # States written before numerics were recorded hold the device and the thread count, all a CPU run needs.
    stored = produced.get("numerics") or {"device": stored_type,
                                          **({"torch_threads": threads} if stored_type == "cpu" else {})}
    now = numerics(device)
    if stored == now:
        return
    if stored_type != device.type:
        mismatch, resume = f"device {produced['device']}, now {device}", "on that device"
    elif device.type == "cpu":
        mismatch = f"{threads} torch thread(s), now {torch.get_num_threads()}"
        resume = f"threads: --threads {threads}, or Ray with that many CPUs per run"
    else:
        mismatch = f"{describe_numerics(stored)}, now {describe_numerics(now)}"
        resume = "on that GPU model with that CUDA, cuDNN and torch"
    raise ConfigError(
        f"run {record.key} was started with {mismatch}; its numbers depend on that, so resuming would mix "
        f"two sets of numbers. Resume it as it was started ({resume}), or remove it with "
        f"`python -m alvae_utils results clean --run {record.key}`.")

