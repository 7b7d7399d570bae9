"""How world handling grows with the logs: wall time and peak RSS of each command at ShopSim sizes.

    python bench/world_scale.py [--sizes default,large,huge] [--repeats 1] [--out runs/world_scale]
    python bench/world_scale.py --sizes default,large --commands validate --repeats 3 --baseline /tmp/old

``--baseline CHECKOUT``: each command also runs with that checkout's rgalign_rl (PYTHONPATH), alternating with
this one on the same world, and the row gives both and their ratio (the dict-per-row world before columns).

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


def run(cmd: list[str], checkout: str | None = None) -> tuple[float, float]:
    """(wall s, peak RSS GB) of one child process (``checkout``: another rgalign_rl on PYTHONPATH)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if checkout:
        env["PYTHONPATH"] = checkout
    t = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "rgalign_rl.cli", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=checkout or None)
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
    ap.add_argument("--baseline", help="another checkout to run beside this one (its rgalign_rl on PYTHONPATH)")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if a.baseline:
        print("| size | requests | command | wall s: baseline / this (ratio) | peak RSS GB: baseline / this (ratio) |\n|---|---|---|---|---|",
              flush=True)
    else:
        print("| size | requests | command | wall s (median) | peak RSS GB | requests/s |\n|---|---|---|---|---|---|", flush=True)
    for size in a.sizes.split(","):
        world = out / f"world_{size}"
        n = None
        for name in a.commands.split(","):
            walls, peaks, base_walls, base_peaks = [], [], [], []
            cmd = [x.format(world=world, size=size, out=out) for x in COMMANDS[name]]
            for _ in range(a.repeats):
                if a.baseline:
                    w, p = run(cmd, a.baseline)
                    base_walls.append(w)
                    base_peaks.append(p)
                w, p = run(cmd)
                walls.append(w)
                peaks.append(p)
            if n is None:
                n = sum(1 for _ in open(world / "samples.jsonl"))
            wall = statistics.median(walls)
            if a.baseline:
                bw, bp = statistics.median(base_walls), max(base_peaks)
                rows.append({"size": size, "requests": n, "command": name, "wall_s": wall, "peak_gb": max(peaks),
                             "baseline_wall_s": bw, "baseline_peak_gb": bp})
                print(f"| {size} | {n:,} | {name} | {bw:.1f} / {wall:.1f} ({bw / wall:.1f}x) | "
                      f"{bp:.2f} / {max(peaks):.2f} ({bp / max(peaks):.1f}x) |", flush=True)
                continue
            rows.append({"size": size, "requests": n, "command": name, "wall_s": wall, "peak_gb": max(peaks)})
            print(f"| {size} | {n:,} | {name} | {wall:.1f} | {max(peaks):.2f} | {n / wall:,.0f} |", flush=True)
    (out / "world_scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
