.DEFAULT_GOAL := help
PY ?= python3

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build-dev
build-dev: ## Build the extension and install the package editable, with every extra
	$(PY) -m pip install -e ".[all]"

.PHONY: test
test: ## The whole test suite (fast Hypothesis profile)
	$(PY) -m pytest

.PHONY: test-ci
test-ci: ## As CI: thorough Hypothesis profile (>= 1,000 examples per policy)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest

VLLM_PY ?= .venv-vllm/bin/python

.PHONY: test-vllm
test-vllm: ## Parity with vLLM 0.33's own scheduler, and halffull.vllm.Scheduler against it (the vLLM venv; README)
	PYTHONPATH=python $(VLLM_PY) -m pytest tests/test_vllm_parity.py tests/test_vllm_plugin.py -q

.PHONY: bench-vllm
bench-vllm: ## vLLM's scheduler vs halffull.vllm.Scheduler per step, 32/128/256 running (the vLLM venv)
	PYTHONPATH=python $(VLLM_PY) benches/bench_vllm_plugin.py

.PHONY: test-rust
test-rust: ## Rust unit tests in a debug build (debug_asserts on; no Python needed)
	cargo test --lib

FUZZ_SECONDS ?= 3600

.PHONY: fuzz
fuzz: ## Coverage-guided fuzzing of the core API for FUZZ_SECONDS (cargo-fuzz, nightly; not in CI)
	cd fuzz && cargo +nightly fuzz run core_api -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096

.PHONY: lint
lint: ## cargo fmt --check, clippy, ruff, mypy, the stub check
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features python -- -D warnings
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m mypy.stubtest halffull._core

.PHONY: format
format: ## Format the Rust code
	cargo fmt --all

.PHONY: bench
bench: ## Time the benches (pytest-benchmark) and print the scheduler ratio table
	$(PY) -m pytest benches --benchmark-enable
	$(PY) benches/bench_scheduler.py
