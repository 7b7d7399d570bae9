"""bench/gpu_check.sh, the prepared GPU check, as CI's CPU dry run: it must run whenever a GPU is lent."""
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
