"""Serving speed of ``rgalign recommend`` (issue 28): latency per request at batch 1 (p50 / p99) and throughput
(requests/s) at batch 32 and 256, for one run's stage served in one dtype.

    python bench/recommend_speed.py RUN --dtype float32|bfloat16 [--stage final] [--requests WORLD] \\
        [--latency-n 50] [--batches 32,256] [--repeats 3] [--seed 0] [--label NAME] [--results F.jsonl]

A timed call is ``Recommender.recommend(rows, top_k=3)`` end to end: validation, prompts, the reasoner's greedy
query, its embedding, the ranker. Every call is cold: the Recommender's in-memory queries and embeddings (and
the process's tokenised prompts) are cleared before it, and its requests are rows no earlier call of the
process served (cycled only when the world has too few, still cleared). The models are loaded and one warm-up
call made before anything is timed. p50 / p99 are over the --latency-n requests of one repeat; every figure is
the median over --repeats. ``--requests``: a world to draw the requests from (default: the run's own; another
world must share the run's intents, e.g. the full world a subset run was cut from). Each measurement is
appended to --results as a JSON line, and the markdown table of every line there is printed, each figure the
median over all their repeats: run the script once per (reasoner, dtype), or per part and repeat
(--latency-n 0 / --batches '' / --repeats 1), to keep each call short.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.recommend import Recommender, run_serving  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def machine() -> str:
    """The CPU's model name and its vector extensions that matter for bf16, and torch's threads."""
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")), platform.machine())
    flags = set(next((x.split(":", 1)[1].split() for x in info.splitlines() if x.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{os.cpu_count()} vCPU {name} ({', '.join(isa) or 'no AVX2'}), torch threads {torch.get_num_threads()}"


class Timed:
    """Cold, timed calls of one Recommender; the share of each call spent in the reasoner (query + embedding)."""

    def __init__(self, rec: Recommender, rows: list[dict]):
        self.rec, self.rows, self.next, self.reasoner_s = rec, rows, 0, 0.0
        for name in ("_generate", "_embed"):
            inner = getattr(rec, name)

            def wrapped(*args, _inner=inner):
                t = time.perf_counter()
                try:
                    return _inner(*args)
                finally:
                    self.reasoner_s += time.perf_counter() - t
            setattr(rec, name, wrapped)

    def take(self, n: int) -> list[dict]:
        out = [self.rows[(self.next + i) % len(self.rows)] for i in range(n)]
        self.next += n
        return out

    def call(self, rows: list[dict]) -> tuple[float, float]:
        """(seconds, reasoner share) of one cold recommend call."""
        from rgalign_rl.reasoner import tokens

        self.rec._queries.clear()
        self.rec._vectors.clear()
        tokens._PROMPT_IDS.clear()
        self.reasoner_s = 0.0
        t = time.perf_counter()
        out = self.rec.recommend(rows, top_k=3)
        dt = time.perf_counter() - t
        assert len(out) == len(rows)
        return dt, self.reasoner_s / dt


def requests(world_dir: str | Path, seed: int = 0) -> list[dict]:
    """The world's rows as requests (no clicks, no split), shuffled."""
    w = load_world(world_dir)
    rows = [{k: v for k, v in w.samples[i].items() if k not in ("clicked", "split")} for i in range(len(w.samples))]
    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def measure(a) -> list[dict]:
    import torch

    torch.set_num_threads(a.threads)
    serving = dataclasses.replace(run_serving(a.run, a.stage), serve_dtype=a.dtype)
    rows = requests(a.requests or serving.source["world"], a.seed)
    timed = Timed(Recommender(serving), rows)
    base = {"label": a.label or Path(a.run).name, "run": str(a.run), "stage": a.stage, "dtype": a.dtype,
            "repeats": a.repeats, "machine": machine(), "requests": len(rows),
            "max_new_tokens": serving.max_new_tokens, "query_mode": serving.query_mode}
    t = time.perf_counter()
    timed.call(timed.take(8))  # warm-up: loads the reasoner, the text encoder; the first passes
    print(f"{base['label']} {a.dtype}: loaded and warmed up in {time.perf_counter() - t:.1f} s", flush=True)
    out = []
    if a.latency_n:
        p50, p99, share = [], [], []
        for _ in range(a.repeats):
            calls = [timed.call([r]) for r in timed.take(a.latency_n)]
            s = np.array([c[0] for c in calls]) * 1000
            p50.append(float(np.percentile(s, 50)))
            p99.append(float(np.percentile(s, 99)))
            share.append(float(np.mean([c[1] for c in calls])))
            print(f"  batch 1: p50 {p50[-1]:.1f} ms, p99 {p99[-1]:.1f} ms", flush=True)
        out.append({**base, "kind": "latency", "batch": 1, "n": a.latency_n, "p50_ms": statistics.median(p50),
                    "p99_ms": statistics.median(p99), "reasoner_share": statistics.median(share),
                    "all_p50_ms": p50, "all_p99_ms": p99, "all_reasoner_share": share})
    for b in [int(x) for x in a.batches.split(",") if x]:
        rps, share = [], []
        for _ in range(a.repeats):
            dt, sh = timed.call(timed.take(b))
            rps.append(b / dt)
            share.append(sh)
            print(f"  batch {b}: {rps[-1]:.2f} requests/s ({dt:.1f} s)", flush=True)
        out.append({**base, "kind": "throughput", "batch": b, "requests_per_s": statistics.median(rps),
                    "reasoner_share": statistics.median(share), "all_requests_per_s": rps,
                    "all_reasoner_share": share})
    if timed.next > len(rows):
        print(f"  note: {timed.next} requests served from {len(rows)} rows (cycled; caches cleared every call)")
    return out


