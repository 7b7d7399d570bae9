"""Per-process peak memory of every stage of the closed loop, for a model x engine (plain / ZeRO-2 / ZeRO-3) x N
processes, following what the code keeps alive in each stage (issue 27). An estimate from first principles, not a
measurement: weights, gradients and optimizer states by engine, every model copy a stage loads or keeps, KV caches
and saved activations by batch and sequence length. Its CPU predictions are checked against measured peaks by
bench/memory_check.py.

    python bench/memory_plan.py                          # Llama-3-8B-sized reasoner, smollm2.yaml, 8 x 80 GB
    python bench/memory_plan.py --model smollm2-135m --gpus 1,8 --gpu-gb 80
    python bench/memory_plan.py --model path/to/config.json --config my.yaml --prompt-tokens 700 --lora
    python bench/memory_check.py RUN [RUN ...]           # its CPU predictions vs a finished run's measured peaks

What each stage holds (rank 0, the main process, which holds the most; read from rgalign_rl/ at the time of
writing — a change there changes these rows):
- every trainer model comes from ``load_reasoner``: a full fp32 copy on the process's device before any engine
  takes it (``zero3_init_flag: false``); DeepSpeed then casts (bf16) and partitions it;
- warm start / RG-SFT: TRL SFTTrainer; RG-SFT also keeps its sampler (a serving copy) alive through ``sft()``;
- DPO: policy + reference (both full fp32 loads; with LoRA the reference is dropped after loading), TRL prepares
  the reference (plain: fp32 as loaded; ZeRO-2: a stage-0 engine in the compute dtype; ZeRO-3: partitioned);
  the sampler stays alive as the probe's reference;
- PPO: policy + value head in the engine, a full fp32 reference per rank (never partitioned), under ZeRO-3 the
  whole policy gathered for every rollout (TRL's ``unwrap_model_for_generation``), full [rows, seq, vocab]
  logits of policy and reference in the rollout;
- RG-CL: on rank 0 alone, outside any engine: fp32 model + fp32 AdamW (or LoRA), a deep copy as the KL anchor
  (without LoRA), fp32 activations of ``rg_cl.batch_size`` whole sequences;
- every reward (one per ranker for the rest of the run: QE-Rec's, the control's, each calibration's) keeps a
  serving copy of the snapshot its ranker reads (query_mode last_token/both);
- a reasoner stage's evaluation loads two copies in the serving dtype (policy and its start) for ``sampled_kl``, whose
  [prompts (<= 256 per batch), response + 1, vocab] logits (``logits_to_keep``) are built in fp32;
- generation runs in batches of 256 with a KV cache; the last-token embedding runs the decoder alone (the last
  layer's states only; a KV cache only for a shared head's prefix).

Units: GB = 2^30 bytes, MB = 2^20 (as torch and the loop's ``peak_mem_mb`` count). GPU figures are bytes
allocated by tensors; the CUDA context and the caching allocator's slack (~1-3 GB) come on top, hence the
70 GB flag on an 80 GB card.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB, MB = 2**30, 2**20
GEN_BATCH = 256  # generate_queries / last_token_embedding / sampled_kl batch size
MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2, fp32 on the device once loaded
CHUNK = 32768  # TRL's chunked LM-head tile (GPU): labelled tokens x this many logits at a time


# ---- the reasoner's shape -----------------------------------------------------------------------------------
@dataclass
class Arch:
    name: str
    vocab: int
    layers: int
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    tied: bool

    @property
    def kv(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv, self.inter
        return 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h

    @property
    def params(self) -> int:
        emb = self.vocab * self.hidden
        return emb * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def lora_params(self, r: int, targets: list[str]) -> int:
        h, kv, i = self.hidden, self.kv, self.inter
        size = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h), "gate_proj": (h, i),
                "up_proj": (h, i), "down_proj": (i, h)}
        return self.layers * sum(r * (a + b) for a, b in (size[t] for t in targets if t in size))


PRESETS = {
    "llama3-8b": Arch("Llama-3-8B", 128256, 32, 4096, 14336, 32, 8, False),
    "smollm2-135m": Arch("SmolLM2-135M", 49152, 30, 576, 1536, 9, 3, True),
}


def arch_from(spec: str, cfg) -> Arch:
    if spec in PRESETS:
        return PRESETS[spec]
    if spec == "tiny":
        t = cfg.reasoner.tiny
        return Arch("tiny", t.vocab_size, t.num_hidden_layers, t.hidden_size, t.intermediate_size,
                    t.num_attention_heads, t.num_attention_heads, True)
    c = json.loads(Path(spec).read_text())
    return Arch(Path(spec).parent.name or spec, c["vocab_size"], c["num_hidden_layers"], c["hidden_size"],
                c["intermediate_size"], c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"]),
                bool(c.get("tie_word_embeddings", False)))


@dataclass
class Shape:
    prompt: int        # prompt tokens (a request's whole prompt)
    head: int = 0      # of which a shared head (legend prompts: computed once per call, its KV copied per row)
    requests: int = 55_000  # world size (ShopSim default ~55k); train/valid/test = 4/6, 1/6, 1/6


# ---- what one stage holds ----------------------------------------------------------------------------------
@dataclass
class Setup:
    arch: Arch
    cfg: object        # LoopConfig
    shape: Shape
    engine: str        # plain | zero2 | zero3
    n: int             # processes
    device: str        # gpu | cpu
    cpu_bf16: bool = False  # a CPU with native bf16 (serve_dtype auto -> bfloat16)
    persist: list = field(default_factory=list)  # (label, bytes) alive across stages on rank 0
    aligners: list = field(default_factory=list)  # rows for these aligners (default: the YAML's align.algorithm)
    cfg_lora_r: int = 8  # LoRA rank and targets of the stage being planned (set by lora_of)
    cfg_lora_targets: list = field(default_factory=lambda: ["q_proj", "v_proj"])

    @property
    def P(self) -> int:
        return self.arch.params

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"

    @property
    def cb(self) -> int:  # bytes of the trainers' compute dtype (bf16 on GPUs, fp32 on CPU)
        return 2 if self.gpu else 4

    @property
    def sb(self) -> int:  # bytes of a serving copy (reasoner.serve_dtype)
        d = self.cfg.reasoner.serve_dtype
        if d == "auto":
            return 2 if self.gpu or self.cpu_bf16 else 4
        return 2 if d == "bfloat16" else 4

    @property
    def new(self) -> int:
        return self.cfg.reasoner.max_new_tokens

    @property
    def seq(self) -> int:  # prompt + query
        return self.shape.prompt + self.new

    def rows(self, n_items: int, per_rank: bool = True) -> int:
        return max(1, min(GEN_BATCH, math.ceil(n_items / (self.n if per_rank else 1))))

    @property
    def split(self) -> dict:
        n = self.shape.requests
        return {"train": n * 4 // 6, "valid": n // 6, "test": n // 6}

    # -- building blocks (bytes) --
    def serve_copy(self, label: str) -> tuple:
        return (label, self.sb * self.P)

    def generation(self, rows: int, nbytes: int | None = None, label: str = "generation") -> list:
        a, b = self.arch, nbytes or self.sb
        tail = self.shape.prompt - self.shape.head
        kv = 2 * a.layers * rows * (self.seq) * a.kv * b
        layer = rows * tail * (4 * a.hidden + 3 * a.inter) * b  # one layer's prefill intermediates
        return [(f"{label}: KV cache {rows} rows", kv), (f"{label}: prefill", layer + 2 * rows * a.vocab * 4)]

    def embedding(self, rows: int, label: str = "last-token embedding") -> list:
        a, b = self.arch, self.sb
        tail = self.seq - self.shape.head
        # the decoder alone (reasoner/model.py last_hidden_states): the last layer's states only, and a KV cache
        # only where a shared head's cache comes in (the legend prompt's), which then grows by the tail
        kv = 2 * a.layers * rows * self.seq * a.kv * b if self.shape.head else 0
        hidden = 2 * rows * tail * a.hidden * b  # the residual stream and the last layer's output
        layer = rows * tail * (4 * a.hidden + 3 * a.inter) * b
        return [(f"{label}: KV cache {rows} rows", kv), (f"{label}: hidden states", hidden + layer)]

    def activations(self, rows: int, nbytes: int, label: str = "activations", cache: bool = False) -> tuple:
        """Saved for backward, per token and layer (HF Llama, SDPA): each RMSNorm's input and normalised output
        (2 x 2h), the rotated q (h), k and v as SDPA gets them (repeated to h each under grouped-query attention with
        a padding mask, else kv), SDPA's output and o_proj's contiguous input (2h), the MLP's gate, act(gate), up and
        their product (4i). SDPA's CPU flash kernel and the GPU kernels keep no seq^2 matrix (measured on CPU).
        ``cache``: a forward that leaves ``use_cache`` on (PPO) also keeps k and v (2 kv). With
        ``reasoner.gradient_checkpointing`` each layer keeps its input only, and one layer is recomputed at a time."""
        a = self.arch
        kv_saved = a.hidden if a.kv < a.hidden else a.kv
        per_layer = 2 * a.hidden + (a.hidden + 2 * kv_saved) + 2 * a.hidden + 2 * a.hidden + 4 * a.inter
        if self.cfg.reasoner.gradient_checkpointing:
            per_token, label = a.layers * a.hidden + per_layer + a.hidden, label + " (checkpointed)"
        else:
            per_token = a.layers * (per_layer + (2 * a.kv if cache else 0)) + a.hidden
        return (f"{label}: {rows} x {self.seq} tokens", rows * self.seq * per_token * nbytes)

    def lm_head(self, labelled: int) -> tuple:
        """TRL's LM head on labelled positions only: plain log-softmax on CPU (trl_cpu.py), tiles on GPU."""
        width = self.arch.vocab if not self.gpu else min(self.arch.vocab, CHUNK)
        return ("LM head (labelled tokens)", labelled * width * 4 * 3)

    def trained(self, lora: bool, label: str = "policy", engine: str | None = None) -> list:
        """Weights, gradients and AdamW states of one trained model per process."""
        P, n, e = self.P, self.n, engine or self.engine
        L = self.arch.lora_params(self.cfg_lora_r, self.cfg_lora_targets) if lora else 0
        if e == "plain":
            out = [(f"{label} weights fp32", 4 * P)]
            trainable = L if lora else P
            out.append((f"{label} grads + AdamW fp32", 12 * trainable))
            if n > 1:
                out.append((f"{label} DDP buckets", 4 * trainable))
            if self.gpu and not lora:  # bf16 autocast caches a bf16 copy of every trainable weight per step
                out.append((f"{label} autocast bf16 weight cache", 2 * P))
            return out
        if e == "zero2":
            if lora:
                return [(f"{label} weights ({'bf16' if self.gpu else 'fp32'})", self.cb * P), (f"{label} LoRA states", 16 * L)]
            # fp32 master partition (a clone even when training in fp32), fp32 gradient partition, AdamW
            return [(f"{label} weights ({'bf16' if self.gpu else 'fp32'})", self.cb * P),
                    (f"{label} master + grads + AdamW / {n}", 16 * P // n)]
        # zero3: everything partitioned; the gathered working set on top
        ws = self.cb * (2 * self.arch.layer_params() + self.arch.vocab * self.arch.hidden)
        if lora:
            return [(f"{label} weights / {n}", self.cb * P // n), (f"{label} LoRA states", 16 * L),
                    (f"{label} gathered layers (ZeRO-3)", ws)]
        return [(f"{label} weights + master + grads + AdamW / {n}", (self.cb + 4 + 4 + 8) * P // n),
                (f"{label} gathered layers (ZeRO-3)", ws)]

    def loaded(self, k: int = 1, label: str = "full fp32 load(s) before the engine") -> tuple:
        return (f"{label} x{k}", 4 * self.P * k)

    def lora_of(self, s) -> bool:
        self.cfg_lora_r, self.cfg_lora_targets = s.lora_r, s.lora_target_modules
        return bool(s.lora)

    # -- the stages: {phase: [(label, bytes)]} --
    def ranker_stage(self, text: bool) -> dict:
        items = [("ranker + batches (estimate)", int(0.25 * GB) if self.gpu else 0)]
        if text:
            items.append(("text encoder (MiniLM fp32)", 4 * MINILM_PARAMS))
        return {"ranker fit": items}

    def sft_phases(self, s, extra: list, label: str = "SFT") -> dict:
        lora = self.lora_of(s)
        rows = max(1, s.batch_size // self.n)
        states = self.trained(lora)
        act = [self.activations(rows, self.cb), self.lm_head(rows * (self.new + 1))]
        return {f"{label}: load": extra + [self.loaded(1)],
                f"{label}: train step": extra + states + act,
                f"{label}: optimizer step": extra + states + [("AdamW temporaries", 8 * self.trainable(lora))]}

    def trainable(self, lora: bool) -> int:
        """Trainable parameters this process steps (foreach AdamW allocates ~2 fp32 temporaries of them)."""
        if lora:
            return self.arch.lora_params(self.cfg_lora_r, self.cfg_lora_targets)
        return self.P if self.engine == "plain" else self.P // self.n

    def add_reward(self, label: str, snapshot: str) -> None:
        """A reward keeps a serving copy of the snapshot its ranker reads; rewards (and samplers) reading the same
        snapshot share one (reasoner/model.py serving_reasoner)."""
        if self.cfg.ranker.query_mode in ("last_token", "both") and self.cfg.reward.scorer.ranker is None \
                and snapshot not in self.held:
            self.held.add(snapshot)
            self.persist.append(self.serve_copy(f"{snapshot} snapshot (rewards: {label}): serving copy"))

    def evaluation(self, n_eval: int, reference: bool, new_snapshot: bool = True, reward_new: str | None = None,
                   reward_new_copy: bool = True) -> dict:
        """evaluate_reasoner: generate (valid + test, split over ranks), embed (a transient copy of the ranker's
        snapshot), the reward on valid (main), sampled_kl (main: two copies in the serving dtype)."""
        p = list(self.persist)
        nv = min(self.cfg.eval.max_valid, self.split["valid"])
        out = {}
        if new_snapshot:
            out["eval: generate"] = p + [self.serve_copy("serving copy")] + self.generation(self.rows(n_eval))
        ranker_copy = [] if "warm" in self.held else [self.serve_copy("serving copy (ranker's snapshot)")]
        out["eval: embed"] = p + ranker_copy + self.embedding(self.rows(n_eval))
        rew = [self.serve_copy(f"reward ({reward_new}): serving copy")] if reward_new and reward_new_copy else []
        out["eval: reward on valid"] = p + rew + self.embedding(self.rows(nv, per_rank=False), "reward embedding")
        if reference:
            k = self.rows(min(nv, 512), per_rank=False)
            a = self.arch
            # logits_to_keep: the response positions only, [k, new + 1, vocab], and their log-softmax
            logits = k * (self.new + 1) * a.vocab * 4
            sl = 2 * k * self.new * a.vocab * 4
            out["eval: sampled_kl"] = p + rew + [("policy + start, serving dtype", 2 * self.sb * self.P),
                                                 (f"sampled_kl logits fp32 [{k}, {self.new + 1}, vocab]", logits + sl)]
        return out

    def plan(self) -> list[tuple[str, dict]]:
        """[(stage, {phase: items})] in the loop's order, rank 0."""
        c, sp, st = self.cfg, self.split, []
        self.persist, self.held = [], set()
        st.append(("two_tower", self.ranker_stage(False)))
        if c.eval.headroom:
            st.append(("headroom", self.ranker_stage(True)))
        self.persist.append(("text encoder (MiniLM fp32)", 4 * MINILM_PARAMS))
        st.append(("reasoner_warm", self.sft_phases(c.reasoner.warm, list(self.persist), "warm SFT")))
        n_all = self.shape.requests
        ph = {"generate all requests": self.persist + [self.serve_copy("serving copy")] + self.generation(self.rows(n_all)),
              "embed all requests": self.persist + [self.serve_copy("serving copy")] + self.embedding(self.rows(n_all))}
        n_eval = min(c.eval.max_valid, sp["valid"]) + sp["test"]
        ev = self.evaluation(n_eval, reference=False, new_snapshot=False, reward_new="QE-Rec")
        st.append(("qe_rec", {**ph, **ev}))
        self.add_reward("QE-Rec", "warm")
        if c.eval.control:  # the control's ranker reads the warm snapshot too: its reward shares QE-Rec's copy
            ev = self.evaluation(n_eval, reference=False, new_snapshot=False, reward_new="control",
                                 reward_new_copy=False)
            st.append(("control", {"calibration embed (cached)": list(self.persist), **ev}))
            self.add_reward("control", "warm")
        for rnd in range(1, c.rounds + 1):
            b = c.best_of_n
            reqs = min(b.max_requests or sp["train"], sp["train"])
            start = "warm" if rnd == 1 else f"round {rnd - 1} final"  # RG-SFT samples from the round's start
            sampler = [] if start in self.held else [self.serve_copy("RG-SFT sampler (alive through sft)")]
            base = self.persist + sampler
            n_teach = 3
            ph = {"sample candidates": base + self.generation(self.rows(reqs * b.reasoner_samples), label="sampling"),
                  "score candidates": base + self.embedding(self.rows(reqs * (b.reasoner_samples + n_teach)), "reward embedding")}
            ph.update(self.sft_phases(b.sft, base, "RG-SFT"))
            st.append((f"round{rnd}/rg_sft", ph))
            st.append((f"round{rnd}/rg_sft/eval", self.evaluation(n_eval, reference=True)))
            for algo in self.aligners or [c.align.algorithm]:  # `rgalign compare` runs each from here
                st.append((f"round{rnd}/{algo}", getattr(self, f"align_{algo}", self.align_online)()))
            st.append((f"round{rnd}/{algo}/eval" if len(self.aligners) < 2 else f"round{rnd}/<aligner>/eval",
                       self.evaluation(n_eval, reference=True)))
            if c.rg_cl.epochs > 0:
                st.append((f"round{rnd}/rg_cl", self.rg_cl()))
                st.append((f"round{rnd}/rg_cl/eval", self.evaluation(n_eval, reference=True)))
            calib = min(c.ranker.calib_max_requests or sp["train"], sp["train"]) + min(c.eval.max_valid, sp["valid"])
            ph = {"calibration: generate": self.persist + [self.serve_copy("serving copy")] + self.generation(self.rows(calib)),
                  "calibration: embed": self.persist + [self.serve_copy("serving copy")] + self.embedding(self.rows(calib))}
            ph.update(self.evaluation(n_eval, reference=False, reward_new=f"round {rnd} ranker"))
            st.append((f"round{rnd}/calibrate", ph))
            self.add_reward(f"round {rnd} ranker", f"round {rnd} final")
        return st

    def align_dpo(self, sampler: bool = True) -> dict:
        a, s = self.cfg.align, self.cfg.align.dpo
        lora = self.lora_of(s)
        reqs = min(a.max_requests, self.split["train"])
        if a.reward_budget:
            reqs = min(reqs, a.reward_budget // (3 + a.dpo_samples))
        base = self.persist + ([self.serve_copy("DPO sampler (the probe's reference)")] if sampler else [])
        rows = 2 * max(1, s.batch_size // self.n)  # chosen + rejected
        states = self.trained(lora)
        ref = self.trl_reference(lora)
        ph = {"sample candidates": base + self.generation(self.rows(reqs * a.dpo_samples), label="sampling"),
              "score candidates": base + self.embedding(self.rows(reqs * (a.dpo_samples + 3)), "reward embedding"),
              # the policy in fp32; the reference in the serving dtype, none with LoRA (align/dpo.py)
              "load policy + reference": base + [self.loaded(1)] + ([] if lora else [self.serve_copy("reference")]),
              "train step": base + states + ref + [self.activations(rows, self.cb), self.lm_head(rows * (self.new + 1))]}
        if a.probe.prompts > 0 and self.engine != "zero3":  # the probe steps aside on ZeRO-3 shards
            k = self.rows(a.probe.prompts, per_rank=False)
            pol_b = 4 if self.engine == "plain" else self.cb
            ph["probe (sampled_kl)"] = base + states + ref + self.generation(k, pol_b, "probe sampling") + [
                (f"probe logits [{k}, {self.new + 1}, vocab]", k * (self.new + 1) * self.arch.vocab * pol_b)]
        return ph

    def trl_reference(self, lora: bool) -> list:
        """A TRL trainer's reference model once prepared: none with LoRA (adapters off), fp32 as loaded without an
        engine, a stage-0 DeepSpeed engine in the compute dtype under ZeRO-2, partitioned under ZeRO-3."""
        if lora:
            return []
        if self.engine == "plain":
            return [("reference, serving dtype (TRL, as loaded)", self.sb * self.P)]
        if self.engine == "zero2":
            return [("reference (TRL stage-0 engine)", self.cb * self.P)]
        return [("reference / N (TRL ZeRO-3 engine)", self.cb * self.P // self.n),
                ("reference gathered layers", self.cb * (2 * self.arch.layer_params() + self.arch.vocab * self.arch.hidden))]

    def align_ppo(self) -> dict:
        a, s = self.cfg.align, self.cfg.align.ppo
        lora = self.lora_of(s)
        states = self.trained(lora)
        ref = [("PPO reference, serving dtype, full, per rank", self.sb * self.P)]
        rows, mb = max(1, s.batch_size // self.n), max(1, s.mini_batch_size // self.n)
        seq, V = self.seq, self.arch.vocab
        gathered = [("policy gathered for generation (ZeRO-3)", self.cb * self.P)] if self.engine == "zero3" else []
        pol_b = 4 if self.engine == "plain" else self.cb  # logits' dtype: fp32 weights without an engine
        p = list(self.persist)
        ph = {"load policy + reference": p + [self.loaded(1)] + ref,
              "rollout: generate": p + states + ref + gathered + self.generation(rows, pol_b, "rollout"),
              "rollout: logits": p + states + ref + [
                  (f"policy + reference logits [{rows}, {seq}, vocab]", rows * seq * V * (pol_b + 4)),
                  ("policy hidden states", (self.arch.layers + 1) * rows * seq * self.arch.hidden * pol_b)],
              "update step": p + states + ref + [self.activations(mb, self.cb, cache=True),
                                                 (f"logits [{mb}, {seq}, vocab]", mb * seq * V * pol_b * 2)]}
        if a.probe.prompts > 0 and self.engine != "zero3":
            k = self.rows(a.probe.prompts, per_rank=False)
            ph["probe (sampled_kl)"] = p + states + ref + self.generation(k, pol_b, "probe sampling") + [
                (f"probe logits [{k}, {self.new + 1}, vocab]", k * (self.new + 1) * V * 4)]
        return ph

    def align_online(self, algo: str = "grpo") -> dict:
        """GRPO / RLOO through TRL (coarser than DPO/PPO: policy, TRL's reference when its beta > 0 (RLOO's default
        0.05; TRL loads it from the policy's folder), generation with the policy gathered under ZeRO-3, a step)."""
        s = self.cfg.align.online
        lora = self.lora_of(s)
        rows = max(1, s.prompts_per_step // self.n) * s.num_generations
        states = self.trained(lora)
        beta = s.beta if s.beta is not None else (0.05 if algo == "rloo" else 0.0)
        ref = self.trl_reference(lora) if beta > 0 else []
        gathered = [("policy gathered for generation (ZeRO-3)", self.cb * self.P)] if self.engine == "zero3" else []
        p = list(self.persist)
        return {"load": p + [self.loaded(1 + (beta > 0 and not lora and self.engine != "zero3"))],
                "generate": p + states + ref + gathered + self.generation(rows, self.cb, "generation"),
                "train step": p + states + ref + [self.activations(rows, self.cb), self.lm_head(rows * (self.new + 1))]}

    def align_grpo(self) -> dict:
        return self.align_online("grpo")

    def align_rloo(self) -> dict:
        return self.align_online("rloo")

    def rg_cl(self) -> dict:
        s = self.cfg.rg_cl
        lora = self.lora_of(s)
        P, L = self.P, self.arch.lora_params(s.lora_r, s.lora_target_modules)
        rows = s.batch_size  # rank 0 alone, the whole batch
        a = self.arch
        model = [("RG-CL model fp32 (rank 0, no engine)", 4 * P),
                 ("RG-CL grads + AdamW fp32", 12 * (L if lora else P))]
        if s.kl_weight and not lora:
            model.append(self.serve_copy("RG-CL anchor: the start's serving copy"))
        ref_hidden = 2 * rows * self.seq * a.hidden * self.sb if s.kl_weight else 0  # the decoder's last states
        kl = 3 * rows * (self.new + 1) * a.vocab * 4 if s.kl_weight else 0
        p = list(self.persist)
        return {"generate": p + [self.serve_copy("serving copy")] + self.generation(self.rows(s.max_requests)),
                "train step": p + model + [self.activations(rows, 4, "activations fp32"),
                                           ("anchor forward hidden states + KL log-probs", ref_hidden + kl)],
                "optimizer step": p + model + [("AdamW temporaries", 8 * (L if lora else P))]}


def peak(phases: dict) -> tuple[int, str, list]:
    best = max(phases.items(), key=lambda kv: sum(b for _, b in kv[1]))
    return sum(b for _, b in best[1]), best[0], best[1]


def top(items: list, k: int = 3) -> str:
    merged: dict[str, int] = {}
    for label, b in items:
        merged[label] = merged.get(label, 0) + b
    return ", ".join(f"{lab} {b / GB:.1f}" for lab, b in sorted(merged.items(), key=lambda x: -x[1])[:k] if b >= 0.05 * GB)


def load_cfg(path: str, overrides: list[str]):
    sys.path.insert(0, str(ROOT))
    from rgalign_rl.align.loop_config import loop_config
    from rgalign_rl.config import load_yaml

    return loop_config(load_yaml(path, overrides))


def lora_all(overrides: list[str]) -> list[str]:
    return overrides + [f"{k}.lora=true" for k in ("reasoner.warm", "best_of_n.sft", "align.dpo", "align.ppo",
                                                   "align.online", "rg_cl")]


# ---- the GPU table ------------------------------------------------------------------------------------------
def gpu_table(args) -> str:
    cfg = load_cfg(args.config, lora_all(args.set) if args.lora else args.set)
    arch = arch_from(args.model, cfg)
    shape = Shape(args.prompt_tokens, args.head_tokens, args.requests)
    out = []
    for n in args.gpus:
        plans = {e: Setup(arch, cfg, shape, e, n, "gpu", aligners=args.aligners).plan() for e in ("plain", "zero2", "zero3")}
        out += [f"### {arch.name} ({arch.params / 1e9:.2f}B parameters, vocab {arch.vocab}, {arch.layers} layers, "
                f"hidden {arch.hidden}) x {n} GPU{'s' if n > 1 else ''} of {args.gpu_gb} GB, `{Path(args.config).name}`"
                f"{' + LoRA everywhere' if args.lora else ''}{' ' + ' '.join(args.set) if args.set else ''}",
                "",
                f"Per-process peak, GB (rank 0); prompt {shape.prompt} tokens ({shape.head} shared head) + "
                f"{cfg.reasoner.max_new_tokens} new; bf16 compute and serving; flag: > {args.flag_gb} GB under ZeRO-3.",
                "", "| stage | plain | ZeRO-2 | ZeRO-3 | ZeRO-3 peak phase: largest items (GB) | |",
                "| --- | --- | --- | --- | --- | --- |"]
        over = []
        for k, (stage, _) in enumerate(plans["zero3"]):
            vals = {e: peak(plans[e][k][1]) for e in plans}
            z3, phase, items = vals["zero3"]
            flag = "**OVER**" if z3 / GB > args.flag_gb else "ok"
            if z3 / GB > args.flag_gb:
                over.append(stage)
            out.append(f"| {stage} | {vals['plain'][0] / GB:.1f} | {vals['zero2'][0] / GB:.1f} | {z3 / GB:.1f} | "
                       f"{phase}: {top(items)} | {flag} |")
        out += ["", f"Under ZeRO-3, {len(over)} of {len(plans['zero3'])} stages over {args.flag_gb} GB"
                + (f": {', '.join(over)}." if over else ".") , ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama3-8b", help="llama3-8b | smollm2-135m | tiny | a HF config.json")
    ap.add_argument("--config", default=str(ROOT / "recipes/configs/smollm2.yaml"), help="the loop's YAML")
    ap.add_argument("--set", nargs="*", default=[], help="YAML overrides, key.path=value")
    ap.add_argument("--lora", action="store_true", help="LoRA in every reasoner-training stage")
    ap.add_argument("--aligners", default="dpo,ppo,grpo,rloo",
                    help="aligner rows of the GPU table (each from the same RG-SFT, as `rgalign compare` runs them)")
    ap.add_argument("--gpus", default="8", help="comma-separated process counts (default 8)")
    ap.add_argument("--gpu-gb", type=float, default=80)
    ap.add_argument("--flag-gb", type=float, default=70)
    ap.add_argument("--prompt-tokens", type=int, default=560, help="a request's prompt (default 560: ShopSim's legend)")
    ap.add_argument("--head-tokens", type=int, default=420, help="its shared head (default 420)")
    ap.add_argument("--requests", type=int, default=55_000, help="world size (default 55,000: ShopSim default)")
    a = ap.parse_args()
    a.gpus = [int(x) for x in a.gpus.split(",")]
    a.aligners = [x for x in a.aligners.split(",") if x]
    print(gpu_table(a))


if __name__ == "__main__":
    main()
