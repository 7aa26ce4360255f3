"""Fixtures shared by the test modules."""

import logging
import os

import pytest


@pytest.fixture
def spy(monkeypatch):
    """Wrap ``module.name`` so its calls are counted, and optionally interrupted at the n-th call.

    ``spy(loop, "train_task_model", interrupt_at=2)`` returns a dict whose ``"n"`` counts the
    calls; the n-th call raises KeyboardInterrupt, as a kill would, and ``restore()`` puts the
    original back (the monkeypatch undoes it at the end of the test anyway).
    """

    def install(module, name, interrupt_at=None):
        real = getattr(module, name)
        calls = {"n": 0}

        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                raise KeyboardInterrupt(f"simulated kill at call {interrupt_at} of {name}")
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)
        calls["restore"] = lambda: monkeypatch.setattr(module, name, real)
        return calls

    return install


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray session for every test that needs one (it takes 10-25 s to start on 2 cores).

    4 logical CPUs and 2 logical GPUs: enough to see runs overlap and be packed by GPU
    fraction on a CPU machine. Bound to 127.0.0.1 (the variable is read when Ray is
    imported); stopped with ``ray.shutdown()``, which stops only this session.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
