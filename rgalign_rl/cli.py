"""The `rgalign` command. Each subcommand parses its flags and calls the library; nothing else.

Every input error (a bad flag, config file, config value, override or world) is one ``error: ...`` line on
stderr per problem and exit status 2 (argparse's convention), never a traceback; ``--debug`` (anywhere on the
command line) or ``RGALIGN_DEBUG=1`` re-raises it for the traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .config import ConfigError
from .world import WorldError, load_world


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return value == "on"


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return x


def _seed_list(value: str) -> list[int]:
    try:
        seeds = [int(x) for x in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if any(x < 0 for x in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {value!r}")
    return seeds


def cmd_world_shopsim(args) -> int:
    from .world.shopsim.simulator import ShopSimConfig, write_shopsim

    launch = {} if args.cold_launch_day is None else {"cold_launch_day": args.cold_launch_day}
    cfg = ShopSimConfig(seed=args.seed, size=args.size, users=args.users, semantic_gap=args.semantic_gap,
                        teacher_bias=args.teacher_bias, **launch)
    out = write_shopsim(args.out, cfg)
    print(f"wrote ShopSim world ({args.size}, seed {args.seed}, semantic_gap={'on' if cfg.semantic_gap else 'off'}, "
          f"teacher_bias={'on' if cfg.teacher_bias else 'off'}) to {out}")
    return 0


def cmd_world_movielens(args) -> int:
    from .world.movielens import convert_movielens

    print(f"wrote MovieLens-100K world to {convert_movielens(args.out)}")
    return 0


def cmd_world_subset(args) -> int:
    from .world.world import subset_world

    out = subset_world(args.src, args.out, args.requests, args.seed)
    print(f"wrote a {len(load_world(out).samples)}-request subset of {args.src} to {out}")
    return 0


def cmd_world_validate(args) -> int:
    world = load_world(args.dir)
    s = world.sizes()
    print(f"{args.dir}: valid world with {s['intents']} intents, {s['samples']} samples "
          f"({s['train_samples']} train / {s['valid_samples']} valid / {s['test_samples']} test), "
          f"{s['teacher_rows']} teacher rows{', oracle' if world.oracle else ''}")
    return 0


def cmd_world_stats(args) -> int:
    from .world.stats import format_table, world_stats

    world = load_world(args.dir)
    stats = world_stats(world, headroom=args.headroom, seed=args.seed)
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(f"world {stats['world']}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in stats["sizes"].items()))
    print("\ntest split, reference rankers (95% CIs over users):")
    print(format_table(stats["reference"]))
    if "headroom" in stats:
        h = stats["headroom"]
        print(f"\nheadroom: a ranker given the true need's text gains {h['gauc_gain']:+.4f} GAUC "
              f"(paired CI {h['gauc_gain_ci'][0]:+.4f}..{h['gauc_gain_ci'][1]:+.4f}) over the same ranker "
              f"without it ({h['without']['gauc']:.4f} -> {h['with_need']['gauc']:.4f})")
    return 0


def cmd_ranker_train(args) -> int:
    import torch

    from .ranker.queries import query_embeddings, query_text_dims
    from .ranker.train import TrainConfig, load_ranker, save_ranker, train_ranker

    torch.set_num_threads(args.threads)
    world = load_world(args.world)  # a bad world is refused here, before anything is written
    reads = args.arch != "two_tower"
    if reads and args.queries == "none":
        raise SystemExit(f"error: --arch {args.arch} needs --queries (teacher:NAME, need or reasoner:PATH)")
    kw = {}
    if args.nest:
        if not reads:
            raise SystemExit("error: --nest starts a QE-Rec from a two-tower; --arch two_tower has nothing to nest")
        nest, enc, meta = load_ranker(args.nest)
        if nest.cfg.arch != "two_tower":
            raise SystemExit(f"error: --nest {args.nest}: a {nest.cfg.arch} ranker, not a two_tower")
        kw = {"nest": nest, "encoder": enc}
    query = query_embeddings(world, args.queries, args.query_mode) if reads else None
    world.oracle = None  # training reads clicks, not the oracle's ~280 bytes a request (2 GB at the paper's scale)
    # teacher and need queries are always text-encoder vectors
    mode = args.query_mode if args.queries.startswith("reasoner:") else "text"
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    model, enc, history = train_ranker(world, args.arch, query, cfg, query_text=query_text_dims(mode) if reads else 0, **kw)
    save_ranker(args.out, model, enc, {"queries": args.queries if reads else "none",
                                        "query_mode": args.query_mode, "train": cfg.__dict__,
                                        "history": history, "world": str(args.world), "nested_in": args.nest})
    print(f"saved {args.arch} ranker to {args.out} (best valid GAUC {max(h['valid_gauc'] for h in history):.4f})")
    return 0


def cmd_ranker_eval(args) -> int:
    import numpy as np
    import torch

    from .ranker.queries import query_embeddings
    from .ranker.train import RankerData, load_ranker, score
    from .world.stats import format_table, split_metrics

    torch.set_num_threads(args.threads)
    world = load_world(args.world)
    model, enc, meta = load_ranker(args.ranker)
    query = (query_embeddings(world, meta["queries"], meta["query_mode"], max_new_tokens=meta.get("max_new_tokens", 16))
             if meta["queries"] != "none" else None)
    scores = score(model, RankerData(world, enc, query), np.arange(len(world.samples)))
    m = split_metrics(world, scores, args.split)
    m["privileged"] = privileged_source(meta["queries"])
    if args.json:
        print(json.dumps(m))
    else:
        print(f"{args.split} split of {world.name}, ranker {args.ranker} ({meta['ranker']['arch']}, queries {meta['queries']}):")
        print(format_table({meta["ranker"]["arch"]: m}))
        if m["privileged"]:
            print(f"PRIVILEGED REFERENCE: {m['privileged']}")
    return 0


def privileged_source(queries: str) -> str | None:
    """Why a query source is not a servable ranker's (the metrics are a reference, not a result), or None."""
    if queries == "need":
        return "the queries are the oracle's true-need text: what a perfect reasoner could give, not a result"
    if queries.startswith("teacher:"):
        return (f"the queries are {queries}'s rows for the evaluated requests too; a simulator's teachers write them "
                "from the hidden need, and no serving path has them: a reference, not a result")
    return None


