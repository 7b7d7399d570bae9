"""The recipe under `accelerate launch` with the default config (one process); the DeepSpeed ZeRO-2/3 configs
run with two processes in tests/test_two_processes.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_recipe_runs_under_accelerate_launch(tiny_world, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_config.yaml"),
           str(ROOT / "recipes" / "rgalign.py"), "--config", str(ROOT / "recipes/configs/shopsim_tiny.yaml"),
           "--world", str(tiny_world), "--out", str(out), "align.algorithm=dpo"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = [s["name"] for s in json.loads((out / "metrics.json").read_text())["stages"]]
    assert stages[-4:] == ["final", "control", "headroom", "oracle"]
    for stage in ("reasoner_warm", "round1/rg_sft", "round1/dpo"):  # the TRL stages ran as one plain process
        engine = json.loads((out / stage / "engine.json").read_text())
        assert (engine["distributed_type"], engine["zero_stage"], engine["num_processes"]) == ("NO", None, 1)
