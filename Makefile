# micebench developer entry points. `make demo` and `make test` each install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build by default so a laptop/CI never downloads a multi-GB CUDA wheel; override on GPU boxes,
# e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
TORCH_SPEC ?= torch==2.13.0
# Local mirror of collections (BEIR layout); used when present, otherwise ir_datasets downloads.
MICEBENCH_DATA ?= $(abspath $(firstword $(wildcard ../shared/data)))
export MICEBENCH_DATA
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export IR_DATASETS_HOME ?= $(CURDIR)/.cache/ir_datasets
export TOKENIZERS_PARALLELISM ?= false
DEMO_RESULTS ?= results/demo
# The tests cover the optional NanoBEIR and PyTerrier parts too (they skip where an extra is absent).
EXTRAS ?= dev,nanobeir,pyterrier

.PHONY: install test test-fast docs demo lint bench bench-scale train-demo paper-mini clean

$(BIN)/micebench: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(BIN)/micebench

install: $(BIN)/micebench

test: install
	$(BIN)/python -m pytest -q --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The documentation site (docs/, mkdocs.yml): fails on a broken link, a missing API object or a warning.
docs: install
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

lint: install
	$(BIN)/ruff check micebench tests benchmarks
	$(BIN)/ruff format --check micebench tests benchmarks

demo: install
	$(BIN)/micebench datasets
	$(BIN)/micebench run --model bm25 --dataset scifact --first-stage bm25 --top-k 1000 --output $(DEMO_RESULTS) --overwrite
	$(BIN)/micebench run --model dense --dataset scifact --first-stage full --top-k 1000 --output $(DEMO_RESULTS) --overwrite
	@if $(BIN)/micebench datasets where trec-dl-19 >/dev/null 2>&1; then \
	  $(BIN)/micebench run --model bm25 --dataset trec-dl-19 --output $(DEMO_RESULTS) --overwrite && \
	  $(BIN)/micebench run --model dense --dataset trec-dl-19 --output $(DEMO_RESULTS) --overwrite; \
	else echo "TREC DL 2019 is not mirrored locally (set MICEBENCH_DATA); skipping it."; fi
	$(BIN)/micebench results $(DEMO_RESULTS)

# Speed goals (MiniLM-L12 shape, 512-token documents, batch 128): measured ratios vs analytic FLOP ratios.
bench: install
	$(BIN)/python benchmarks/latency_ratios.py

# Paper-scale pipeline without a model: a synthetic MS MARCO-shaped collection (1M documents, 7,000 queries x 1000
# candidates) written under a temporary folder and deleted after; times each stage of `run`, with peak RSS.
bench-scale: install
	$(BIN)/python benchmarks/pipeline_scale.py $(ARGS)

# Offline training recipe on SciFact (< 60 min on 2 CPU cores); `make train-demo ARGS=--full` on a GPU.
train-demo: install
	bash benchmarks/train_demo.sh $(ARGS)

# The paper's comparison (Table 1, efficiency table, Pareto figures): every family trained by one recipe, in- and
# out-of-domain. Offline on 2 CPU cores by default (resumable: rerun to continue); FAMILIES=all adds mask1, mask3-l2,
# prettr-l2 and mice-l2+4; ARGS=--full runs the paper's own recipe (GPU, internet); ARGS="--full --dry-run" checks it.
paper-mini: install
	$(BIN)/python benchmarks/paper_mini.py --families $(or $(FAMILIES),default) $(ARGS)

clean:
	rm -rf $(VENV) .cache build *.egg-info