def cmd_reasoner_tiny(args) -> int:
    import torch

    from .reasoner.sft import SFTSettings, sft, warm_start_pairs
    from .reasoner.tiny import build_tiny_reasoner

    torch.set_num_threads(args.threads)
    world = load_world(args.world)
    init = build_tiny_reasoner(world, f"{args.out}.init")
    if args.no_warm:
        print(f"built the tiny reasoner (random init) at {init}")
        return 0
    pairs = warm_start_pairs(world)
    sft(init, world, pairs, args.out, SFTSettings(epochs=args.epochs, max_pairs=args.max_pairs, threads=args.threads))
    source = "teacher queries" if world.teachers else "clicked-intent texts"
    print(f"warm-started the tiny reasoner on {min(len(pairs), args.max_pairs)} {source} -> {args.out}")
    return 0


def cmd_reasoner_smollm2(args) -> int:
    from .reasoner.smollm2 import smollm2_path

    print(smollm2_path())
    return 0


def cmd_run(args) -> int:
    from .run import run

    run(args.config, args.world, args.out, args.seed, args.overrides, args.resume, until=args.until)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    compare(args.config, args.algos.split(","), args.seeds, args.out, args.world, args.overrides, args.resume)
    return 0


def cmd_diagnose(args) -> int:
    import torch

    from .diagnose import diagnose
    from .diagnose_report import markdown

    torch.set_num_threads(args.threads)
    d = diagnose(args.run)
    print(json.dumps(d, indent=1) if args.json else markdown(d).split("\n", 1)[1])
    if not args.json:
        print(f"written: {args.run}/diagnose/ and report.md's Diagnosis section")
    return 0


def cmd_recommend(args) -> int:
    import torch

    from .recommend import Recommender, read_requests, write_jsonl_atomic

    torch.set_num_threads(args.threads)
    rec = Recommender.from_run(args.run, args.stage)
    world = read_requests(args.requests, rec.serving.intents, rec.serving.meta)  # every problem, before any work
    rows = rec.recommend(world, top_k=args.top_k) if world is not None else []
    if args.out:
        write_jsonl_atomic(rows, args.out)
        print(f"wrote {len(rows)} recommendations (stage {rec.serving.stage}) to {args.out}", file=sys.stderr)
    else:  # computed in full first: a refused or failed request prints nothing
        sys.stdout.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return 0


