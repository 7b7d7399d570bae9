"""Faults: a stage without DPO pairs, with a non-finite loss, or with a collapsed sampler rolls back to its
starting reasoner with the reason (step or sample ids) and the loop goes on, or stops as eval.on_fault says;
a run SIGKILLed inside the warm start, during Best-of-N scoring or during calibration resumes to the same
metrics as an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import CONFIG
from rgalign_rl.compare import SHARED
from rgalign_rl.faults import StageFault
from rgalign_rl.run import run

HEADLINE = ("gauc", "recall@3", "ndcg@3", "mrr", "valid_reward")


def from_rg_sft(one_process_run, tiny_world, out, overrides, said=None):
    """The tiny loop from the finished run's RG-SFT on (the aligner, RG-CL and calibration run again)."""
    done = json.loads((one_process_run[0] / "state.json").read_text())["done"]
    shutil.copytree(one_process_run[0] / "scores", out / "scores")  # as `rgalign compare` hands them on
    return run(CONFIG, str(tiny_world), str(out), overrides=overrides, log=(said if said is not None else []).append,
               seed_state={k: done[k] for k in SHARED})


def stage(metrics, name):
    return next(s for s in metrics["stages"] if s["name"] == name)


@pytest.mark.slow
@pytest.mark.parametrize("override,reason", [
    ("align.dpo.min_margin=10", "StageFault: DPO has no preference pair"),
    ("align.dpo.learning_rate=1e30", "NonFiniteError: the policy's weights are not finite after step"),
])
def test_a_faulty_aligner_rolls_back_and_the_loop_goes_on(override, reason, one_process_run, tiny_world, tmp_path):
    said = []
    m = from_rg_sft(one_process_run, tiny_world, tmp_path / "run", [override], said)
    dpo, rg_sft = stage(m, "dpo"), stage(m, "rg_sft")
    assert dpo["rolled_back"] and dpo["fault"].startswith(reason), dpo.get("fault")
    assert any("fault:" in line and "rolled back" in line for line in said), said
    assert [dpo[k] for k in HEADLINE] == [rg_sft[k] for k in HEADLINE]  # it serves RG-SFT's reasoner
    assert "final" in [s["name"] for s in m["stages"]]
    with pytest.raises(StageFault, match=reason.split(": ", 1)[1]):  # or the config says stop
        from_rg_sft(one_process_run, tiny_world, tmp_path / "stop", [override, "eval.on_fault=stop"])


@pytest.mark.slow
def test_a_collapsed_sampler_is_rolled_back_naming_samples(one_process_run, tiny_world, tmp_path):
    said = []
    m = from_rg_sft(one_process_run, tiny_world, tmp_path / "run", ["eval.max_degenerate=-1"], said)
    assert stage(m, "dpo")["rolled_back"]
    assert any("[round1/dpo] rolled back (degenerate" in line and "e.g. samples" in line for line in said)


@pytest.mark.slow
@pytest.mark.parametrize("point,extra", [("trainer.saved", []), ("best_of_n.scoring", ["best_of_n.score_batch=400"]),
                                         ("calibrate.trained", [])])
def test_killed_at_a_point_then_resumed_gives_the_same_metrics(point, extra, one_process_run, tiny_world, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rgalign_rl.cli", "run", "--config", CONFIG, "--world", str(tiny_world),
           "--out", str(out), *extra]
    killed = subprocess.run(cmd, env={**os.environ, "RGALIGN_KILL_AT": point}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = {s["name"]: s for s in json.loads((out / "metrics.json").read_text())["stages"]}
    for ref in one_process_run[1]["stages"]:
        for k in HEADLINE:
            want = ref.get(k)
            assert got[ref["name"]].get(k) == (None if want is None else pytest.approx(want, rel=1e-9)), (ref["name"], k)
