"""Dataset loading, offline failure messages and seeded experiment subsets (no network)."""

import gzip

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

from alvae_utils import progress
from alvae_utils.data import idx, medmnist_2d
from alvae_utils.data.datasets import (
    DATASETS,
    MULTICLASS,
    MULTILABEL,
    DataCorruptedError,
    DataUnavailableError,
    evaluation_split,
    load_dataset,
    load_experiment_data,
)
from alvae_utils.data.fixtures import write_medmnist_npz

UNREACHABLE = "http://127.0.0.1:9/"  # discard port: the connection is refused at once, nothing leaves the host


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("ALVAE_OFFLINE", "1")


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def test_dataset_names():
    assert tuple(DATASETS) == (
        "mnist", "fashionmnist", "mnist-sample", "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist",
        "retinamnist", "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist")


def test_embedded_sample_is_real_digits():
    train, test = load_dataset("mnist-sample", "train"), load_dataset("mnist-sample", "test")
    for split, n in ((train, 4000), (test, 1000)):
        assert split.images.shape == (n, 1, 28, 28) and split.images.dtype == torch.uint8
        assert split.images.is_contiguous() and split.labels.dtype == torch.int64
        assert torch.bincount(split.labels).tolist() == [n // 10] * 10  # stratified split
        assert split.task == MULTICLASS and split.num_outputs == 10
    assert evaluation_split("mnist-sample") == "test"
    # Real digits: nearest class mean fitted on train classifies held-out test digits.
    x_train, x_test = train.images.flatten(1).float(), test.images.flatten(1).float()
    means = torch.stack([x_train[train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(x_test, means).argmin(1) == test.labels).float().mean().item()
    assert accuracy > 0.7
    again = load_dataset("mnist-sample", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_chestmnist_file_loads_through_medmnist(tmp_path):
    path = write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=30, n_val=12, n_test=10, flag="chestmnist")
    written = np.load(path)
    for split, n in (("train", 30), ("val", 12), ("test", 10)):
        dataset = load_dataset("chestmnist", split, root=tmp_path, download=False)
        assert dataset.task == MULTILABEL and len(dataset.class_names) == 14 and dataset.class_names[0] == "atelectasis"
        assert dataset.images.shape == (n, 1, 28, 28) and dataset.images.dtype == torch.uint8
        assert dataset.labels.shape == (n, 14) and dataset.labels.dtype == torch.int64
        assert np.array_equal(dataset.images[:, 0].numpy(), written[f"{split}_images"])
        assert np.array_equal(dataset.labels.numpy(), written[f"{split}_labels"])
        assert dataset.description == "synthetic ChestMNIST-format data (generated test fixture)"
    assert evaluation_split("chestmnist") == "val"


def test_synthetic_chestmnist_carries_label_signal(tmp_path):
    write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=200, n_val=10, n_test=10, seed=3)
    train = load_dataset("chestmnist", "train", root=tmp_path, download=False)
    # Label 0 owns the top-left 7x7 cell: it is brighter exactly when the label is on.
    cell = train.images[:, 0, :7, :7].float().mean((1, 2))
    on = train.labels[:, 0] == 1
    assert 0 < on.sum() < len(train) and cell[on].min() > cell[~on].max()


def test_rgb_medmnist_is_converted_to_grayscale(tmp_path):
    write_medmnist_npz(tmp_path / "pathmnist.npz", n_train=20, n_val=5, n_test=5, flag="pathmnist")
    dataset = load_dataset("pathmnist", "train", root=tmp_path, download=False)
    assert dataset.images.shape == (20, 1, 28, 28) and dataset.labels.shape == (20,)
    assert dataset.task == MULTICLASS and dataset.num_outputs == 9
    # The synthetic RGB image has equal channels, so its luma equals each channel.
    raw = np.load(tmp_path / "pathmnist.npz")["train_images"]
    assert np.array_equal(dataset.images[:, 0].numpy(), raw[..., 0])


def test_debian_fashion_mnist():
    if not (idx.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    train = load_dataset("fashionmnist", "train", root="/nonexistent", download=False)
    test = load_dataset("fashionmnist", "test", root="/nonexistent", download=False)
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10 and len(test.class_names) == 10
    assert test.class_names[int(test.labels[0])] == "Ankle boot"  # the first Fashion-MNIST test image
    assert "Debian" in test.description


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_in_torchvision_layout(tmp_path, gzipped):
    sample = load_dataset("mnist-sample", "test")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if gzipped else ""
    _write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", sample.images[:, 0].numpy())
    _write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", sample.labels.numpy())
    mnist = load_dataset("mnist", "test", root=tmp_path, download=False)
    assert torch.equal(mnist.images, sample.images) and torch.equal(mnist.labels, sample.labels)
    assert mnist.description == "MNIST (torchvision)"


@pytest.mark.parametrize("switch_off", ["env", "argument"])
def test_missing_mnist_names_files_directory_and_url(tmp_path, monkeypatch, switch_off):
    if switch_off == "argument":
        monkeypatch.delenv("ALVAE_OFFLINE")
    with pytest.raises(DataUnavailableError) as error:
        load_dataset("mnist", "train", root=tmp_path, download=False if switch_off == "argument" else None)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "ALVAE_DATA_ROOT" in message
    assert f"{tv_datasets.MNIST.mirrors[0]}train-images-idx3-ubyte.gz" in message
    assert not (tmp_path / "MNIST").exists()  # nothing written when offline


def test_missing_chestmnist_names_file_directory_and_url(tmp_path):
    with pytest.raises(DataUnavailableError) as error:
        load_dataset("chestmnist", "train", root=tmp_path / "data")
    message = str(error.value)
    assert "chestmnist.npz" in message and str(tmp_path / "data") in message and "ALVAE_DATA_ROOT" in message
    assert "https://zenodo.org/" in message and "ALVAE_OFFLINE" in message


def test_failed_download_becomes_one_clean_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_datasets.MNIST, "mirrors", [UNREACHABLE])
    monkeypatch.setitem(medmnist_2d.medmnist.INFO["chestmnist"], "url", f"{UNREACHABLE}chestmnist.npz")
    for name in ("mnist", "chestmnist"):
        with pytest.raises(DataUnavailableError, match="download failed") as error:
            load_dataset(name, "test", root=tmp_path, download=True)
        assert UNREACHABLE in str(error.value)
        # No urllib traceback chained to it.
        assert error.value.__cause__ is None
        assert error.value.__context__ is None or error.value.__suppress_context__


def test_unknown_name_and_bad_split():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*mnist, fashionmnist, mnist-sample.*chestmnist"):
        load_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="mnist has no 'val' split; it has train, test"):
        load_dataset("mnist", "val")
    with pytest.raises(ValueError, match="has no 'validation' split; it has train, val, test"):
        load_dataset("chestmnist", "validation")


def test_truncated_npz_is_reported_as_corrupted(tmp_path):
    path = write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=20, n_val=5, n_test=5)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataCorruptedError, match="Delete it and download it again") as error:
        load_dataset("chestmnist", "train", root=tmp_path, download=False)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad gzip"])
