"""Mismatch rates of the determinism checks on this device (issue 27, item 9): rows computed alone vs in a batch.

tests/test_determinism.py asserts on CPU that a request's text vector, greedy query and last-token embedding do
not depend on what else is computed with it (batching.py: rows of equal length, no padding, >= 2 per batch).
On CUDA, cuBLAS and SDPA pick kernels by shape and bf16 greedy near-ties flip, so exact equality is not
expected there; this script MEASURES how often and by how much rows differ, with the package's own helpers:

- text vectors (text_encoder._encode_uncached): teacher queries + intent texts, each alone vs all together,
  and all together in reversed order;
- last-token embeddings (reasoner.model.last_token_embedding) of prompt + greedy query, alone vs in a batch,
  and the same batch twice (run-to-run);
- greedy queries (reasoner.model.generate_queries), alone vs in a batch: the share of different strings;

for the reasoner in float32 and in bfloat16 (the GPU's serving dtype). A row "differs" when its largest
absolute difference exceeds 1e-5 (rows not bit-equal are counted too). Writes OUT/determinism.json and prints a markdown table.

    python bench/gpu_determinism.py OUT            # OUT: bench/gpu_smoke.sh's folder (world/ and cmp/ inside)
    python bench/gpu_determinism.py OUT --reasoner PATH --world DIR --rows 64
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

TOL = 1e-5


def _reasoner_of(out: Path) -> str:
    """The RG-SFT snapshot of the smoke's shared prefix (else its warm reasoner)."""
    done = json.loads((out / "cmp" / "seed0" / "shared" / "state.json").read_text())["done"]
    for key in ("round1/rg_sft", "reasoner_warm"):
        if key in done and Path(done[key].get("path", "")).is_dir():
            return done[key]["path"]
    raise SystemExit(f"no reasoner snapshot in {out}/cmp/seed0/shared/state.json")


def vector_row(check: str, dtype: str, alone: np.ndarray, batched: np.ndarray) -> dict:
    diff = np.abs(alone.astype(np.float64) - batched.astype(np.float64)).max(axis=1)
    return {"check": check, "dtype": dtype, "rows": len(diff), "not_bit_equal": int((diff > 0).sum()),
            "differing": int((diff > TOL).sum()),
            "share": float((diff > TOL).mean()), "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
            "scale": float(np.abs(batched).max()) if batched.size else 0.0}


def string_row(check: str, dtype: str, alone: list[str], batched: list[str]) -> dict:
    diff = [a != b for a, b in zip(alone, batched)]
    return {"check": check, "dtype": dtype, "rows": len(diff), "not_bit_equal": int(sum(diff)), "differing": int(sum(diff)),
            "share": float(np.mean(diff)) if diff else 0.0, "max_abs_diff": None, "scale": None}


def measure(world_dir: str, reasoner: str, n_rows: int, n_text: int, max_new_tokens: int) -> dict:
    from rgalign_rl import dist
    from rgalign_rl.reasoner.model import generate_queries, last_token_embedding, load_reasoner
    from rgalign_rl.reasoner.prompt import build_prompts
    from rgalign_rl.text_encoder import _encode_uncached
    from rgalign_rl.world import load_world

    dev = dist.device()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    world = load_world(world_dir)
    rows, times = [], {}

    t = time.time()
    texts = sorted({r[2] for r in world.teachers.rows()})[:n_text] + [it["text"] for it in world.intents[:20]]
    together = _encode_uncached(texts)
    picks = np.unique(np.linspace(0, len(texts) - 1, min(n_rows, len(texts))).astype(int))
    alone = np.stack([_encode_uncached([texts[k]])[0] for k in picks])
    rows.append(vector_row("text vector: alone vs in the batch", "float32", alone, together[picks]))
    rows.append(vector_row("text vector: batch in reversed order", "float32", _encode_uncached(texts[::-1])[::-1], together))
    times["text_encoder_s"] = round(time.time() - t, 2)

    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        t = time.time()
        model, tok = load_reasoner(reasoner, dtype=dtype)
        prompts = build_prompts(world, np.arange(min(n_rows, len(world.samples))), tok)
        greedy = generate_queries(model, tok, prompts, max_new_tokens=max_new_tokens)
        solo = [generate_queries(model, tok, [p], max_new_tokens=max_new_tokens)[0] for p in prompts]
        rows.append(string_row("greedy query: alone vs in the batch", name, solo, greedy))
        emb = last_token_embedding(model, tok, prompts, greedy)
        emb_solo = np.stack([last_token_embedding(model, tok, [p], [q])[0] for p, q in zip(prompts, greedy)])
        rows.append(vector_row("last-token embedding: alone vs in the batch", name, emb_solo, emb))
        rows.append(vector_row("last-token embedding: the same batch twice", name,
                               last_token_embedding(model, tok, prompts, greedy), emb))
        del model
        times[f"reasoner_{name}_s"] = round(time.time() - t, 2)

    info = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu (no GPU)", "torch": torch.__version__,
            "reasoner": reasoner, "world": str(world_dir), "tolerance": TOL, "rows": rows, "times": times,
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if cuda else dist.peak_memory_mb()}
    if cuda:
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        info["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
        info["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
    return info


def table(info: dict) -> str:
    lines = [f"Determinism on {info['device']} (torch {info['torch']}): rows alone vs in a batch; a row differs when "
             f"its largest absolute difference exceeds {info['tolerance']:g}",
             "", "| check | dtype | rows | not bit-equal | differing | share differing | max abs diff | largest value |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in info["rows"]:
        mad = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}"
        scale = "" if r["scale"] is None else f"{r['scale']:.3g}"
        lines.append(f"| {r['check']} | {r['dtype']} | {r['rows']} | {r['not_bit_equal']} | {r['differing']} | "
                     f"{r['share']:.1%} | {mad} | {scale} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="bench/gpu_smoke.sh's output folder; determinism.json is written there")
    ap.add_argument("--reasoner", help="a reasoner folder (default: the smoke's RG-SFT snapshot)")
    ap.add_argument("--world", help="a world folder (default: OUT/world)")
    ap.add_argument("--rows", type=int, default=64, help="rows computed alone (default 64)")
    ap.add_argument("--texts", type=int, default=300, help="teacher queries in the text-encoder batch (default 300)")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    t = time.time()
    info = measure(a.world or str(out / "world"), a.reasoner or _reasoner_of(out), a.rows, a.texts, a.max_new_tokens)
    info["wall_s"] = round(time.time() - t, 1)
    (out / "determinism.json").write_text(json.dumps(info, indent=1) + "\n")
    print(table(info))
    print(f"\nwall {info['wall_s']} s, peak {info['peak_mem_mb']} MB; {out / 'determinism.json'}")


if __name__ == "__main__":
    main()
