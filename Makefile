# Two commands do all set-up on a fresh machine: `make test` and `make bench`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEPS   := torch==2.13.0 triton numpy matplotlib pytest pytest-benchmark setuptools wheel ninja mypy

.PHONY: test bench bench-quick gpu-check sass-check clean example example-xml

SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
# setup.py generates build/generated/fused_losses_options.h from these.
CODEGEN := $(wildcard fused_losses/_codegen.py fused_losses/spec/*.py)

# Rebuilt from scratch when any C++ source, header or generator input changes:
# an editable install compiles in a fresh temporary folder, so nothing is reused.
$(STAMP): pyproject.toml setup.py $(SOURCES) $(CODEGEN)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(DEPS)
	rm -rf build
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $(STAMP)

# The whole suite; Triton kernels run on the CPU through the interpreter.
test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests

# Benchmark table against native PyTorch on the best device present, then the fused
# linear heads against F.linear + the loss (bench/linear_head.py).
bench: $(STAMP)
	$(PY) -m bench.run
	$(PY) -m bench.linear_head

# One-minute smoke run of the same job on tiny shapes (CI runs it); results stay in build/.
bench-quick: $(STAMP)
	$(PY) -m bench.run --quick --out build/bench-quick
	$(PY) -m bench.linear_head --quick --out build/bench-quick

# The worked example (CPU, about a minute): examples/results.md and examples/results.png.
example: $(STAMP)
	PYTHONPATH=. $(PY) examples/imbalanced_multilabel.py

# Extreme multilabel (CPU; 160 training steps over 100,000 labels): the fused
# LinearFocalBCE head against nn.Linear + BCE -> examples/extreme_multilabel.md.
example-xml: $(STAMP)
	PYTHONPATH=. $(PY) examples/extreme_multilabel.py

# Offline SASS budget of the hot kernels for sm_90 (no GPU): instructions/element,
# registers, spills, H200 issue vs memory time. CI runs it with SASS_ARGS=--strict,
# which fails on an overrun, a spill, a compile error or a missing budgeted kernel.
SASS_ARGS ?=
sass-check: $(STAMP)
	$(PY) -m bench.sass_check $(SASS_ARGS)

# Everything a lent GPU box should do, in one call of <= 8 minutes (system python, no
# registry): sm_90 build in place, the CUDA tests, the benchmark grid (bench/gpu_grid.py),
# ncu counters (bench/ncu.py) -> bench/results/ and $$OUT; each stage time-limited, see
# bench/gpu_check.sh. GPU_CHECK_DRY=1 prints the stages and limits only.
gpu-check:
	PYTHON=$(PYTHON) bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info fused_losses/_C*.so
