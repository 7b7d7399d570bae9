"""How world handling grows with the logs: wall time and peak RSS of each command at ShopSim sizes.

    python bench/world_scale.py [--sizes default,large,huge] [--repeats 1] [--out runs/world_scale]
    python bench/world_scale.py --sizes default,large --commands validate --repeats 3 --baseline /tmp/old
    python bench/world_scale.py --sizes paper:11000,paper:200000,paper --commands generate,validate,stats,two_tower_epoch
    python bench/world_scale.py --sizes paper:11000,paper:200000 --commands two_tower_epoch,qe_rec_epoch,scorer_targets

A size is ``NAME`` or ``NAME:USERS`` (``--users``: the paper design, 90 features and shards, at ~55k and ~1M
requests beside the full ~7.5M). The last column is the growth of the time per 10x requests from the row above.

``--baseline CHECKOUT``: each command also runs with that checkout's rgalign_rl (PYTHONPATH), alternating with
this one on the same world, and the row gives both and their ratio (the dict-per-row world before columns).

Each command runs in its own process (`/usr/bin/time`-style: the child's peak RSS from wait4), one at a time,
with the threads the Makefile sets: world generation, `world validate`, `world stats --json --headroom off`,
`ranker train --arch two_tower --queries none`, the loop's QE-Rec nested in it for one epoch on a teacher's
queries, and the reward's denoised targets of 100k requests (`bench/scorer_targets.py`). Prints one markdown row per (size, command) with the
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

import numpy as np

COMMANDS = {
    "generate": ["world", "shopsim", "--out", "{world}", "--seed", "0", "--size", "{size}", "--users", "{users}"],
    "validate": ["world", "validate", "{world}"],
    "stats": ["world", "stats", "{world}", "--json", "--headroom", "off"],
    "two_tower": ["ranker", "train", "--world", "{world}", "--arch", "two_tower", "--queries", "none", "--out", "{out}/tt_{tag}"],
    "two_tower_epoch": ["ranker", "train", "--world", "{world}", "--arch", "two_tower", "--queries", "none",
                        "--out", "{out}/tt_{tag}", "--epochs", "1"],
    # after two_tower(_epoch): the loop's QE-Rec design nested in that two-tower, on one teacher's queries
    "qe_rec_epoch": ["ranker", "train", "--world", "{world}", "--arch", "qe_rec_gated", "--queries", "teacher:atlas",
                     "--query-mode", "text", "--nest", "{out}/tt_{tag}", "--out", "{out}/qe_{tag}", "--epochs", "1"],
    # after two_tower(_epoch): the reward's denoised targets of 100k requests (all of a smaller world)
    "scorer_targets": ["bench/scorer_targets.py", "{world}", "{out}/tt_{tag}", "--rows", "100000", "--recall-rows", "0"],
}


def requests(world: Path) -> int:
    if (world / "samples.jsonl").exists():
        return sum(1 for _ in open(world / "samples.jsonl"))
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(world.glob("samples*.parquet")))


def run(cmd: list[str], checkout: str | None = None) -> tuple[float, float]:
    """(wall s, peak RSS GB) of one child process (``checkout``: another rgalign_rl on PYTHONPATH)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if checkout:
        env["PYTHONPATH"] = checkout
    t = time.time()
    script = ["-m", "rgalign_rl.cli", cmd[0]]
    if cmd[0].startswith("bench/"):  # a bench script of the checkout timed (it puts its own repo first on sys.path)
        script = [str(Path(checkout or Path(__file__).parents[1]) / cmd[0])]
        if not Path(script[0]).exists():
            raise SystemExit(f"{script[0]}: no such script in {checkout}")
    proc = subprocess.Popen([sys.executable, *script, *cmd[1:]], stdout=subprocess.DEVNULL,
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
        print("| size | requests | command | wall s (median) | peak RSS GB | requests/s | time x per 10x requests |\n"
              "|---|---|---|---|---|---|---|", flush=True)
    last: dict[str, tuple[int, float]] = {}
    for spec in a.sizes.split(","):
        size, _, users = spec.partition(":")
        tag = f"{size}{'_' + users if users else ''}"
        world = out / f"world_{tag}"
        n = None
        for name in a.commands.split(","):
            walls, peaks, base_walls, base_peaks = [], [], [], []
            cmd = [x.format(world=world, size=size, out=out, users=users or 0, tag=tag) for x in COMMANDS[name]]
            for _ in range(a.repeats):
                if a.baseline:
                    w, p = run(cmd, a.baseline)
                    base_walls.append(w)
                    base_peaks.append(p)
                w, p = run(cmd)
                walls.append(w)
                peaks.append(p)
            if n is None:
                n = requests(world)
            wall = statistics.median(walls)
            if a.baseline:
                bw, bp = statistics.median(base_walls), max(base_peaks)
                rows.append({"size": size, "requests": n, "command": name, "wall_s": wall, "peak_gb": max(peaks),
                             "baseline_wall_s": bw, "baseline_peak_gb": bp})
                print(f"| {size} | {n:,} | {name} | {bw:.1f} / {wall:.1f} ({bw / wall:.1f}x) | "
                      f"{bp:.2f} / {max(peaks):.2f} ({bp / max(peaks):.1f}x) |", flush=True)
                continue
            growth = ""
            if name in last:  # normalised to 10x requests: (t1 / t0) ** (1 / log10(n1 / n0))
                n0, w0 = last[name]
                growth = f"{(wall / w0) ** (1 / np.log10(n / n0)):.1f}x"
            last[name] = (n, wall)
            rows.append({"size": spec, "requests": n, "command": name, "wall_s": wall, "peak_gb": max(peaks), "growth_per_10x": growth})
            print(f"| {spec} | {n:,} | {name} | {wall:.1f} | {max(peaks):.2f} | {n / wall:,.0f} | {growth} |", flush=True)
    (out / "world_scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
