"""The closed loop: world -> two-tower and QE-Rec -> frozen reward -> RG-SFT -> aligner -> RG-CL ->
calibration, for R rounds. Every stage writes under the run folder and is recorded in state.json, so
``resume`` skips finished stages.

Under N processes (torchrun / accelerate launch) every rank runs every stage; inside a stage the request loops
(generation, embedding, Best-of-N sampling and scoring) are split across ranks, the TRL trainers and PPO
train data-parallel, and everything that writes the run folder or trains a ranker runs on the main process
(``dist.on_main``) while the others wait for its result. A stage's result is the main process's, broadcast.

Stage evaluation and the keep-or-roll-back decision live in align/evaluate.py. Calibration makes the
aligned reasoner the new snapshot the ranker reads.
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import numpy as np

from .. import devices, dist
from ..faults import StageFault
from ..metrics import bootstrap_weights
from ..ranker.headroom import need_ranker
from ..ranker.protocol import resolve_ranker_class
from ..ranker.queries import query_embeddings, query_text_dims
from ..ranker.train import RankerData, load_ranker, save_ranker, score, train_ranker
from ..reasoner.model import serving_reasoner
from ..reasoner.prompt import build_prompts
from ..reasoner.queries import reasoner_queries
from ..reasoner.sft import sft, warm_start_pairs
from ..reasoner.tiny import build_tiny_reasoner
from ..world import World
from .aligners import ALIGNERS
from .best_of_n import (collect_candidates, current_kb_requests, room_requests, score_candidates, select_winners,
                        winner_pairs, with_copies)
from .calibrate import calibrate
from .evaluate import Evaluation, _record
from .loop_config import LoopConfig
from .rg_cl import run_rg_cl

def train_examples(sft_dir) -> dict | None:
    """What an SFT stage trained on: {"given", "trained", "dropped"} (the main process's count; the stage's
    result is the main process's)."""
    f = Path(sft_dir) / "train_examples.json"
    return json.loads(f.read_text()) if dist.is_main() and f.exists() else None


def sample_subset(indices: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """At most ``n`` of ``indices`` (None: all), drawn without replacement by ``seed``, in index order."""
    n = len(indices) if n is None else min(n, len(indices))
    return np.sort(np.random.default_rng(seed).choice(indices, n, replace=False))


def _scalars(record: dict, prefix: str = "") -> dict:
    """Flat numeric entries of a stage record (nested dicts joined with '/'), for TensorBoard."""
    out = {}
    for k, v in record.items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and k != "time":
            out[prefix + k] = float(v)
        elif isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}/"))
    return out


class ClosedLoop(Evaluation):
    def __init__(self, world: World, cfg: LoopConfig, out: str | Path, log=print):
        self.world, self.cfg, self.out, self.print = world, cfg, Path(out), log
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_path = self.out / "state.json"
        # the main process's read for every rank: on a shared filesystem another machine may still see an older
        # state.json (or none), and a rank that skips other stages than the rest pairs its collectives wrongly
        self.state = dist.broadcast(json.loads(self.state_path.read_text()) if dist.is_main() and self.state_path.exists()
                                    else {"done": {}})
        dist.set_threads(cfg.threads or dist.cpus_available())  # the machine's budget: N processes on one CPU share it
        devices.configure(cfg.log.report_to, cfg.log.checkpoint_every, cfg.log.progress, cfg.reasoner.serve_dtype,
                          cfg.reasoner.gradient_checkpointing)
        self.tb = None
        if cfg.log.report_to == "tensorboard" and dist.is_main():
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"))
        self.valid = sample_subset(world.indices("valid"), cfg.eval.max_valid, cfg.seed)
        self.test = world.indices("test")
        self.boot = bootstrap_weights(len(np.unique(world.user_codes[self.test])))
        self._rewards: dict = {}

    # ---- bookkeeping ---------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if not dist.is_main():
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")
        if self.tb is not None and "stage" in record:
            for key, value in _scalars(record).items():
                self.tb.add_scalar(f"{record['stage']}/{key}", value)
            for point in record.get("curve", []):
                for key in ("reward", "kl"):
                    self.tb.add_scalar(f"{record['stage']}/probe_{key}", point[key], point["step"])
            self.tb.flush()

    def say(self, text: str) -> None:
        if dist.is_main():
            self.print(text)

    def stage(self, name: str, fn, main_only: bool = False) -> dict:
        """Runs ``fn`` unless state.json says the stage finished; records its result. Every rank calls ``fn``
        (``main_only``: the main process alone, the others wait); the main process's result is the stage's."""
        if name in self.state["done"]:
            self.say(f"[{name}] done earlier, skipped")
            return self.state["done"][name]
        self.say(f"[{name}] ...")
        t = time.time()
        dist.shares()  # counts from here on are this stage's
        dist.reset_peak_memory()
        result = dist.on_main(fn) if main_only else fn()
        gc.collect()  # trainers hold reference cycles: free their models and activations before the next stage
        result["wall_s"] = round(time.time() - t, 1)
        result["peak_mem_mb"] = dist.peak_memory_mb()  # the main process's
        result["shares"] = dist.shares()  # items each rank generated / embedded / scored
        result = dist.broadcast(result)
        self.save_state(name, result)
        if dist.is_main():
            devices.drop_checkpoints(self.out)  # the stage is recorded: its trainer checkpoints are spent
        self.log(_record(name, result))
        dist.barrier()
        return result

    def save_state(self, name: str, result: dict) -> None:
        self.state["done"][name] = result
        if dist.is_main():
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=1))
            tmp.replace(self.state_path)

    # ---- stages --------------------------------------------------------------------------------
    def two_tower(self) -> dict:
        path = self.out / "two_tower"  # the production ranker: the built-in two-tower or ranker.class
        model, enc, hist = train_ranker(self.world, "two_tower", None, self.cfg.ranker.train, log=lambda *a: None,
                                        ranker_class=resolve_ranker_class(self.cfg.ranker.class_))
        save_ranker(path, model, enc, {"queries": "none", "query_mode": "text", "history": hist})
        scores = score(model, RankerData(self.world, enc), np.arange(len(self.world.samples)))
        return {"path": str(path), "metrics": self.test_metrics(scores, "two_tower")}

    def headroom(self) -> dict:
        """QE-Rec given the oracle's true-need text instead of a reasoner's query (text encoder), trained like
        the others: what a perfect reasoner could add to the two-tower in this world (DESIGN.md section 7)."""
        model, data, hist = need_ranker(self.world, self.cfg.ranker.train, self.cfg.ranker.arch, **self.nested("text"))
        # the history: nested, its epoch 0 is the two-tower start, which the report says when it is kept
        return {"metrics": self.test_metrics(score(model, data, np.arange(len(self.world.samples))), "headroom"),
                "history": hist}

    def reasoner_warm(self) -> dict:
        r = self.cfg.reasoner
        if r.preset == "tiny":
            base = dist.on_main(build_tiny_reasoner, self.world, self.out / "reasoner_init", r.tiny)
        else:
            from ..reasoner.smollm2 import resolve_reasoner

            base = dist.on_main(resolve_reasoner, r.preset)  # a conversion into the cache: one writer
        path = sft(base, self.world, warm_start_pairs(self.world), self.out / "reasoner_warm", r.warm)
        return {"path": str(path), "train_examples": train_examples(path)}

    def qe_rec(self, reasoner: str) -> dict:
        path = self.out / "qe_rec"
        r = self.cfg.ranker
        spec, mode = f"reasoner:{reasoner}", r.query_mode
        n = self.cfg.reasoner.max_new_tokens  # the queries the stages serve: QE-Rec trains on the same
        q = query_embeddings(self.world, spec, mode, max_new_tokens=n)  # every rank generates and embeds its share

        def train():
            model, enc, hist = train_ranker(self.world, r.arch, q, r.train, log=lambda *a: None,
                                            **self.nested(mode))
            save_ranker(path, model, enc, {"queries": spec, "query_mode": mode, "history": hist, "max_new_tokens": n,
                                           "nested_in": str(self.out / "two_tower") if r.nest else None})

        dist.on_main(train)
        return {"path": str(path), "reasoner": reasoner, **self.evaluate_reasoner(reasoner, str(path), "qe_rec")}

    def nested(self, mode: str) -> dict:
        """train_ranker's arguments for a QE-Rec of the configured design reading ``mode`` queries: nested in
        the two-tower stage's ranker (its encoder, its frozen towers) when ``ranker.nest`` is on; otherwise a new
        QE-Rec, or the ``ranker.class`` itself reading the query."""
        kw = {"query_text": query_text_dims(mode)}
        if self.cfg.ranker.nest:
            kw["nest"], kw["encoder"], _ = load_ranker(self.out / "two_tower")
        else:
            kw["ranker_class"] = resolve_ranker_class(self.cfg.ranker.class_)
        return kw

    def rg_sft(self, rnd: int, reasoner: str, ranker_dir: str) -> dict:
        s, w = self.cfg.best_of_n, self.world
        idx = sample_subset(w.indices("train"), s.max_requests, self.cfg.seed + rnd)
        model, tok = serving_reasoner(reasoner)  # samples only
        prompts = build_prompts(w, idx, tok)
        cands = collect_candidates(w, idx, prompts, (model, tok), s.reasoner_samples, s.temperature, self.cfg.seed + rnd)
        scores = score_candidates(self.reward_fn(ranker_dir), w, idx, prompts, cands, s.score_batch)
        winners, share = select_winners(cands, scores)  # the same on every rank: gathered candidates and scores
        pairs, room = winner_pairs(idx, cands, winners), None
        if s.room_weight > 1:
            tt = self.state["done"]["two_tower"]["path"]  # the production ranker, as the two_tower stage saved it
            # decided once (MiniLM's vectors may differ in the last bits between ranks' caches): every rank copies alike
            room = dist.on_main(room_requests, w, tt, [i for i, _ in pairs], [q for _, q in pairs])
            pairs = with_copies(pairs, room, s.room_weight)
        current = None
        if s.current_kb_weight > 1:
            current = current_kb_requests(w, [i for i, _ in pairs])
            pairs = with_copies(pairs, current, s.current_kb_weight)
        out = sft(reasoner, w, pairs, self.out / f"round{rnd}" / "rg_sft", s.sft)
        if dist.is_main():
            (self.out / f"round{rnd}" / "candidates.json").write_text(json.dumps(
                {"indices": idx.tolist(), "candidates": cands, "rewards": scores}))
        shares = {"room_share": room, "current_kb_share": current}
        return {"path": str(out), "train_examples": train_examples(out), "winner_share": share,
                "mean_winner_reward": float(np.mean([r[k] for r, k in zip(scores, winners) if k >= 0])),
                **{k: float(v.mean()) for k, v in shares.items() if v is not None}}

    def run(self, until: str | None = None) -> dict:
        """All rounds, or the stages up to and including ``until`` (``qe_rec`` for a cheap ranker experiment;
        ``round1/rg_sft`` is the checkpoint `rgalign compare` hands to every aligner; ``rg_sft``, ``dpo``,
        ``rg_cl``, ``calibrate`` mean round 1's, ``final`` the last calibration)."""
        stages, side = [], {}
        stop = self.stop_key(until)
        self._stages(stages, side, stop)
        for name in ("control", "headroom"):
            if side.get(name) is not None:
                stages.append({"name": name, "key": name, **side[name]})
        summary = self._summarised(stages, control=side.get("control"))
        if stop is not None and stop != f"round{self.cfg.rounds}/calibrate":  # `final` is the whole run
            # the stages run so far (state keys, in order): the report says the run stopped early
            summary["stopped_early"] = {"until": until, "after": stop, "done": list(self.state["done"])}
        return summary

    def stop_key(self, until: str | None) -> str | None:
        return self.check_until(self.cfg, until)

    @staticmethod
    def check_until(cfg: LoopConfig, until: str | None) -> str | None:
        """The state key of stage ``until`` (None: run everything); ``SystemExit("error: ...")`` naming the stages
        for a stage the run lacks (the CLI prints it as one line, exit status 2)."""
        if until is None:
            return None
        rounds, algo = cfg.rounds, cfg.align.algorithm
        keys = ["two_tower", "headroom", "reasoner_warm", "qe_rec", "control"] + [
            f"round{r}/{s}" for r in range(1, rounds + 1) for s in ("rg_sft", algo, "rg_cl", "calibrate")]
        key = {"final": f"round{rounds}/calibrate"}.get(until, until if until in keys else f"round1/{until}")
        if key not in keys:
            raise SystemExit(f"error: --until {until}: not a stage of this run; one of {', '.join(keys)} or final")
        return key

    def _stages(self, stages: list, side: dict, stop: str | None) -> None:
        """Runs the stages in order into ``stages`` (control and headroom into ``side``), up to ``stop``."""
        cfg = self.cfg
        stages.append({"name": "two_tower", **self.stage("two_tower", self.two_tower, main_only=True)})
        if stop == "two_tower":
            return
        if cfg.eval.headroom and self.world.has_needs:
            side["headroom"] = self.stage("headroom", self.headroom, main_only=True)
        if stop == "headroom":
            return
        warm = self.stage("reasoner_warm", self.reasoner_warm)["path"]
        if stop == "reasoner_warm":
            return
        qe = self.stage("qe_rec", lambda: self.qe_rec(warm))
        stages.append({"name": "qe_rec", **qe})
        if stop == "qe_rec":
            return
        if cfg.eval.control:
            side["control"] = self.stage("control", lambda: self.control(warm, qe["path"]))
        if stop == "control":
            return
        reasoner, ranker_dir = warm, qe["path"]
        for rnd in range(1, cfg.rounds + 1):
            key = f"round{rnd}/rg_sft"
            sft_res = self.stage(key, self.guarded(lambda: self.rg_sft(rnd, reasoner, ranker_dir), reasoner))
            sft_res = self.checked(key, sft_res, ranker_dir, base=reasoner, prev=stages[-1])
            stages.append({"name": "rg_sft" if cfg.rounds == 1 else f"rg_sft_r{rnd}", "key": key, **sft_res})
            if stop == key:
                return
            cur = sft_res["use"]
            algo = cfg.align.algorithm
            key = f"round{rnd}/{algo}"
            al = self.stage(key, self.guarded(lambda: ALIGNERS[algo](self, rnd, cur, ranker_dir), cur))
            al = self.checked(key, al, ranker_dir, base=cur, prev=stages[-1])
            stages.append({"name": algo if cfg.rounds == 1 else f"{algo}_r{rnd}", "key": key, **al})
            if stop == key:
                return
            cur = al["use"]
            if cfg.rg_cl.epochs > 0:
                key = f"round{rnd}/rg_cl"
                cl = self.checked(key, self.stage(key, self.guarded(lambda: self.rg_cl(rnd, cur, ranker_dir), cur)),
                                  ranker_dir, base=cur, prev=stages[-1])
                stages.append({"name": "rg_cl" if cfg.rounds == 1 else f"rg_cl_r{rnd}", "key": key, **cl})
                cur = cl["use"]
            if stop == f"round{rnd}/rg_cl":
                return
            key = f"round{rnd}/calibrate"
            cal = self.stage(key, lambda: self.calibrate(rnd, cur, ranker_dir))
            ranker_dir, reasoner = cal["path"], cur
            stages.append({"name": "final" if rnd == cfg.rounds else f"calibrated_r{rnd}", "key": key, **cal})
            if stop == key:
                return

    def guarded(self, fn, base: str):
        """``fn`` (a reasoner stage), or on a fault (:class:`StageFault`: no DPO pair, a non-finite reward or
        loss, a frozen ranker that does not read what RG-CL trains) a result that rolls the stage back to
        ``base``, its starting reasoner, with the reason; with
        ``eval.on_fault: stop`` the fault ends the run."""
        def run() -> dict:
            try:
                return fn()
            except StageFault as e:
                if self.cfg.eval.on_fault == "stop":
                    raise
                self.say(f"  fault: {e}; rolled back to the stage's starting reasoner ({base})")
                return {"path": base, "fault": f"{type(e).__name__}: {e}"}
        return run

    def rg_cl(self, rnd: int, reasoner: str, ranker_dir: str) -> dict:
        w, s = self.world, self.cfg.rg_cl
        clicked = np.array([i for i in w.indices("train") if w.samples.clicked.lengths[i]])
        idx = sample_subset(clicked, s.max_requests, self.cfg.seed + rnd)  # generate only what it trains on
        prompts, queries = reasoner_queries(w, reasoner, idx, max_new_tokens=self.cfg.reasoner.max_new_tokens)
        ranker, _, meta = load_ranker(ranker_dir)
        # one process: RG-CL is a few hundred steps, small next to generation (sharded above)
        hist = dist.on_main(run_rg_cl, reasoner, w, ranker, meta["query_mode"], prompts, queries, idx,
                            self.out / f"round{rnd}" / "rg_cl", s)
        return {"path": str(self.out / f"round{rnd}" / "rg_cl"), "loss_first": hist[0]["loss/rg_cl"],
                "loss_last": hist[-1]["loss/rg_cl"], "steps": len(hist)}

    def recalibrated(self, rnd: int, reasoner: str, ranker_dir: str, out: Path) -> str:
        """Round ``rnd``'s calibration of the ranker in ``ranker_dir`` on ``reasoner``'s queries (one set of
        settings for the loop and its control, so the two stay comparable)."""
        r = self.cfg.ranker
        return str(calibrate(self.world, reasoner, ranker_dir, out, r.calib_kl_weight, r.calib_epochs,
                             self.cfg.seed + rnd, log=lambda *a: None, train=r.train, max_requests=r.calib_max_requests,
                             max_new_tokens=self.cfg.reasoner.max_new_tokens, kl_inputs=r.calib_kl_inputs))

    def control(self, warm: str, ranker_dir: str) -> dict:
        """The loop's calibration schedule (one per round) with the warm, unaligned reasoner: what the extra
        ranker training gives by itself, so that final - control is what alignment added."""
        for rnd in range(1, self.cfg.rounds + 1):
            ranker_dir = self.recalibrated(rnd, warm, ranker_dir, self.out / "control" / f"round{rnd}")
        return {"path": ranker_dir, "reasoner": warm, **self.evaluate_reasoner(warm, ranker_dir, "control")}

    def calibrate(self, rnd: int, reasoner: str, ranker_dir: str) -> dict:
        path = self.recalibrated(rnd, reasoner, ranker_dir, self.out / f"round{rnd}" / "ranker")
        return {"path": path, "reasoner": reasoner, **self.evaluate_reasoner(reasoner, path, f"round{rnd}/calibrate")}

