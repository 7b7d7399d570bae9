"""What each `rgalign` subcommand does with its parsed flags (the parser and error handling: cli.py)."""
from __future__ import annotations

import json
import sys

from .world import load_world


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
