"""`rgalign run`: the whole closed loop from one YAML config, with metrics.json and a results table."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import dist
from .align.loop import ClosedLoop
from .align.loop_config import LoopConfig, loop_config
from .config import from_dict, load_yaml
from .metrics import EXPECTED, HEADLINE
from .versions import lock_differences, versions
from .world import load_world
from .world.stats import format_table


def prepare_world(cfg: LoopConfig, world_dir: str | None, out: Path):
    path = world_dir or cfg.world
    if path is None:
        from .world.shopsim.simulator import ShopSimConfig, write_shopsim

        path = out / "world"
        shop = from_dict(ShopSimConfig, {"seed": cfg.seed, **cfg.shopsim}, "shopsim")
        # every rank enters; the main process looks, inside: a rank looking for itself, after the main process had
        # written the world, skipped the collective the others were in (a hang)
        dist.on_main(lambda: None if (path / "world.json").exists() else write_shopsim(path, shop))
    return load_world(path)


def seed_stages(out: Path, stages: dict) -> None:
    """Starts a run folder from stages another run finished (``rgalign compare``'s shared prefix), unless it has a
    state.json already. The main process looks, inside the collective, as in :func:`prepare_world`."""
    dist.on_main(lambda: None if (out / "state.json").exists() else write_json(out / "state.json", {"done": stages}))


def seeds_of(cfg: LoopConfig) -> dict[str, int]:
    """Every seed the run used, by config key (the run's own and each component's)."""
    from .config import resolve_seeds

    return {"seed": cfg.seed, **resolve_seeds(cfg, asdict(cfg), cfg.seed)}


def flatten(stage: dict) -> dict:
    row = {"name": stage["name"]}
    m = stage.get("metrics", {})
    for k in (*HEADLINE, EXPECTED):
        if k == EXPECTED and k not in m:  # a world without an oracle
            continue
        row[k] = m.get(k)
        if f"{k}_ci" in m:
            row[f"{k}_ci"] = m[f"{k}_ci"]
    for k in ("valid_reward", "need_accuracy", "degenerate_share", "kl_to_ref", "winner_share", "room_share",
              "current_kb_share", "rolled_back", "fault", "degenerate_ids", "train_examples",
              "reward_calls", "wall_s", "peak_mem_mb", "shares", "eval_shares", "examples", "curve", "train_log", "pairs", "path", "vs_qe_rec", "vs_control", "vs_two_tower",
              "vs_two_tower_by_group", "need_group_cuts", "kept_start", "kept_start_reason", "steps", "loss_first",
              "loss_last"):
        if k in stage:
            row[k] = stage[k]
    return row


def command_line(config: str, world_dir: str | None, out: str, seed: int | None, overrides: list[str] | None,
                 verb: str = "run", extra: str = "") -> str:
    parts = ["rgalign", verb, "--config", config] + (["--world", str(world_dir)] if world_dir else [])
    parts += ["--out", str(out)] + ([] if seed is None else ["--seed", str(seed)]) + ([extra] if extra else [])
    return " ".join(parts + list(overrides or []))


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def run(config: str, world_dir: str | None = None, out: str = "runs/rgalign", seed: int | None = None,
        overrides: list[str] | None = None, resume: bool = False, log=print, seed_state: dict | None = None,
        until: str | None = None) -> dict:
    """The closed loop; writes metrics.json, report.md and the plots under ``out``. ``seed_state``: stages
    already finished elsewhere (``rgalign compare`` shares one RG-SFT checkpoint between aligners)."""
    from .report import diff_cell, paired, write_run_report

    raw = load_yaml(config, overrides)
    if seed is not None:
        raw["seed"] = seed
    cfg = loop_config(raw)
    dist.set_timeout(cfg.dist_timeout_s)  # before anything makes the process group
    ClosedLoop.check_until(cfg, until)  # a typo fails here, not after the stages before it
    diffs = lock_differences()
    if diffs and dist.is_main():
        import sys

        print("warning: versions differ from the tested lock (constraints.txt; `make` installs it): "
              + ", ".join(diffs), file=sys.stderr)
    out_p = Path(out)
    if out_p.exists() and (out_p / "state.json").exists() and not resume:
        raise SystemExit(f"error: {out} holds an earlier run: pass --resume to continue it, or choose another --out")
    dist.barrier()  # every rank has looked before the main process writes anything
    world = prepare_world(cfg, world_dir, out_p)  # validated before anything is written (a bad world leaves no folder)
    out_p.mkdir(parents=True, exist_ok=True)
    from .text_encoder import cache_dir

    dist.check_shared(out_p, cache_dir())  # N processes on several machines need one filesystem
    if seed_state:
        seed_stages(out_p, seed_state)
    loop = ClosedLoop(world, cfg, out_p, log=log)
    result = loop.run(until)
    metrics = {"stages": [flatten(s) for s in result["stages"]], "config": result["config"],
               "world": str(world.root), "versions": versions(), "processes": dist.world_size(),
               "seeds": seeds_of(cfg)}
    if "stopped_early" in result:  # --until: the stages so far, and how to go on
        metrics["stopped_early"] = {**result["stopped_early"],
                                    "resume": command_line(config, world_dir, out, seed, overrides, extra="--resume")}
    if not dist.is_main():  # the main process writes and prints; the others are done
        dist.barrier()
        return metrics
    write_json(out_p / "metrics.json", metrics)
    report = write_run_report(out_p, metrics, command_line(config, world_dir, out, seed, overrides,
                                                          extra=f"--until {until}" if until else ""))
    log("\ntest split, 95% CIs over users:")
    log(format_table({s["name"]: s for s in metrics["stages"] if s.get("gauc") is not None}))
    final = next((s for s in metrics["stages"] if s["name"] == "final"), {})
    headroom = next((s for s in metrics["stages"] if s["name"] == "headroom"), {})
    qe_rec = next((s for s in metrics["stages"] if s["name"] == "qe_rec"), {})
    for name, row, label, key in (("QE-Rec", qe_rec, "the two-tower (production baseline)", "vs_two_tower"),
                                  ("final", final, "QE-Rec with the warm reasoner", "vs_qe_rec"),
                                  ("final", final, "the control (calibration without alignment)", "vs_control"),
                                  ("headroom (the true need's text)", headroom, "the two-tower", "vs_two_tower")):
        if row.get(key):
            log(f"{name} vs {label}: " + ", ".join(f"{k} {diff_cell(row[key][k])}" for k in paired(row[key])))
    if "stopped_early" in metrics:
        log(f"\nstopped early after {metrics['stopped_early']['after']} (--until); continue with: "
            f"{metrics['stopped_early']['resume']}")
    log(f"\nreport: {report}")
    dist.barrier()
    return metrics

