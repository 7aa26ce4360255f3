"""Algorithm 1 of the paper: measuring an active-learning heuristic.

::

    L ← ξ random points (seeded: every heuristic with the same seed gets the same L)
    train T on L, evaluate, record (|L|, accuracy)
    repeat until |L| = η:
        S ← β points of U chosen by H;  L ← L ∪ S
        retrain T from scratch on L (the paper's choice; fine-tuning is an option)
        evaluate and record

Each step is persisted by :mod:`alvae_utils.results` before the next begins, so
an interrupted run resumes from its last completed step and gives the same
numbers as an uninterrupted one: every random choice is seeded from
(seed, step), and a retrained model depends only on L and those seeds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import ConfigError, ExperimentConfig, Method, Profile, get_profile
from .data import Dataset, load_experiment_data
from .models import LossPredictionModule, TaskModel, VAE, check_pretrained_weights_available
from .paths import atomic_path
from .results import COLUMNS, ResultStore, RunRecord, RunState, vae_checkpoint_path
from .selection import augment_features, select
from .training import (
    build_task_model, default_device, derive_seed, encode_mu, evaluate, load_vae, predict, save_vae,
    train_task_model, train_vae,
)


def initial_labeled_indices(pool_size: int, initial_labels: int, seed: int) -> torch.Tensor:
    """Step 1 of Algorithm 1: the ξ initial labels, a function of the seed alone."""
    generator = torch.Generator().manual_seed(derive_seed("initial-labels", seed))
    return torch.randperm(pool_size, generator=generator)[:initial_labels]


def get_or_train_vae(config: ExperimentConfig, pool: Dataset, device: torch.device | None = None,
                     progress: bool = True) -> tuple[VAE, list[dict], bool]:
    """The VAE V for this pool, trained once on all of it and cached.

    Returns (vae, per-epoch history, trained_now). The VAE sees labeled and
    unlabeled points alike: its features are task-agnostic.
    """
    path = vae_checkpoint_path(config.dataset, config.pool_size, config.pool_seed, config.vae, pool.description)
    if path.exists():
        vae, history, _ = load_vae(path, device=device)
        return vae, history, False
    vae, history = train_vae(pool.images, config.vae, seed=derive_seed("vae", config.pool_seed),
                             device=device, progress=progress)
    save_vae(path, vae, history, {"dataset": config.dataset, "pool_size": config.pool_size,
                                  "data_description": pool.description})
    return vae, history, True


def _select(method: Method, budget: int, labeled: torch.Tensor, pool_images: torch.Tensor, task: str,
            model: TaskModel, lp_module: LossPredictionModule | None, vae_features: torch.Tensor | None,
            lp_extra: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Step 6 of Algorithm 1: β new pool indices chosen by H, in pick order."""
    mask = torch.zeros(len(pool_images), dtype=torch.bool, device=pool_images.device)
    mask[labeled.to(mask.device)] = True
    if method.heuristic == "random":
        return select("random", mask, budget, generator=generator)
    predictions = predict(model, pool_images, lp_module=lp_module, extra_features=lp_extra)
    features = predictions.features
    if method.heuristic in ("coreset", "medal"):
        features = augment_features(features, vae_features if method.use_vae else None, method.alpha)
    return select(method.heuristic, mask, budget, features=features, logits=predictions.logits,
                  predicted_loss=predictions.predicted_loss, task=task)


