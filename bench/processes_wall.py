"""Wall time of the tiny loop as 1 process x 2 threads vs 2 processes x 1 thread (torchrun), alternating,
each run with an empty cache and a fresh run folder; prints every run, the medians, the ratio, and each
stage's median wall time. The two must be within 1.5x (issue 15): N processes must not run stages twice.

    python bench/processes_wall.py [--repeats 3] [--world DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "shopsim_tiny.yaml"


def one_run(procs: int, world: Path, tmp: Path, k: int) -> tuple[float, dict]:
    out = tmp / f"p{procs}_{k}"
    env = {**os.environ, "RGALIGN_CACHE": str(tmp / f"cache_p{procs}_{k}"), "OMP_NUM_THREADS": str(2 // procs)}
    if procs == 1:
        cmd = [sys.executable, "-m", "rgalign_rl.cli", "run"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
               str(29650 + k), str(ROOT / "recipes" / "rgalign.py")]
    cmd += ["--config", str(CONFIG), "--world", str(world), "--out", str(out), "log.progress=false"]
    t = time.time()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    wall = time.time() - t
    stages = {r["stage"]: r["wall_s"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
              if "wall_s" in r and not r["stage"].endswith("/eval")}
    return wall, stages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--world")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        world = Path(a.world) if a.world else tmp / "world"
        if not a.world:
            subprocess.run([sys.executable, "-m", "rgalign_rl.cli", "world", "shopsim", "--out", str(world), "--size",
                            "tiny", "--seed", "0"], check=True, capture_output=True)
        walls = {1: [], 2: []}
        stages = {1: [], 2: []}
        for k in range(a.repeats):
            for procs in (1, 2):
                w, s = one_run(procs, world, tmp, k)
                walls[procs].append(w)
                stages[procs].append(s)
                print(f"run {k}: {procs} process(es) x {2 // procs} thread(s): {w:.1f} s", flush=True)
    m1, m2 = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"\nmedian of {a.repeats}: 1 x 2 threads {m1:.1f} s, 2 x 1 thread {m2:.1f} s, ratio {m2 / m1:.2f}")
    print("\n| stage | 1 process s | 2 processes s |\n| --- | --- | --- |")
    for name in stages[1][0]:
        print(f"| {name} | {statistics.median(s[name] for s in stages[1]):.1f} | "
              f"{statistics.median(s.get(name, float('nan')) for s in stages[2]):.1f} |")


if __name__ == "__main__":
    main()
