"""Fixtures shared by the test modules."""

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