def run_algorithm1(config: ExperimentConfig, method: Method, seed: int, pool: Dataset, evaluation: Dataset,
                   store: ResultStore, vae_features: torch.Tensor | None = None,
                   device: torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """Run (or resume, or just load) one Algorithm 1 run; returns its rows.

    ``vae_features`` are the VAE means μ of the whole pool (needed for VAE
    methods). Rows follow :data:`alvae_utils.results.COLUMNS`.
    """
    config.validate()
    method.validate()
    if len(pool) != config.pool_size:
        raise ConfigError(f"pool has {len(pool)} images but the configuration says {config.pool_size}.")
    if method.use_vae and vae_features is None:
        raise ConfigError(f"method {method.label} needs the pool's VAE features; pass vae_features.")
    record = store.record(config, method, seed, pool.description)
    rows, state = record.load()
    if state is not None and state.finished:
        return rows

    device = device or default_device()
    counts = config.label_counts()
    pool_images, pool_labels = pool.images.to(device), pool.labels.to(device)
    eval_images, eval_labels = evaluation.images.to(device), evaluation.labels.to(device)
    vae_block = vae_features.to(device) if method.use_vae else None
    with_lp = method.heuristic == "lossprediction"
    # LP+VAE: α·V(u) joins the concatenation c before the module's last layer.
    lp_extra = method.alpha * vae_block if (with_lp and vae_block is not None) else None

    if state is None:
        labeled = initial_labeled_indices(config.pool_size, config.initial_labels, seed)
        start, select_seconds = 0, 0.0
    else:
        labeled = torch.tensor(state.labeled, dtype=torch.long)
        start, select_seconds = state.completed_steps, state.pending_select_seconds

    model, lp_module = _resume_model(record, config, method, seed, start, pool.num_outputs, lp_extra, device)
    steps = tqdm(range(start, len(counts)), desc=f"{config.dataset} {method.label} seed {seed}",
                 initial=start, total=len(counts), disable=not progress, leave=False)
    for step in steps:
        if len(labeled) != counts[step]:
            raise RuntimeError(f"step {step}: |L| = {len(labeled)}, expected {counts[step]}")
        if model is None or not config.train.fine_tune:
            model, lp_module = build_task_model(
                pool.num_outputs, config.train, seed=derive_seed("model", seed, step), device=device,
                with_loss_prediction=with_lp, extra_dim=0 if lp_extra is None else lp_extra.shape[1])
        on_device = labeled.to(device)
        trained = train_task_model(
            model, pool_images[on_device], pool_labels[on_device], pool.task, config.train.epochs_for_step(step),
            config.train, seed=derive_seed("train", seed, step), lp_module=lp_module,
            extra_features=None if lp_extra is None else lp_extra[on_device], progress=progress)
        started = time.perf_counter()
        metrics = evaluate(model, eval_images, eval_labels, evaluation.task)
        eval_seconds = time.perf_counter() - started

        row = {
            "profile": store.profile, "dataset": config.dataset, "data_description": pool.description,
            "method": method.label, "heuristic": method.heuristic, "use_vae": method.use_vae,
            "alpha": method.alpha if method.use_vae else float("nan"), "seed": seed, "step": step,
            "n_labels": len(labeled), "accuracy": metrics["accuracy"], "medmnist_acc": metrics["medmnist_acc"],
            "auc": metrics["auc"], "train_accuracy": trained.train_accuracy, "epochs": trained.epochs,
            "train_seconds": trained.seconds, "select_seconds": select_seconds, "eval_seconds": eval_seconds,
            "config_key": config.key(), "run_key": record.key,
        }
        rows = pd.concat([rows, pd.DataFrame([row], columns=list(COLUMNS))], ignore_index=True) \
            if len(rows) else pd.DataFrame([row], columns=list(COLUMNS))

        finished = step == len(counts) - 1
        if not finished:
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(derive_seed("select", seed, step))
            picked = _select(method, config.budget, labeled, pool_images, pool.task, model, lp_module,
                             vae_block, lp_extra, generator)
            select_seconds = time.perf_counter() - started
            labeled = torch.cat([labeled, picked.cpu()])
        if config.train.fine_tune:
            _save_model(record, model, lp_module)
        record.save(rows, RunState(step + 1, labeled.tolist(), select_seconds, finished))
    return rows


def _model_path(record: RunRecord):
    return record.directory / f"{record.key}.model.pt"


def _save_model(record: RunRecord, model: TaskModel, lp_module: LossPredictionModule | None) -> None:
    """Fine-tuning carries the model across steps, so a resumable run must keep it."""
    state = {"model": model.state_dict(), "lp": None if lp_module is None else lp_module.state_dict()}
    with atomic_path(_model_path(record)) as tmp:
        torch.save(state, tmp)


def _resume_model(record: RunRecord, config: ExperimentConfig, method: Method, seed: int, start: int,
                  num_outputs: int, lp_extra: torch.Tensor | None, device: torch.device):
    """The fine-tuned model to continue from, or (None, None) when each step retrains from scratch."""
    if not config.train.fine_tune or start == 0:
        return None, None
    model, lp_module = build_task_model(
        num_outputs, config.train, seed=derive_seed("model", seed, 0), device=device,
        with_loss_prediction=method.heuristic == "lossprediction",
        extra_dim=0 if lp_extra is None else lp_extra.shape[1])
    state = torch.load(_model_path(record), map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    if lp_module is not None:
        lp_module.load_state_dict(state["lp"])
    return model, lp_module


def run_sweep(profile: Profile | str, dataset: str, methods: Sequence[Method] | None = None,
              seeds: Sequence[int] | None = None, experiment: ExperimentConfig | None = None,
              device: torch.device | str | None = None, progress: bool = True) -> pd.DataFrame:
    """Every (method, seed) run of one dataset, resuming what is stored; returns their rows.

    All checks (configuration, heuristics, pretrained weights, data files) run
    before any training starts. The VAE is trained once and cached.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    experiment = experiment or profile.experiment(dataset)
    methods = list(methods or profile.methods)
    seeds = list(profile.seeds if seeds is None else seeds)
    experiment.validate()
    for method in methods:
        method.validate()
    if experiment.train.pretrained:
        check_pretrained_weights_available()

    pool, evaluation = load_experiment_data(experiment.dataset, experiment.pool_size, experiment.eval_size,
                                            seed=experiment.pool_seed)
    device = torch.device(device) if device else default_device()
    vae_features = None
    if any(method.use_vae for method in methods):
        vae, _, _ = get_or_train_vae(experiment, pool, device=device, progress=progress)
        vae_features = encode_mu(vae, pool.images.to(device))

    store = ResultStore(profile.name)
    runs = list(itertools.product(methods, seeds))
    frames = [
        run_algorithm1(experiment, method, seed, pool, evaluation, store,
                       vae_features=vae_features if method.use_vae else None, device=device, progress=progress)
        for method, seed in tqdm(runs, desc=f"{profile.name}/{experiment.dataset} runs", disable=not progress)
    ]
    return pd.concat(frames, ignore_index=True)