def cmd_export(args) -> int:
    from .export import export

    out = export(args.run, args.out, args.stage)
    print(f"exported stage {args.stage} of {args.run} to {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}); "
          f"rgalign recommend {out} --requests FILE)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .world.shopsim.simulator import SIZES

    p = argparse.ArgumentParser(prog="rgalign", description="Ranking-Guided Alignment of an LLM reasoner to a ranker")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (also RGALIGN_DEBUG=1; accepted anywhere on the line)")
    sub = p.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="make, check and describe worlds").add_subparsers(dest="what", required=True)
    s = world.add_parser("shopsim", help="generate the ShopSim simulated world")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", choices=list(SIZES), default="default",
                   help="users (~5 requests each): tiny 400, small 5,500 (make demo), default 11,000, large 40,000, "
                        "huge 200,000 (~1M requests); paper 1,500,000 (~7.5M requests, 90 features, drawn in blocks, "
                        "samples in Parquet shards)")
    s.add_argument("--users", type=int, default=0, metavar="N", help="N users instead of the size's (0: the size's)")
    s.add_argument("--semantic-gap", type=_on_off, default=True, metavar="on|off",
                   help="rare needs and cold intents (default on)")
    s.add_argument("--cold-launch-day", type=int, metavar="DAY",
                   help="day the cold intents launch (default 21, a week before training ends; "
                        "28 = the valid period's start: zero-shot for every learner)")
    s.add_argument("--teacher-bias", type=_on_off, default=True, metavar="on|off",
                   help="the prolific teacher is misaligned in one segment (default on)")
    s.set_defaults(func=cmd_world_shopsim)
    s = world.add_parser("movielens", help="convert MovieLens-100K from the recbole wheel")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_world_movielens)
    s = world.add_parser("subset", help="a smaller world: N requests drawn from a world (each split in its share)")
    s.add_argument("src")
    s.add_argument("--out", required=True)
    s.add_argument("--requests", type=_positive_int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_world_subset)
    s = world.add_parser("validate", help="check a world directory; prints FILE:LINE: field: problem")
    s.add_argument("dir")
    s.set_defaults(func=cmd_world_validate)
    s = world.add_parser("stats", help="sizes and reference rankers' test metrics")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.add_argument("--headroom", type=_on_off, default=True, metavar="on|off",
                   help="train the headroom rankers when the oracle has needs (default on; ~1 min)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_world_stats)

    reasoner = sub.add_parser("reasoner", help="build reasoner presets").add_subparsers(dest="what", required=True)
    s = reasoner.add_parser("tiny", help="tokenizer + small Llama for a world, warm-started on its teachers")
    s.add_argument("--world", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=_positive_float, default=2.0)
    s.add_argument("--max-pairs", type=_positive_int, default=30000)
    s.add_argument("--no-warm", action="store_true", help="stop after building the random-init model")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=cmd_reasoner_tiny)
    s = reasoner.add_parser("smollm2", help="convert SmolLM2-135M-Instruct from its wheel; prints the folder")
    s.set_defaults(func=cmd_reasoner_smollm2)

    ranker = sub.add_parser("ranker", help="train and evaluate rankers").add_subparsers(dest="what", required=True)
    s = ranker.add_parser("train", help="train a two-tower or QE-Rec ranker")
    s.add_argument("--world", required=True)
    s.add_argument("--arch", choices=["two_tower", "qe_rec_gated", "qe_rec"], default="qe_rec_gated",
                   help="qe_rec_gated: two-tower + a query term gated by the query's confidence; qe_rec: the paper's")
    s.add_argument("--queries", default="none", help="none | teacher:NAME | need | reasoner:PATH")
    s.add_argument("--query-mode", choices=["last_token", "text", "both"], default="both",
                   help="how reasoner queries are embedded (teacher and need queries always use text)")
    s.add_argument("--nest", metavar="TWO_TOWER_DIR",
                   help="start from this trained two-tower (its encoder and towers, frozen); the query paths start at zero")
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=_positive_int, default=15)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=cmd_ranker_train)
    s = ranker.add_parser("eval", help="test metrics of a saved ranker, with 95% CIs")
    s.add_argument("--world", required=True)
    s.add_argument("--ranker", required=True)
    s.add_argument("--split", choices=["train", "valid", "test"], default="test")
    s.add_argument("--json", action="store_true")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=cmd_ranker_eval)

    s = sub.add_parser("run", help="the whole closed loop from a YAML config")
    s.add_argument("--config", required=True)
    s.add_argument("--world")
    s.add_argument("--out", default="runs/rgalign")
    s.add_argument("--seed", type=int)
    s.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished stage")
    s.add_argument("--until", help="stop after this stage (two_tower, headroom, reasoner_warm, qe_rec, control, "
                                   "round1/rg_sft, ..., final; rg_sft, dpo, ... mean round 1's): metrics.json and "
                                   "report.md hold the stages so far; --resume continues")
    s.add_argument("overrides", nargs="*", help="key.path=value, e.g. align.algorithm=ppo")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("diagnose", help="why a finished run did or did not move the ranking: per group, per stage")
    s.add_argument("run", help="a finished `rgalign run` folder")
    s.add_argument("--json", action="store_true", help="print the diagnosis as JSON (also kept in RUN/diagnose/)")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=cmd_diagnose)

    s = sub.add_parser("recommend", help="ranked intents for requests: features -> the stage's query -> its ranker")
    s.add_argument("run", help="a run folder, or a folder written by `rgalign export`")
    s.add_argument("--stage", default="final", help="final (default), control, qe_rec, two_tower, rg_sft, dpo, rg_cl, "
                                                    "calibrated_r1, ... or a state key (round1/calibrate)")
    s.add_argument("--requests", required=True, metavar="FILE.jsonl|-",
                   help="one request per line: a world sample row without clicked (- reads stdin)")
    s.add_argument("--top-k", type=_positive_int, default=3, help="intents per request (default 3)")
    s.add_argument("--out", help="write JSON lines here (all or nothing); default stdout")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=cmd_recommend)

    s = sub.add_parser("export", help="a stage's reasoner as a Hugging Face folder with a model card, "
                                      "its ranker and intent table beside it")
    s.add_argument("run", help="a run folder")
    s.add_argument("--stage", default="final", help="as for recommend (default final)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("compare", help="DPO vs PPO vs GRPO vs RLOO from the same RG-SFT checkpoint and reward budget")
    s.add_argument("--config", required=True)
    s.add_argument("--algos", default="dpo,ppo,grpo,rloo", help="comma-separated aligners")
    s.add_argument("--seeds", type=_seed_list, default=[0], help="comma-separated seeds")
    s.add_argument("--world")
    s.add_argument("--out", default="runs/compare")
    s.add_argument("--resume", action="store_true", help="continue an interrupted comparison")
    s.add_argument("overrides", nargs="*", help="key.path=value, e.g. align.reward_budget=4000")
    s.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RGALIGN_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.func(args)
    except Exception as e:
        lines = _input_error(e)
        if debug or lines is None:  # not an input error: a bug, with its traceback
            raise
    except SystemExit as e:  # a command's own `raise SystemExit("error: ...")`
        if debug or not isinstance(e.code, str):
            raise
        lines = [e.code.removeprefix("error: ")]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return 2


def _input_error(e: Exception) -> list[str] | None:
    """The ``error:`` lines (without the prefix) of an input error, or None for any other exception."""
    if isinstance(e, ConfigError):
        return e.problems
    if isinstance(e, WorldError):
        return [str(e)]
    if isinstance(e, ValueError) and str(e).startswith("config key "):
        return [str(e)]
    if isinstance(e, OSError) and e.filename is not None:  # a missing or unreadable input file or folder
        return [f"{e.filename}: {e.strerror or e}"]
    if isinstance(e, FileNotFoundError):  # raised with a message of its own (e.g. a reasoner that is not a folder)
        return [str(e)]
    return None


if __name__ == "__main__":
    sys.exit(main())
