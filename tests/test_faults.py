"""Faults: a stage without DPO pairs, with a non-finite loss, or with a collapsed sampler rolls back to its
starting reasoner with the reason (step or sample ids) and the loop goes on, or stops as eval.on_fault says;
a run SIGKILLed during Best-of-N scoring, inside a trainer, inside DPO or during calibration resumes to the
same metrics as an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import CONFIG, PREFIX, copy_run
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
def test_a_collapsed_sampler_is_rolled_back_naming_samples(one_process_run, tiny_world, tmp_path, monkeypatch):
    import rgalign_rl.align.evaluate as evaluation

    # forced, not hoped for: every query the stages write reads as degenerate to the stage check
    monkeypatch.setattr(evaluation, "is_degenerate", lambda q: True)
    monkeypatch.setattr(evaluation, "degenerate_share", lambda queries: 1.0)
    said = []
    m = from_rg_sft(one_process_run, tiny_world, tmp_path / "run", [], said)
    assert stage(m, "dpo")["rolled_back"]
    assert any("[round1/dpo] rolled back (degenerate" in line and "e.g. samples" in line for line in said)


def _state(out):
    return json.loads((out / "state.json").read_text())["done"]


@pytest.mark.slow(seconds=70)
def test_killed_at_every_point_then_resumed_gives_the_same_metrics(one_process_run, tiny_world, tmp_path):
    """One run SIGKILLed four times, at each place a user's job can die, and resumed each time: during Best-of-N
    scoring, inside RG-SFT's trainer (right after a checkpoint; the warm start's is the same SFT trainer), inside
    DPO (from outside, at its first checkpoint), and in the final calibration. It ends with the metrics of the
    uninterrupted run, to the last digit. It starts from that run's stages up to the control (copy_run): every
    stage after them is trained here."""
    out = copy_run(one_process_run[0], tmp_path / "run", keep=PREFIX)
    cmd = [sys.executable, "-m", "rgalign_rl.cli", "run", "--config", CONFIG, "--world", str(tiny_world),
           "--out", str(out), "--resume", "best_of_n.score_batch=400"]  # scoring in several batches: killed between two
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def killed_at(point, done_before, not_done):
        r = subprocess.run(cmd, env={**env, "RGALIGN_KILL_AT": point}, capture_output=True, text=True)
        assert r.returncode == -signal.SIGKILL, (point, r.stderr[-2000:])
        state = _state(out)
        assert done_before in state and not_done not in state, (point, list(state))

    killed_at("best_of_n.scoring", "control", "round1/rg_sft")
    killed_at("trainer.saved", "control", "round1/rg_sft")
    assert any((c / "trainer_state.json").exists() for c in (out / "round1" / "rg_sft.trainer").glob("checkpoint-*"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # inside DPO: killed from outside at its first checkpoint
    ckpt, deadline = out / "round1" / "dpo.trainer", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if any((c / "trainer_state.json").exists() for c in ckpt.glob("checkpoint-*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before a DPO checkpoint appeared"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "round1/rg_sft" in _state(out) and "round1/dpo" not in _state(out)
    killed_at("calibrate.trained", "round1/rg_cl", "round1/calibrate")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "done earlier, skipped" in resumed.stdout
    got = json.loads((out / "metrics.json").read_text())["stages"]
    ref = one_process_run[1]["stages"]
    assert [s["name"] for s in got] == [s["name"] for s in ref]
    for a, b in zip(ref, got):
        for k in (*HEADLINE, "need_accuracy", "kl_to_ref", "reward_calls", "pairs", "degenerate_share"):
            if a.get(k) is None:
                assert b.get(k) is None, (a["name"], k)
            else:
                assert b.get(k) == pytest.approx(a[k], rel=1e-9, abs=1e-12), (a["name"], k)
    dpo = [s for s in got if s["name"] == "dpo"][0]
    assert [p["step"] for p in dpo["curve"]] == [p["step"] for p in [s for s in ref if s["name"] == "dpo"][0]["curve"]]