def test_damaged_idx_file_is_reported_as_corrupted(tmp_path, damage):
    sample = load_dataset("mnist-sample", "test")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = raw / "t10k-images-idx3-ubyte.gz", raw / "t10k-labels-idx1-ubyte"
    _write_idx(images, sample.images[:, 0].numpy())
    _write_idx(labels, sample.labels.numpy())
    bad = {"garbage": labels, "truncated": labels, "bad gzip": images}[damage]
    content = {"garbage": b"not an idx file at all", "truncated": labels.read_bytes()[:500],
               "bad gzip": images.read_bytes()[:1000]}[damage]
    bad.write_bytes(content)
    with pytest.raises(DataCorruptedError, match="Delete it and download it again") as error:
        load_dataset("mnist", "test", root=tmp_path, download=False)
    assert str(bad) in str(error.value)


def test_mnist_falls_back_to_the_sample_when_small_enough(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "_said", set())
    pool, evaluation = load_experiment_data("mnist", 1000, 500, seed=0, root=tmp_path)
    load_experiment_data("mnist", 500, 100, seed=1, root=tmp_path)
    # Said once, as one readable line: no warning's source line, no repeat.
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alvae: MNIST is unavailable (MNIST train split is not available")
    assert "stands in for it" in lines[0]
    assert len(pool) == 1000 and len(evaluation) == 500
    for dataset in (pool, evaluation):
        assert "embedded 5k sample" in dataset.description and "unavailable" in dataset.description
    sample_pool, _ = load_experiment_data("mnist-sample", 1000, 500, seed=0)
    assert torch.equal(pool.images, sample_pool.images)


@pytest.mark.parametrize("pool_size, eval_size", [(10_000, 500), (1000, None)])
def test_mnist_without_files_raises_when_the_sample_is_too_small(tmp_path, pool_size, eval_size):
    with pytest.raises(DataUnavailableError, match="stands in only for pool_size <= 4000"):
        load_experiment_data("mnist", pool_size, eval_size, seed=0, root=tmp_path)


def test_experiment_subsets_are_seeded_and_sized():
    train = load_dataset("mnist-sample", "train")
    pool, evaluation = load_experiment_data("mnist-sample", 300, 100, seed=7)
    assert len(pool) == 300 and len(evaluation) == 100
    same_pool, same_evaluation = load_experiment_data("mnist-sample", 300, 100, seed=7)
    assert torch.equal(pool.images, same_pool.images) and torch.equal(evaluation.labels, same_evaluation.labels)
    other_pool, _ = load_experiment_data("mnist-sample", 300, 100, seed=8)
    assert not torch.equal(pool.images, other_pool.images)
    # The pool is drawn without replacement from the train split; evaluation from the test split.
    train_rows = {row.numpy().tobytes(): i for i, row in enumerate(train.images.flatten(1))}
    picked = [train_rows.get(row.numpy().tobytes()) for row in pool.images.flatten(1)]
    assert None not in picked and len(set(picked)) == 300
    test_rows = {row.numpy().tobytes() for row in load_dataset("mnist-sample", "test").images.flatten(1)}
    assert all(row.numpy().tobytes() in test_rows for row in evaluation.images.flatten(1))
    _, whole = load_experiment_data("mnist-sample", 300, None, seed=7)
    assert len(whole) == 1000


def test_experiment_uses_the_validation_split_of_medmnist(tmp_path):
    write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=40, n_val=15, n_test=10)
    pool, evaluation = load_experiment_data("chestmnist", 25, None, seed=0, root=tmp_path, download=False)
    val = load_dataset("chestmnist", "val", root=tmp_path, download=False)
    assert len(pool) == 25 and torch.equal(evaluation.images, val.images) and pool.task == MULTILABEL
    with pytest.raises(ValueError, match="pool_size=41 exceeds the 40 images of chestmnist's train split"):
        load_experiment_data("chestmnist", 41, None, seed=0, root=tmp_path, download=False)


