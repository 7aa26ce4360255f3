"""benchmarks/gpu_check.py: its logic runs on the CPU at tiny sizes, so it is ready when a GPU is lent."""

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from alvae_utils.device import pinned_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check  # noqa: E402


def test_every_check_runs_on_the_cpu_at_tiny_sizes(tmp_path, ray_cluster, capsys):
    with pinned_threads(1):  # as the benchmark part measures; two threads on a busy 2-core machine crawl
        status = gpu_check.main(["--device", "cpu", "--tiny", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    (result,) = tmp_path.glob("gpu-check-*.json")
    stored = json.loads(result.read_text())
    checks = {check["name"]: check for check in stored["checks"]}
    assert {name: check["status"] for name, check in checks.items()} == {
        "numbers": "pass", "resume": "pass", "ray": "pass", "syncs": "skipped", "bench": "pass"}, out[-3000:]
    assert status == 0 and stored["tiny"]
    assert checks["numbers"]["numbers"]["differing_rows"] == 0 and checks["resume"]["numbers"]["differing_rows"] == 0
    placements = checks["ray"]["numbers"]["placements"]
    assert len({p["pid"] for p in placements}) == 2 and all(p["gpu"] == p["gpu_ids"][0] for p in placements)
    throughput = tmp_path / checks["bench"]["numbers"]["throughput_file"]
    assert json.loads(throughput.read_text())["training"], "the benchmark wrote the file the projection read"
    assert checks["bench"]["numbers"]["projected_seconds"]["fp32"] > 0
    assert "| check | result | what it found | seconds |" in out and "| numbers | pass |" in out


def test_cuda_syncs_are_counted_from_the_warnings_of_torchs_sync_debug_mode(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def work():  # what torch warns at each synchronisation in "warn" mode
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)
        warnings.warn("something else", UserWarning, stacklevel=2)

    assert gpu_check.count_cuda_syncs(work) == 3
    assert modes == ["warn", 0], "the mode is restored"
    with pytest.raises(ZeroDivisionError):
        gpu_check.count_cuda_syncs(lambda: 1 / 0)
    assert modes[-1] == 0
