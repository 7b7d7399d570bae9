"""The table of bench/gpu_check.sh: per engine and aligner, each stage's wall time and the main process's peak
memory (CUDA: peak allocated during the stage; CPU: peak RSS so far), and the final GAUC.

    python bench/gpu_check_table.py runs/gpu_check
"""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
print((root / "device.txt").read_text().strip())
print("\n| engine | aligner | stage | wall s | peak MB | items per rank |\n| --- | --- | --- | --- | --- | --- |")
for metrics in sorted(root.glob("*/*/metrics.json")):
    run = metrics.parent
    for rec in map(json.loads, (run / "log.jsonl").read_text().splitlines()):
        if "wall_s" in rec and not rec["stage"].endswith("/eval"):
            shares = ", ".join(f"{k} {v}" for k, v in (rec.get("shares") or {}).items())
            print(f"| {run.parent.name} | {run.name} | {rec['stage']} | {rec['wall_s']} | {rec.get('peak_mem_mb', '')} | {shares} |")
    final = {s["name"]: s for s in json.loads(metrics.read_text())["stages"]}["final"]
    print(f"| {run.parent.name} | {run.name} | **final GAUC** | {final['gauc']:.4f} | | |")
