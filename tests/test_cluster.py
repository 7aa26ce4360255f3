"""The Slurm template (cluster/slurm-ray.sbatch) run against stand-ins for srun, scontrol, ray and make.

The stand-ins record how they were called, so the test checks Ray's pattern: the head on the
first node, a worker on each other node attached to the head, then ``make figures`` attached to
that cluster, under token authentication.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "cluster" / "slurm-ray.sbatch"

STANDINS = {
    "scontrol": 'printf "gpu-a\\ngpu-b\\ngpu-c\\n"',
    # `srun ... hostname --ip-address` answers with the node's addresses, IPv6 first (the template must pick the
    # IPv4 one); any other step is recorded.
    "srun": 'case " $* " in *" hostname --ip-address "*) echo "fe80::1 10.1.2.3";; '
            '*) echo "srun $*" >> "$CALLS";; esac',
    "ray": 'echo "ray $*" >> "$CALLS"',
    "make": 'echo "make $* auth=$RAY_AUTH_MODE token=${#RAY_AUTH_TOKEN}" >> "$CALLS"',
}


def test_the_slurm_template_starts_the_head_then_workers_then_figures_attached(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STANDINS.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    submit = tmp_path / "repo"
    (submit / ".venv" / "bin").mkdir(parents=True)
    (submit / ".venv" / "bin" / "activate").write_text("")
    calls = tmp_path / "calls.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "MAKE": str(bin_dir / "make"),
           "SLURM_SUBMIT_DIR": str(submit), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-[a-c]",
           "SLURM_GPUS_PER_TASK": "4", "SLURM_CPUS_PER_TASK": "32", "HOME": str(tmp_path)}

    result = subprocess.run(["bash", str(TEMPLATE)], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    address = "10.1.2.3:24242"  # the head's first address; the port follows the job id
    head = next(line for line in lines if "--head" in line)
    assert head.startswith("srun --nodes=1 --ntasks=1 --cpus-per-task=32 --gpus-per-task=4 -w gpu-a "
                           "ray start --head --block")
    assert "--node-ip-address=10.1.2.3 --port=24242" in head and "--num-gpus=4" in head
    assert "--include-dashboard=false" in head
    workers = [line for line in lines if f"--address={address}" in line and line.startswith("srun")]
    assert sorted(line.split(" -w ")[1].split()[0] for line in workers) == ["gpu-b", "gpu-c"]
    make = [line for line in lines if line.startswith("make")]
    assert make == [f"make figures PROFILE=paper EXECUTOR=ray RAY_ADDRESS={address} GPUS_PER_RUN=0.25 "
                    "CPUS_PER_RUN=2 auth=token token=64"]
    # (The srun steps run in the background, so their lines may come in any order.)
    assert f"ray status --address={address}" in lines  # the script waits for the head before anything attaches


def test_the_slurm_template_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(TEMPLATE, os.R_OK)
