# covidxr: `make install`, then `make test`. `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tested torch; override for another CUDA/CPU build, e.g. TORCH_INDEX=<a PyTorch wheel index>.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
PYTEST_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
# The benchmarks' real X-rays: a copy of the database beside the checkout, where there is one.
DEV_REAL_DATA := $(abspath $(CURDIR)/../shared/data/covid-radiography-224)
export COVIDXR_REAL_DATA ?= $(if $(wildcard $(DEV_REAL_DATA)),$(DEV_REAL_DATA),)

.DEFAULT_GOAL := help
SMOKE_DIR ?= logs/smoke/latest
.PHONY: help install test test-full lint format demo smoke train bench clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The stamp records which checkout the editable install points at: another one reinstalls.
ifneq ($(shell cat $(VENV)/.covidxr-installed 2>/dev/null),$(CURDIR))
.PHONY: $(VENV)/.covidxr-installed
endif

install: $(VENV)/.covidxr-installed ## create .venv with torch and covidxr[dev] (quick when done)

$(VENV)/.covidxr-installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@echo "$(CURDIR)" > $@

# One worker per core; a test file's tests share a worker (and its module fixtures).
PYTEST_PARALLEL ?= -n auto --dist loadfile

test: install ## fast test suite (no `slow` tests)
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-full: install ## every test, `slow` ones included
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "slow or not slow" $(PYTEST_ARGS)

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install ## fine-tune on synthetic phantoms (made once into data/), test, print metrics
	$(BIN)/covidxr-train experiment=demo

train: install ## covidxr-train with the defaults (add ARGS="key=value ...")
	$(BIN)/covidxr-train $(ARGS)

smoke: install ## CI smoke run: tiny training, test, then covidxr-eval must reproduce the test numbers
	rm -rf $(SMOKE_DIR)
	$(BIN)/covidxr-train experiment=smoke hydra.run.dir=$(SMOKE_DIR)
	$(BIN)/covidxr-eval ckpt_path=$(SMOKE_DIR)/checkpoints/best.ckpt strict=true \
		hydra.run.dir=$(SMOKE_DIR)/eval

bench: install ## throughput benchmarks (figures, no assertions)
	$(BIN)/covidxr-bench data
	$(BIN)/covidxr-bench train
	$(BIN)/covidxr-bench pretrain
	$(BIN)/covidxr-bench predict --images 128 --output logs/bench_predict.json

clean: ## remove caches and build files (keeps .venv, data/ and logs/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

distclean: clean ## also remove .venv
	rm -rf $(VENV)
