"""The whole closed loop at toy size: world -> rankers -> reward -> RG-SFT -> aligner -> RG-CL -> calibration."""
import json
import math

import pytest

from rgalign_rl.run import run

CONFIG = "recipes/configs/shopsim_tiny.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["dpo", "ppo"])
def test_closed_loop_runs_end_to_end(tiny_world, tmp_path, algorithm):
    out = tmp_path / algorithm
    metrics = run(CONFIG, str(tiny_world), str(out), overrides=[f"align.algorithm={algorithm}"], log=lambda *a: None)
    names = [s["name"] for s in metrics["stages"]]
    assert names == ["two_tower", "qe_rec", "rg_sft", algorithm, "final", "oracle"]
    for s in metrics["stages"]:
        for k in ("gauc", "error_rate", "recall@3", "ndcg@3", "mrr"):
            assert 0.0 <= s[k] <= 1.0 and math.isfinite(s[k]), (s["name"], k, s[k])
    for s in metrics["stages"][1:5]:
        assert 0.0 <= s["degenerate_share"] <= 1.0 and set(s["need_accuracy"]) >= {"overall", "biased", "other"}
    assert json.loads((out / "metrics.json").read_text())["stages"][0]["name"] == "two_tower"
    assert "kl_to_ref" in metrics["stages"][3]
    with pytest.raises(SystemExit, match="--resume"):
        run(CONFIG, str(tiny_world), str(out), log=lambda *a: None)
