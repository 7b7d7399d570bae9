"""How far the tiny fixture's QE-Rec stands from its knife edge: warm-start the tiny reasoner with the given
settings, report its test need accuracy and distinct queries, then train the nested gated QE-Rec (the tiny
config's ranker settings) and print its valid GAUC per epoch (epoch 0 = the two-tower it starts from).

    python experiments/tiny_fixture_margin.py WORLD OUT EPOCHS LR MAX_PAIRS [BATCH]

Run it with ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 as well as without
(BENCHMARKS.md section 9).
"""
import sys, time
import torch
torch.set_num_threads(2)
from rgalign_rl.world import load_world
from rgalign_rl.reasoner.tiny import build_tiny_reasoner, TinyReasonerConfig
from rgalign_rl.reasoner.sft import sft, SFTSettings, warm_start_pairs
from rgalign_rl.reasoner.queries import reasoner_queries
from rgalign_rl.align.diagnostics import need_accuracy
from rgalign_rl.ranker.queries import query_embeddings
from rgalign_rl.ranker.train import train_ranker, TrainConfig
world = load_world(sys.argv[1]); out = sys.argv[2]
epochs, lr, pairs = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]); bs = int(sys.argv[6]) if len(sys.argv) > 6 else 32
t=time.time()
init = build_tiny_reasoner(world, out+"/init", TinyReasonerConfig(vocab_size=1500, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4))
warm = sft(init, world, warm_start_pairs(world), out+"/warm", SFTSettings(epochs=epochs, lr=lr, batch_size=bs, max_pairs=pairs))
tw=time.time()-t
test = world.indices("test")
_, q = reasoner_queries(world, warm, test, max_new_tokens=12)
acc = need_accuracy(world, test, q)
print("warm", round(tw,1), "s; need acc", {k: round(v,3) for k,v in acc.items()}, "distinct", len(set(q)))
tt, enc, h = train_ranker(world, "two_tower", None, TrainConfig(epochs=4, batch_size=64, lr=0.01, patience=2), log=lambda *a: None)
qe = query_embeddings(world, f"reasoner:{warm}", "both", max_new_tokens=12)
m, _, hist = train_ranker(world, "qe_rec_gated", qe, TrainConfig(epochs=4, batch_size=64, lr=0.01, patience=2), nest=tt, encoder=enc, query_text=384, log=lambda *a: None)
print("qe hist", [(x["epoch"], round(x["valid_gauc"],4)) for x in hist], "scale", float(m.match_scale), "total", round(time.time()-t,1))