def table(lines: list[dict]) -> str:
    """One row per (label, dtype); each figure the median over every repeat of every line measuring it (so the
    repeats of a slow case may come from several calls of the script)."""
    pooled: dict[tuple, dict] = {}
    for x in lines:
        r = pooled.setdefault((x["label"], x["dtype"]), {})
        for k in ("p50_ms", "p99_ms", "requests_per_s", "reasoner_share"):
            if k in x:
                r.setdefault((x["batch"], k), []).extend(x.get(f"all_{k}", [x[k]]))

    def cell(r: dict, batch: int, key: str, fmt: str) -> str:
        v = r.get((batch, key))
        return f"{statistics.median(v):{fmt}} ({len(v)})" if v else "-"

    out = ["| reasoner | dtype | batch 1 p50 ms (repeats) | batch 1 p99 ms | batch 32 req/s (repeats) "
           "| batch 256 req/s (repeats) | reasoner's share of the time (b=1 / b=32 / b=256) |",
           "|---|---|---|---|---|---|---|"]
    for (label, dtype), r in pooled.items():
        share = " / ".join(f"{statistics.median(r[(b, 'reasoner_share')]):.0%}" if (b, "reasoner_share") in r
                           else "-" for b in (1, 32, 256))
        out.append(f"| {label} | {dtype} | {cell(r, 1, 'p50_ms', '.0f')} | {cell(r, 1, 'p99_ms', '.0f')} "
                   f"| {cell(r, 32, 'requests_per_s', '.2f')} | {cell(r, 256, 'requests_per_s', '.2f')} | {share} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", help="a run folder (omit with --table-only)")
    p.add_argument("--stage", default="final")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--requests", help="a world to draw requests from (default: the run's)")
    p.add_argument("--latency-n", type=int, default=50, help="batch-1 requests per repeat (0: skip)")
    p.add_argument("--batches", default="32,256", help="throughput batch sizes ('' : skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="the order the world's rows are served in")
    p.add_argument("--label", help="the reasoner's name in the table (default: the run folder's name)")
    p.add_argument("--results", default="/tmp/recommend_speed.jsonl")
    p.add_argument("--table-only", action="store_true", help="print the table of --results and exit")
    a = p.parse_args()
    results = Path(a.results)
    if not a.table_only:
        if not a.run:
            p.error("a run folder is needed (or --table-only)")
        with open(results, "a") as f:
            for x in measure(a):
                f.write(json.dumps(x) + "\n")
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.exists() else []
    if lines:
        print(f"\n{lines[-1]['machine']}\n")
    print(table(lines))


if __name__ == "__main__":
    main()
