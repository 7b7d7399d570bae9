"""bench/gpu_check.sh, the prepared GPU check, as CI's CPU dry run: it must run whenever a GPU is lent. Its dry run
is also the recipe under `accelerate launch` with the default config (one process); the DeepSpeed ZeRO-2/3
configs run with two processes in tests/test_two_processes.py."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OMP_NUM_THREADS": "2", "PORT": "29700"}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "g")], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    table = (tmp_path / "g" / "table.md").read_text()
    assert table.startswith("device: cpu")
    for algo in ("dpo", "ppo"):
        assert f"| accelerate_config | {algo} | **final GAUC** |" in table
        assert f"| accelerate_config | {algo} | round1/{algo} |" in table
    assert "| accelerate_config | ppo | qe_rec |" not in table  # the aligners share the stages before them
    run = tmp_path / "g" / "accelerate_config" / "dpo"
    stages = [s["name"] for s in json.loads((run / "metrics.json").read_text())["stages"]]
    assert stages[-4:] == ["final", "control", "headroom", "oracle"]
    for stage in ("reasoner_warm", "round1/rg_sft", "round1/dpo"):  # the TRL stages ran as one plain process
        engine = json.loads((run / stage / "engine.json").read_text())
        assert (engine["distributed_type"], engine["zero_stage"], engine["num_processes"]) == ("NO", None, 1)
