# Two commands do all set-up on a fresh machine: `make test` and `make bench`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEPS   := torch==2.13.0 triton numpy pytest pytest-benchmark setuptools wheel

.PHONY: test bench gpu-check clean example

SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)

# Rebuilt from scratch when any C++ source or header changes (setuptools only
# tracks .cpp timestamps, not the headers they include).
$(STAMP): pyproject.toml setup.py $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(DEPS)
	rm -rf build
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $(STAMP)

# The whole suite; Triton kernels run on the CPU through the interpreter.
test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests

# Benchmark table against native PyTorch on the best device present.
bench: $(STAMP)
	$(PY) -m bench.run

# The worked example (CPU, about a minute): examples/results.md and, when
# matplotlib installs, examples/results.png. matplotlib is optional, so it is
# installed here rather than in DEPS and a failed install only skips the chart.
example: $(STAMP)
	$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q matplotlib \
		|| echo "matplotlib did not install: the example skips its PNG chart"
	PYTHONPATH=. $(PY) examples/imbalanced_multilabel.py

# Everything a lent GPU box should do, in one call (system python, no registry):
# install with CUDA kernels, CUDA-marked tests, whole suite, GPU benchmarks -> bench/results/.
gpu-check:
	PYTHON=$(PYTHON) bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info fused_losses/_C*.so
