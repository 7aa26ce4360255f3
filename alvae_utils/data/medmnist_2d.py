"""The MedMNIST 2D datasets (``chestmnist`` ...): ``<root>/<flag>.npz`` at 28×28, read through ``medmnist``.

One registry entry per 2D flag, generated from medmnist's own metadata (``medmnist.INFO``:
splits, task, labels, URL and MD5). The RGB ones (pathmnist, dermamnist, retinamnist,
bloodmnist) are converted to grayscale (ITU-R BT.601 luma). A file is checked against the
whole 28×28 format before any split is used (:func:`check_medmnist_file`), and its
description says whether it is the published file (MD5), another file in the same format,
or a generated test fixture (:mod:`.fixtures`). :func:`medmnist_source` registers any other
file in a flag's format under a name of its own.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import medmnist
import numpy as np
import torch
from medmnist.dataset import MedMNIST2D

from .datasets import (
    MULTICLASS, MULTILABEL, DataCorruptedError, DataUnavailableError, Dataset, DatasetSource, attempt_download,
    corrupted, register_dataset,
)

MEDMNIST_2D: tuple[str, ...] = tuple(
    flag for flag, info in medmnist.INFO.items() if issubclass(getattr(medmnist, info["python_class"]), MedMNIST2D)
)
SYNTHETIC_MARKER = "alvae_synthetic"  # key that alvae_utils.data.fixtures adds to the files it generates


def medmnist_task(flag: str) -> str:
    """multi-label or multi-class for a MedMNIST flag."""
    # MedMNIST tasks: "multi-label, binary-class" (ChestMNIST) or multi-class,
    # binary-class and ordinal-regression (RetinaMNIST grades), all single-label.
    return MULTILABEL if medmnist.INFO[flag]["task"].startswith("multi-label") else MULTICLASS


def _load_medmnist(flag: str, split: str, root: Path, download: bool, why_not: str, name: str) -> Dataset:
    """One split of ``<root>/<name>.npz``, a file in the format of MedMNIST's ``flag``; downloaded when ``name``
    is the flag itself (the published file)."""
    info = medmnist.INFO[flag]
    source = getattr(medmnist, info["python_class"])
    path = root / f"{name}.npz"
    if not path.is_file() and download and name == flag:
        root.mkdir(parents=True, exist_ok=True)  # medmnist refuses a root that does not exist
        why_not = attempt_download(lambda: source(split=split, root=str(root), download=True, size=28))
    if not path.is_file():
        if name != flag:
            raise DataUnavailableError(f"{name} is not available: {path.name} missing from {root}. Place a file in "
                                       f"the format of MedMNIST's {flag}.npz there, or set ALVAE_DATA_ROOT to a data "
                                       f"root that holds {path.name}.")
        raise DataUnavailableError(
            f"{info['python_class']} is not available: {path.name} missing from {root}; {why_not}.\n"
            f"Download\n  {info['url']}\n(MD5 {info['MD5']}) as {path.name} into {root}, "
            f"or set ALVAE_DATA_ROOT to a data root that holds {path.name}.")
    stat = path.stat()
    check_medmnist_file(path, flag, stat.st_size, stat.st_mtime_ns)  # the whole contract, once per file
    try:
        # Read as medmnist's own classes read it (the split's two arrays), so that a file of another name works too.
        with np.load(path) as stored:
            images, labels = stored[f"{split}_images"], stored[f"{split}_labels"]
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as error:
        raise corrupted(path, f"{type(error).__name__}: {error}") from None
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
    return Dataset(name, torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).contiguous(),
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
        raise corrupted(path, f"{type(error).__name__}: {error}") from None

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


def medmnist_source(name: str, flag: str, title: str | None = None,
                    splits: Mapping[str, int] | None = None) -> DatasetSource:
    """A dataset read from ``<root>/<name>.npz`` in the format of MedMNIST's ``flag``: its task and labels.

    The built-in entries are ``medmnist_source(flag, flag)``; another name registers another file of that
    format (a generated fixture, a resampled release) next to them, with its own ``splits`` sizes (default:
    the published file's). Raises ValueError for an unknown flag.
    """
    if flag not in MEDMNIST_2D:
        raise ValueError(f"unknown MedMNIST 2D flag {flag!r}; choose from {', '.join(MEDMNIST_2D)}.")
    info = medmnist.INFO[flag]

    def load(split: str, root: Path, download: bool, why_not: str) -> Dataset:
        return _load_medmnist(flag, split, root, download, why_not, name=name)

    published = {split: int(info["n_samples"][split]) for split in MEDMNIST_SPLITS}
    return DatasetSource(name, title or info["python_class"], dict(splits or published), medmnist_task(flag), load)


for _flag in MEDMNIST_2D:
    register_dataset(medmnist_source(_flag, _flag))
