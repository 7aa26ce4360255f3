"""What produced a number is recorded: the data's content in every key, the software in every run's state."""

import hashlib
import json

import medmnist
import numpy as np
import torch

from alvae_utils.data import medmnist_2d
from alvae_utils.data.datasets import load_dataset, load_experiment_data
from alvae_utils.data.fixtures import write_medmnist_npz
from alvae_utils.experiment.loop import run_algorithm1
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.results import ResultStore, data_fingerprint, run_key
from alvae_utils.training.vae import checkpoint_path

CPU_1 = {"device": "cpu", "torch_threads": 1}


def _strip_marker(path):
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in stored.files if key != medmnist_2d.SYNTHETIC_MARKER}
    np.savez(path, **arrays)


def test_a_replaced_file_of_the_same_shape_gives_new_run_and_vae_keys(tmp_path):
    experiment, _ = get_profile("ci").experiment_for("breastmnist")
    keys = []
    for seed in (1, 2):  # two different files of the same name and shape
        write_medmnist_npz(tmp_path / "breastmnist.npz", n_train=300, n_val=100, n_test=50, flag="breastmnist",
                           seed=seed)
        _strip_marker(tmp_path / "breastmnist.npz")
        pool, evaluation = load_experiment_data("breastmnist", 200, 50, seed=0, root=tmp_path, download=False)
        keys.append((run_key(experiment, Method("coreset"), 0, pool.description, data_fingerprint(pool, evaluation)),
                     checkpoint_path(pool, experiment.vae, 0, CPU_1, root=tmp_path), pool.description))
    (run_a, vae_a, description_a), (run_b, vae_b, description_b) = keys
    assert description_a == description_b, "same name, same shape: the description cannot tell them apart"
    assert run_a != run_b and vae_a != vae_b


def test_the_fingerprint_is_the_content_and_is_computed_once_per_load():
    pool, evaluation = load_experiment_data("mnist-sample", 100, 20, seed=0)
    again, _ = load_experiment_data("mnist-sample", 100, 20, seed=0)
    other, _ = load_experiment_data("mnist-sample", 100, 20, seed=1)
    assert pool.fingerprint == again.fingerprint != other.fingerprint
    assert "fingerprint" in vars(pool), "cached on the loaded dataset"
    flipped = pool.subset(torch.arange(len(pool)))
    flipped.images[0, 0, 0, 0] ^= 1
    assert flipped.fingerprint != pool.fingerprint


def test_medmnist_files_say_whether_they_are_the_published_release(tmp_path, monkeypatch):
    path = write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=20, n_val=10, n_test=10)
    _strip_marker(path)
    local = load_dataset("chestmnist", "val", root=tmp_path, download=False)
    assert local.description == "ChestMNIST-format local file (not the published MedMNIST v2 release)"
    info = {**medmnist.INFO["chestmnist"], "MD5": hashlib.md5(path.read_bytes()).hexdigest()}
    monkeypatch.setitem(medmnist.INFO, "chestmnist", info)
    assert load_dataset("chestmnist", "val", root=tmp_path, download=False).description \
        == "ChestMNIST (MedMNIST v2, published file)"


def test_every_run_records_what_produced_it(tmp_path):
    experiment, _ = get_profile("ci").experiment_for("mnist-sample")
    experiment = experiment.__class__(**{**vars(experiment), "pool_size": 40, "eval_size": 20, "max_labels": 20})
    pool, evaluation = load_experiment_data("mnist-sample", 40, 20, seed=0)
    store = ResultStore("t", root=tmp_path)
    run_algorithm1(experiment, Method("random"), 0, pool, evaluation, store, device=torch.device("cpu"),
                   progress=False)
    (state_path,) = tmp_path.rglob("*.state.json")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    produced = state["produced_by"]
    assert produced["torch"] == torch.__version__ and produced["device"] == "cpu"
    assert produced["torch_threads"] == torch.get_num_threads() and produced["alvae"] == "0.1.0"
    assert "git_commit" in produced
    assert state["data_fingerprint"] == data_fingerprint(pool, evaluation)
