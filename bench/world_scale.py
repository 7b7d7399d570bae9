"""How world handling grows with the logs: wall time and peak RSS of each command at ShopSim sizes.

    python bench/world_scale.py [--sizes default,large,huge] [--repeats 1] [--out runs/world_scale]

Each command runs in its own process (`/usr/bin/time`-style: the child's peak RSS from wait4), one at a time,
with the threads the Makefile sets: world generation, `world validate`, `world stats --json --headroom off`
and `ranker train --arch two_tower --queries none`. Prints one markdown row per (size, command) with the
median wall time over the repeats, the peak RSS, and the requests per second.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "generate": ["world", "shopsim", "--out", "{world}", "--seed", "0", "--size", "{size}"],
    "validate": ["world", "validate", "{world}"],
    "stats": ["world", "stats", "{world}", "--json", "--headroom", "off"],
    "two_tower": ["ranker", "train", "--world", "{world}", "--arch", "two_tower", "--queries", "none", "--out", "{out}/tt_{size}"],
}


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS GB) of one child process."""
    t = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "rgalign_rl.cli", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: rgalign {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="default,large,huge")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="runs/world_scale")
    ap.add_argument("--commands", default=",".join(COMMANDS))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| size | requests | command | wall s (median) | peak RSS GB | requests/s |\n|---|---|---|---|---|---|", flush=True)
    for size in a.sizes.split(","):
        world = out / f"world_{size}"
        n = None
        for name in a.commands.split(","):
            walls, peaks = [], []
            for _ in range(a.repeats):
                w, p = run([x.format(world=world, size=size, out=out) for x in COMMANDS[name]])
                walls.append(w)
                peaks.append(p)
            if n is None:
                n = sum(1 for _ in open(world / "samples.jsonl"))
            wall = statistics.median(walls)
            rows.append({"size": size, "requests": n, "command": name, "wall_s": wall, "peak_gb": max(peaks)})
            print(f"| {size} | {n:,} | {name} | {wall:.1f} | {max(peaks):.2f} | {n / wall:,.0f} |", flush=True)
    (out / "world_scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
