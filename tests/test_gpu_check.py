"""bench/gpu_smoke.sh, the prepared GPU check for a 15-minute device lease, as CI's CPU dry run: it must run
whenever a GPU is lent. The dry run is the same single launch (`accelerate launch -m rgalign_rl.cli compare
--algos dpo,ppo`, DeepSpeed ZeRO-3 with every weight partitioned, LoRA on) on two CPU processes with CUDA hidden,
then the determinism mismatch rates and the table. It is also the suite's ZeRO-3-for-real test (issue 27): DPO and
PPO with LoRA save the base model's shapes (they saved 21 tensors of shape (0,) before the shards were gathered),
PPO runs after TRL's SFT in one process, and compare runs under ZeRO-3; then PPO as the first trainer of a
resumed run, with the probe on. (bench/gpu_check.sh, the longer optional check, has no dry run here.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shapes(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as h:
        return {k: tuple(h.get_slice(k).get_shape()) for k in h.keys()}


@pytest.mark.slow(seconds=230)
def test_gpu_smoke_dry_run_on_cpu(tmp_path):
    out = tmp_path / "g"
    # CUDA hidden: a CPU dry run (on a GPU machine it would otherwise take the GPU; only tests marked gpu may)
    env = {**os.environ, "DRY_RUN": "1", "NPROC": "2", "OMP_NUM_THREADS": "1", "PORT": "29700",
           "CUDA_VISIBLE_DEVICES": "", "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_ext")}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_smoke.sh"), str(out)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=1200)
    failure = out / "failure.txt"  # the launch's first traceback, when it failed
    assert r.returncode == 0, (failure.read_text() if failure.exists() else "") + r.stdout[-3000:] + r.stderr[-2000:]
    assert f"{out}/cmp/seed0/shared/log.jsonl" in r.stdout  # it says where the per-stage records go
    table = (out / "table.md").read_text()
    assert table.startswith("device: cpu")
    for algo in ("dpo", "ppo"):
        assert f"| {algo} | round1/{algo} |" in table and f"| {algo} | round1/calibrate |" in table
        assert f"| {algo} | yes (" in table  # saved shapes = RG-SFT's
    assert "| shared | round1/rg_sft |" in table and "| ppo | qe_rec |" not in table  # one shared prefix

    cmp = out / "cmp" / "seed0"
    for run, stage in (("shared", "reasoner_warm"), ("shared", "round1/rg_sft"), ("dpo", "round1/dpo"),
                       ("ppo", "round1/ppo")):
        engine = json.loads((cmp / run / stage / "engine.json").read_text())
        assert (engine["distributed_type"], engine["zero_stage"], engine["num_processes"]) == ("DEEPSPEED", 3, 2), stage
    assert json.loads((out / "ds3.json").read_text())["zero_optimization"]["stage3_param_persistence_threshold"] == 0
    base = shapes(cmp / "shared" / "round1" / "rg_sft" / "model.safetensors")
    for algo in ("dpo", "ppo"):  # LoRA merged after the ZeRO-3 shards were gathered: whole tensors
        got = shapes(cmp / algo / "round1" / algo / "model.safetensors")
        assert got == base and all(0 not in s for s in got.values()), algo
    for algo in ("dpo", "ppo"):
        stages = [s["name"] for s in json.loads((cmp / algo / "metrics.json").read_text())["stages"]]
        assert algo in stages and "final" in stages

    assert "## Determinism: mismatch rates on this device" in table
    det = json.loads((out / "determinism.json").read_text())
    checks = {(row["check"], row["dtype"]) for row in det["rows"]}
    for dtype in ("float32", "bfloat16"):
        assert ("greedy query: alone vs in the batch", dtype) in checks
        assert ("last-token embedding: alone vs in the batch", dtype) in checks
    assert ("text vector: alone vs in the batch", "float32") in checks
    for row in det["rows"]:
        assert row["rows"] > 0 and 0.0 <= row["share"] <= 1.0 and f"| {row['check']} | {row['dtype']} |" in table
    # on CPU the batching rule holds (tests/test_determinism.py asserts it exactly on its own rows)
    assert all(row["differing"] == 0 for row in det["rows"]), det["rows"]
    times = json.loads((out / "times.json").read_text())
    assert times["launch_rc"] == 0 and times["determinism_rc"] == 0

    # PPO as the first trainer of a process (a run resumed after RG-SFT): transformers' global ZeRO-3 flag is unset
    # then; the probe must still step aside on shards (it generated on one rank and hung), PPO must keep DeepSpeed
    # and state its own batch sizes. dist_timeout_s=120: a hang fails in 2 minutes.
    import shutil

    first = tmp_path / "ppo_first"
    shutil.copytree(cmp / "shared", first)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(out / "acc3.yaml"), "--main_process_port", "29702",
           "-m", "rgalign_rl.cli", "run", "--config", "recipes/configs/shopsim_tiny.yaml", "--world", str(out / "world"),
           "--out", str(first), "--resume", "--until", "round1/ppo", "align.algorithm=ppo", "align.ppo.lora=true",
           "align.reward_budget=8", "dist_timeout_s=120", "log.progress=false"]  # one rollout (the budget sets PPO's
    # rollouts: budget // batch_size): that it runs, not what it learns
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "RGALIGN_CACHE": str(out / "cache")}, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    engine = json.loads((first / "round1" / "ppo" / "engine.json").read_text())
    assert (engine["distributed_type"], engine["zero_stage"], engine["num_processes"]) == ("DEEPSPEED", 3, 2)
    assert shapes(first / "round1" / "ppo" / "model.safetensors") == base
    ppo = {s["name"]: s for s in json.loads((first / "metrics.json").read_text())["stages"]}["ppo"]
    assert ppo["train_log"] and ppo["curve"] == []  # trained; the probe stepped aside on shards