def test_impossible_sizes_fail_before_any_file_is_needed(tmp_path):
    # The root is empty: a ValueError (not DataUnavailableError) shows sizes are checked first.
    with pytest.raises(ValueError, match="pool_size=70000 exceeds the 60000 images of mnist's train split"):
        load_experiment_data("mnist", 70_000, 100, seed=0, root=tmp_path)
    with pytest.raises(ValueError, match="eval_size=1001 exceeds .* test split.*pass None"):
        load_experiment_data("mnist-sample", 100, 1001, seed=0)
    with pytest.raises(ValueError, match="pool_size must be positive"):
        load_experiment_data("mnist-sample", 0, 10, seed=0)


def test_colour_labels_are_classes_or_any_finding(tmp_path):
    from alvae_utils.data.datasets import load_dataset
    from alvae_utils.analysis.plots import colour_labels

    digits = load_dataset("mnist-sample", "test")
    colours, names = colour_labels(digits)
    assert torch.equal(colours, digits.labels) and names == digits.class_names
    write_medmnist_npz(tmp_path / "chestmnist.npz", 20, 10, 10)
    chest = load_dataset("chestmnist", "val", root=tmp_path, download=False)
    colours, names = colour_labels(chest)
    assert colours.tolist() == (chest.labels.sum(1) > 0).long().tolist() and len(names) == 2


