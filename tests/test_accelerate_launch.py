"""The recipe under `accelerate launch`: the default config and DeepSpeed ZeRO-2 / ZeRO-3 (one CPU process; the
ZeRO-3 run's DPO uses LoRA, whose adapters are merged into weights that ZeRO-3 partitions)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("launch_config", ["accelerate_config.yaml", "recipes/accelerate/deepspeed_zero2.yaml",
                                           "recipes/accelerate/deepspeed_zero3.yaml"])
def test_recipe_runs_under_accelerate_launch(tiny_world, tmp_path, launch_config):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_ext"), "OMP_NUM_THREADS": "2"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / launch_config),
           str(ROOT / "recipes" / "rgalign.py"), "--config", str(ROOT / "recipes/configs/shopsim_tiny.yaml"),
           "--world", str(tiny_world), "--out", str(out), "align.algorithm=dpo"]
    lora = launch_config.endswith("zero3.yaml")
    cmd += ["align.dpo.lora=true"] if lora else []
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = [s["name"] for s in json.loads((out / "metrics.json").read_text())["stages"]]
    assert stages[-4:] == ["final", "control", "headroom", "oracle"]
    # the TRL stages really ran inside the engine the launch config asked for
    expected = {"accelerate_config.yaml": ("NO", None), "recipes/accelerate/deepspeed_zero2.yaml": ("DEEPSPEED", 2),
                "recipes/accelerate/deepspeed_zero3.yaml": ("DEEPSPEED", 3)}[launch_config]
    for stage in ("reasoner_warm", "round1/rg_sft", "round1/dpo"):
        engine = json.loads((out / stage / "engine.json").read_text())
        assert (engine["distributed_type"], engine["zero_stage"]) == expected, (stage, engine)
    if lora:  # the merged model is whole: every tensor saved, only the adapted projections moved
        from safetensors.torch import load_file

        before, after = (load_file(out / "round1" / stage / "model.safetensors") for stage in ("rg_sft", "dpo"))
        assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), moved
