"""The memory plan's CPU check (issue 27): bench/memory_plan.py's per-stage predictions against the peaks a finished
run measured, on this machine, with the code as it is now.

    python bench/memory_check.py RUN [RUN ...]               # e.g. a tiny run and a SmolLM2 run (below)
    python bench/memory_check.py RUN --smollm2-alone DIR     # + SmolLM2's SFT and DPO stages alone (~2 min)

A RUN is a finished `rgalign run` folder (one process, on this CPU, not resumed): its log.jsonl holds each stage's peak RSS so far (ru_maxrss), its
metrics.json the resolved config and the world; the plan is made for exactly that config, that world's size and
prompt lengths (measured with the run's tokenizer) and the run's reasoner (reasoner_warm/config.json).

What is measured rather than modelled, in fresh processes on the same world and config:
- the process before any reasoner: `rgalign run --until two_tower` with an empty cache (the libraries a run
  imports, the world, the text encoder, tensorboard, the two-tower fit), and what importing TRL, PEFT and
  datasets adds. Rankers are not
  modelled (a few MB at these sizes), so the two ranker-only stages' rows are this baseline and are not counted
  as predictions;
- everything after is the baseline plus the plan's tensors (MiniLM is in the baseline), as a running maximum
  (ru_maxrss never goes down); a stage's evaluation counts from the next stage on (its peak is recorded first).

The SmolLM2 run of the figures in BENCHMARKS.md: recipes/configs/smollm2_tiny.yaml at the recipe's batch sizes
(warm start 8, RG-SFT 8, DPO 4, RG-CL 8; one step each) on a 48-request slice of the tiny world:
    rgalign world shopsim --out W0 --size tiny && rgalign world subset W0 --out W --requests 48 --seed 0
    rgalign run --config recipes/configs/smollm2_tiny.yaml --world W --out RUN reasoner.warm.max_pairs=8 \\
        best_of_n.max_requests=8 align.max_requests=8 align.dpo.max_pairs=4 align.reward_budget=64 \\
        rg_cl.max_requests=8 ranker.calib_max_requests=16 eval.max_valid=8
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_plan import MB, PRESETS, ROOT, Setup, Shape, arch_from, peak  # noqa: E402

RANKER_ONLY = ("two_tower", "headroom")

IMPORTS = r"""
import json, resource
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch
import rgalign_rl.run, rgalign_rl.align.loop
before = rss()
import datasets, peft, trl
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
print(json.dumps({"trl, peft, datasets": rss() - before}))
"""

# One stage alone in a fresh process: SmolLM2-135M warm-start SFT (batch 8) and DPO (batch 4), one step each.
ALONE = r"""
import json, resource, sys
def rss(): return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
import torch
torch.set_num_threads(2)
import datasets, trl
from rgalign_rl.world import load_world
from rgalign_rl.reasoner.model import load_tokenizer
from rgalign_rl.reasoner.prompt import build_prompts
w = load_world(sys.argv[1]); path, what, bs, out = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
m = torch.nn.Linear(8, 8); m(torch.randn(2, 8)).sum().backward()
if what == "sft":
    from rgalign_rl.reasoner.sft import SFTSettings, sft, warm_start_pairs
    pairs = warm_start_pairs(w)[:bs]
    base = rss()
    sft(path, w, pairs, out, SFTSettings(epochs=1, lr=2e-4, batch_size=bs, max_pairs=bs))
else:
    from rgalign_rl.align.dpo import DPOSettings, run_dpo
    rows = {}
    for i, _, q in w.teachers.rows():
        rows.setdefault(i, []).append(q)
    idx = [i for i, qs in rows.items() if len(set(qs)) >= 2][:bs]
    prompts = build_prompts(w, idx, load_tokenizer(path))
    pairs = [{"prompt": p, "chosen": " " + rows[i][0], "rejected": " " + [q for q in rows[i] if q != rows[i][0]][0]}
             for p, i in zip(prompts, idx)]
    base = rss()
    run_dpo(path, pairs, out, DPOSettings(batch_size=bs, max_pairs=bs, min_margin=0.0))
print(json.dumps({"base": base, "peak": rss()}))
"""


def _env() -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _python(code: str, *argv: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=_env(),
                       timeout=900)
    if r.returncode:
        raise SystemExit(f"measurement failed: {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def baseline(config: dict, world: str) -> float:
    """MB: the peak RSS of a run process after its first stage, measured in a fresh one."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump({**config, "world": None}))
        cmd = [sys.executable, "-m", "rgalign_rl.cli", "run", "--config", str(cfg), "--world", world,
               "--out", f"{tmp}/run", "--until", "two_tower"]
        # an empty cache, as a first run has: the two-tower then loads the text encoder (a warm one would not)
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                           env={**_env(), "RGALIGN_CACHE": f"{tmp}/cache"})
        if r.returncode:
            raise SystemExit(f"baseline run failed: {r.stderr[-1500:]}")
        first = json.loads((Path(tmp) / "run" / "log.jsonl").read_text().splitlines()[0])
    return first["peak_mem_mb"]