def test_generated_medmnist_files_are_labelled_synthetic(tmp_path):
    from alvae_utils.data.datasets import load_dataset

    path = write_medmnist_npz(tmp_path / "chestmnist.npz", 20, 10, 10)
    chest = load_dataset("chestmnist", "train", root=tmp_path, download=False)
    assert chest.description.startswith("synthetic ChestMNIST-format data")
    # The same arrays without the marker, as in a real MedMNIST file, read as the real dataset.
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in stored.files if key != medmnist_2d.SYNTHETIC_MARKER}
    np.savez(path, **arrays)
    assert load_dataset("chestmnist", "train", root=tmp_path, download=False).description \
        == "ChestMNIST-format local file (not the published MedMNIST v2 release)"


def _medmnist_arrays(flag: str, n: int = 12) -> dict:
    path = write_medmnist_npz(f"/tmp/alvae-contract-{flag}.npz", n_train=n, n_val=n, n_test=n, flag=flag)
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files if key != medmnist_2d.SYNTHETIC_MARKER}


@pytest.mark.parametrize("flag, damage, message", [
    ("pathmnist", lambda a: a.update(train_images=a["train_images"].astype(np.float32) / 255),
     r"train_images is float32 with values in \[0, 0.98\d*\], expected uint8 pixel values 0–255"),
    ("chestmnist", lambda a: a.update(val_images=a["val_images"].astype(np.float32)),
     r"val_images is float32 with values in \[\d+, \d+\], expected uint8"),
    ("chestmnist", lambda a: a.update(test_labels=a["test_labels"][:-1]),
     r"test_labels is of shape \(11, 14\), expected \(12, 14\): one row per image"),
    ("chestmnist", lambda a: a.update(train_labels=a["train_labels"] * 2),
     r"train_labels is in \[0, 2\], expected 0/1 per label"),
    ("pathmnist", lambda a: a.update(val_labels=a["val_labels"] + 9),
     r"val_labels is in \[9, \d+\], expected classes 0 … 8"),
    ("chestmnist", lambda a: a.pop("val_labels"), "val_labels is missing"),
    ("pathmnist", lambda a: a.update(train_images=a["train_images"][..., 0]),
     r"train_images is of shape \(12, 28, 28\), expected \(N, 28, 28, 3\)"),
])
def test_a_file_that_breaks_the_medmnist_contract_is_refused_at_load(tmp_path, flag, damage, message):
    arrays = _medmnist_arrays(flag)
    damage(arrays)
    np.savez(tmp_path / f"{flag}.npz", **arrays)
    with pytest.raises(DataCorruptedError, match=message) as error:
        load_experiment_data(flag, 5, 5, seed=0, root=tmp_path, download=False)
    assert str(tmp_path / f"{flag}.npz") in str(error.value)


def test_a_64_pixel_file_under_the_28_pixel_name_is_named_as_the_size_variant(tmp_path):
    arrays = _medmnist_arrays("chestmnist")
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.repeat(np.repeat(arrays[f"{split}_images"], 2, axis=1), 2, axis=2)
        arrays[f"{split}_images"] = np.pad(arrays[f"{split}_images"], ((0, 0), (4, 4), (4, 4)))
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    with pytest.raises(DataCorruptedError, match=r"holds 64×64 images: it is MedMNIST\+'s chestmnist_64.npz"):
        load_dataset("chestmnist", "train", root=tmp_path, download=False)
