"""The table of bench/gpu_smoke.sh: the card; per run folder (the shared prefix, dpo, ppo) each stage's wall time,
the main process's peak memory (CUDA: peak allocated during the stage; CPU: peak RSS so far) and the engine its
trainer ran under (engine.json); whether each aligner's saved reasoner has the RG-SFT snapshot's tensor shapes
(LoRA under ZeRO-3 once saved shape-(0,) tensors); the final GAUC; the launch's wall time; and the mismatch
rates of bench/gpu_determinism.py. Works on a partial run too (what finished before a failure or the time limit).

    python bench/gpu_smoke_table.py OUT
"""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
cmp = out / "cmp" / "seed0"
print((out / "device.txt").read_text().strip() if (out / "device.txt").exists() else "device: ?")
times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}
if times:
    print(f"\nlaunch (rgalign compare --algos dpo,ppo, {times.get('nproc', 1)} process(es), ZeRO-3 threshold 0, LoRA): "
          f"{times['launch_s']} s, exit {times['launch_rc']}; world {times['world_s']} s; determinism "
          f"{times['determinism_s']} s, exit {times['determinism_rc']}")


def engine(run: Path, stage: str) -> str:
    f = run / stage / "engine.json"
    if not f.exists():
        return ""
    e = json.loads(f.read_text())
    return f"{e['distributed_type']} zero {e['zero_stage']} x{e['num_processes']}"


def shapes(folder: Path) -> dict:
    from safetensors import safe_open

    got = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            got.update({k: tuple(h.get_slice(k).get_shape()) for k in h.keys()})
    return got


print("\n| run | stage | wall s | peak MB | engine | items per rank |\n| --- | --- | --- | --- | --- | --- |")
for name in ("shared", "dpo", "ppo"):
    run = cmp / name
    if not (run / "log.jsonl").exists():
        print(f"| {name} | (no stage finished) | | | | |")
        continue
    for rec in map(json.loads, (run / "log.jsonl").read_text().splitlines()):
        if "wall_s" not in rec or rec["stage"].endswith("/eval"):
            continue
        shares = ", ".join(f"{k} {v}" for k, v in (rec.get("shares") or {}).items())
        print(f"| {name} | {rec['stage']} | {rec['wall_s']} | {rec.get('peak_mem_mb', '')} | "
              f"{engine(run, rec['stage'])} | {shares} |")

print("\n| aligner | saved shapes = RG-SFT's | final GAUC |\n| --- | --- | --- |")
base = cmp / "shared" / "round1" / "rg_sft"
for algo in ("dpo", "ppo"):
    folder, same = cmp / algo / "round1" / algo, ""
    if folder.is_dir() and base.is_dir():
        a, b = shapes(folder), shapes(base)
        bad = sum(a.get(k) != v for k, v in b.items()) + len(set(a) - set(b))
        same = f"yes ({len(a)} tensors)" if not bad and a else f"NO: {bad} of {len(b)} tensors differ"
    final = ""
    if (cmp / algo / "metrics.json").exists():
        st = {s["name"]: s for s in json.loads((cmp / algo / "metrics.json").read_text())["stages"]}
        final = f"{st['final']['gauc']:.4f}" if "final" in st else ""
    print(f"| {algo} | {same or 'not saved'} | {final} |")

det = out / "determinism.json"
print("\n## Determinism: mismatch rates on this device\n")
if det.exists():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_determinism import table  # noqa: E402

    info = json.loads(det.read_text())
    print(table(info))
    print(f"\n(wall {info['wall_s']} s, peak {info['peak_mem_mb']} MB"
          + (f"; TF32 matmul {info['tf32_matmul']}, deterministic algorithms {info['deterministic_algorithms']}"
             if "tf32_matmul" in info else "") + ")")
else:
    print("not measured (see determinism.log)")
