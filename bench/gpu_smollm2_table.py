"""The table of bench/gpu_smollm2.sh: the card, each stage's wall time and peak memory, and the headline rows
(test GAUC with 95% CIs; paired differences: QE-Rec vs two-tower, final vs QE-Rec and vs control; the share of
the headroom the final stage captures).

    python bench/gpu_smollm2_table.py runs/gpu_smollm2
"""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
run = root / "run"
print((root / "device.txt").read_text().strip())
print((root / "wall.txt").read_text().strip() if (root / "wall.txt").exists() else "")
print("\n| stage | wall s | peak MB | items |\n| --- | --- | --- | --- |")
for rec in map(json.loads, (run / "log.jsonl").read_text().splitlines()):
    if "wall_s" in rec and not rec["stage"].endswith("/eval"):
        shares = ", ".join(f"{k} {sum(v)}" for k, v in (rec.get("shares") or {}).items())
        print(f"| {rec['stage']} | {rec['wall_s']} | {rec.get('peak_mem_mb', '')} | {shares} |")
by = {s["name"]: s for s in json.loads((run / "metrics.json").read_text())["stages"]}


def diff(stage: str, key: str) -> str:
    d = (by.get(stage) or {}).get(key, {}).get("gauc")
    return f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" if d else "-"


print("\n| stage | test GAUC [95% CI] | paired difference |\n| --- | --- | --- |")
for name, key, against in (("two_tower", None, ""), ("qe_rec", "vs_two_tower", "vs two-tower"),
                           ("rg_sft", "vs_qe_rec", "vs QE-Rec"), ("final", "vs_qe_rec", "vs QE-Rec"),
                           ("control", None, ""), ("headroom", "vs_two_tower", "vs two-tower")):
    if name in by:
        s = by[name]
        ci = s.get("gauc_ci") or [float("nan")] * 2
        print(f"| {name} | {s['gauc']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] | {against + ' ' + diff(name, key) if key else ''} |")
if "final" in by:
    print(f"\nfinal vs control: {diff('final', 'vs_control')}")
    fin, hr = (by.get(k, {}).get("vs_two_tower", {}).get("gauc") for k in ("final", "headroom"))
    if fin and hr and hr["diff"]:
        print(f"share of the headroom captured (final - two-tower) / (headroom - two-tower): {fin['diff'] / hr['diff']:.1%}")