def shape_of(run: Path, world) -> Shape:
    """The world's size and its longest prompt (and shared head) in the run's tokenizer."""
    from rgalign_rl.reasoner.model import load_tokenizer
    from rgalign_rl.reasoner.prefix import row_heads
    from rgalign_rl.reasoner.prompt import build_prompts
    from rgalign_rl.reasoner.tokens import prompt_ids

    tok = load_tokenizer(run / "reasoner_warm")
    idx = list(range(0, len(world.samples), max(1, len(world.samples) // 200)))
    prompts = build_prompts(world, idx, tok)
    seqs = [list(s) for s in prompt_ids(tok, prompts)]
    heads = row_heads(tok, prompts, seqs)
    return Shape(prompt=max(map(len, seqs)), head=max(map(len, heads)), requests=len(world.samples))


def rows_of(run: Path, trl_mb: float) -> tuple[list, float]:
    """[(stage, predicted MB, measured MB, counted, what the prediction's peak is)] for one run, and its baseline.
    ``trl_mb``: what importing TRL, PEFT and datasets adds (measured once)."""
    from rgalign_rl.align.loop_config import loop_config
    from rgalign_rl.world import load_world

    from rgalign_rl.devices import native_bf16

    metrics = json.loads((run / "metrics.json").read_text())
    if metrics.get("processes", 1) != 1:
        raise SystemExit(f"{run}: a run of {metrics['processes']} processes; the check models one process on CPU")
    cfg = loop_config(metrics["config"])
    # a relative world path is the run's, from where it was made: the check's subprocesses run in the repository
    world_dir = str(Path(metrics["world"]).resolve())
    world = load_world(world_dir)
    records = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "peak_mem_mb" in r]
    stages = [r["stage"] for r in records]
    if len(set(stages)) < len(stages):
        raise SystemExit(f"{run}: resumed (a stage recorded twice): its peaks come from several processes")
    measured = {r["stage"]: r["peak_mem_mb"] for r in records if not r["stage"].endswith("/eval")}
    libs = base = baseline(metrics["config"], world_dir)
    arch = arch_from(str(run / "reasoner_warm" / "config.json"), cfg)
    plan = Setup(arch, cfg, shape_of(run, world), "plain", 1, "cpu", cpu_bf16=native_bf16()).plan()
    out, run_max, run_what = [], 0.0, ""
    for stage, phases in plan:
        b, phase, items = peak(phases)
        if stage in RANKER_ONLY:
            mine, what = libs, "baseline (measured; rankers are not modelled)"
        else:
            mine = libs + trl_mb + (b - sum(x for lab, x in items if lab.startswith("text encoder"))) / MB
            what = f"{stage}: {phase}"
        if mine > run_max:
            run_max, run_what = mine, what
        if stage in measured:
            out.append((stage, run_max, measured[stage], stage not in RANKER_ONLY, run_what))
    return out, base


def alone_rows(world: str, smollm2: str) -> list:
    """SmolLM2's SFT and DPO stages alone in fresh processes vs the plan of that stage alone."""
    from rgalign_rl.align.loop_config import loop_config
    from rgalign_rl.config import load_yaml

    cfg = loop_config(load_yaml(str(ROOT / "recipes/configs/smollm2_tiny.yaml"), []))
    rows = []
    for what, bs in (("sft", 8), ("dpo", 4)):
        with tempfile.TemporaryDirectory() as tmp:
            got = _python(ALONE, world, smollm2, what, str(bs), f"{tmp}/out")
        s = Setup(PRESETS["smollm2-135m"], cfg, Shape(prompt=509, head=372), "plain", 1, "cpu")
        if what == "sft":
            b, phase, _ = peak(s.sft_phases(replace(cfg.reasoner.warm, batch_size=bs), []))
        else:
            s.cfg = replace(cfg, align=replace(cfg.align, dpo=replace(cfg.align.dpo, batch_size=bs),
                                               probe=replace(cfg.align.probe, prompts=0)))
            b, phase, _ = peak({k: v for k, v in s.align_dpo(sampler=False).items()
                                if k in ("load policy + reference", "train step")})
        rows.append((f"{what.upper()} alone (batch {bs})", got["base"] + b / MB, got["peak"], True,
                     f"{phase} + measured base {got['base']:.0f}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run folders")
    ap.add_argument("--smollm2-alone", metavar="DIR", help="a converted SmolLM2-135M folder: also run its SFT and "
                    "DPO stages alone in fresh processes, on the first run's world")
    a = ap.parse_args()
    lines = ["| run | stage | predicted MB | measured MB | error | within 30%? | predicted peak from |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    counted, missed, worst = 0, 0, None
    trl_mb = _python(IMPORTS)["trl, peft, datasets"]
    notes = [f"importing TRL, PEFT and datasets adds {trl_mb:.0f} MB"]
    for run in map(Path, a.runs):
        rows, base = rows_of(run, trl_mb)
        notes.append(f"{run}: a run process after two_tower (empty cache) {base:.0f} MB")
        if a.smollm2_alone and run == Path(a.runs[0]):
            world = str(Path(json.loads((run / "metrics.json").read_text())["world"]).resolve())
            rows += alone_rows(world, str(Path(a.smollm2_alone).resolve()))
        for stage, p, m, count, what in rows:
            err = (p - m) / m
            ok = abs(err) <= 0.30
            verdict = ("yes" if ok else "**MISSED**") if count else "(baseline)"
            if count:
                counted, missed = counted + 1, missed + (not ok)
                if worst is None or abs(err) > abs(worst[0]):
                    worst = (err, run.name, stage)
            lines.append(f"| {run.name} | {stage} | {p:,.0f} | {m:,.0f} | {err:+.0%} | {verdict} | {what} |")
    lines += ["", *notes, "", f"{counted - missed} of {counted} predictions within 30% of the measured peak"
              + (f"; {missed} MISSED" if missed else "")
              + (f"; largest error {worst[0]:+.0%} ({worst[1]}, {worst[2]})." if worst else ".")]
    print("\n".join(lines))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
