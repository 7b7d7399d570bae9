"""Same inputs, same numbers: a request's text vector, query and last-token embedding do not depend on what
else was computed with it (what a cache holds, how N processes split the work), and sampled candidates
depend on the seed and the request alone."""
import numpy as np

from rgalign_rl.batching import length_batches
from rgalign_rl.reasoner.model import generate_queries, last_token_embedding, load_reasoner
from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.text_encoder import _encode_uncached
from rgalign_rl.world import load_world


def test_length_batches_group_equal_lengths_and_never_leave_a_row_alone():
    batches = length_batches([3, 5, 3, 3, 7, 5], batch_size=2)
    assert [b.tolist() for b in batches] == [[0, 2], [3, 3], [1, 5], [4, 4]]


def test_text_vectors_are_the_same_alone_and_in_company(tiny_world):
    world = load_world(tiny_world)
    texts = sorted({t["query"] for t in world.teachers})[:300] + [it["text"] for it in world.intents[:20]]
    together = _encode_uncached(texts)
    for k in (0, 7, len(texts) - 1):
        assert np.array_equal(_encode_uncached([texts[k]])[0], together[k])
    assert np.array_equal(_encode_uncached(texts[::-1])[::-1], together)


def test_queries_and_embeddings_are_the_same_alone_and_in_company(tiny_world, tiny_reasoner):
    world = load_world(tiny_world)
    model, tok = load_reasoner(tiny_reasoner)
    prompts = build_prompts(world, range(60), tok)
    greedy = generate_queries(model, tok, prompts, max_new_tokens=8)
    assert [generate_queries(model, tok, [prompts[k]], max_new_tokens=8)[0] for k in (0, 13, 59)] == \
        [greedy[0], greedy[13], greedy[59]]
    emb = last_token_embedding(model, tok, prompts, greedy)
    for k in (0, 13, 59):
        assert np.array_equal(last_token_embedding(model, tok, [prompts[k]], [greedy[k]])[0], emb[k])
    # sampled: a request's draws depend on (seed, its key), not on its position or its batch
    keys = list(range(100, 160))
    drawn = generate_queries(model, tok, prompts, max_new_tokens=8, do_sample=True, num_return_sequences=2,
                             seed=3, row_keys=keys)
    half = generate_queries(model, tok, prompts[1::2], max_new_tokens=8, do_sample=True, num_return_sequences=2,
                            seed=3, row_keys=keys[1::2], batch_size=7)
    assert half == [q for k in range(1, 60, 2) for q in drawn[2 * k : 2 * k + 2]]
    assert drawn != generate_queries(model, tok, prompts, max_new_tokens=8, do_sample=True, num_return_sequences=2,
                                     seed=4, row_keys=keys)


def test_bfloat16_serving_is_the_same_alone_and_in_company(tiny_world, tiny_reasoner):
    """reasoner.serve_dtype: bfloat16 keeps the rule (GPUs, and CPUs with AVX-512 bf16 or AMX, serve in it)."""
    import torch

    world = load_world(tiny_world)
    model, tok = load_reasoner(tiny_reasoner, dtype=torch.bfloat16)
    prompts = build_prompts(world, range(40), tok)
    greedy = generate_queries(model, tok, prompts, max_new_tokens=8)
    emb = last_token_embedding(model, tok, prompts, greedy)
    for k in (0, 21, 39):
        assert generate_queries(model, tok, [prompts[k]], max_new_tokens=8)[0] == greedy[k]
        assert np.array_equal(last_token_embedding(model, tok, [prompts[k]], [greedy[k]])[0], emb[k])
