# The README's two commands: `make course` (set up, then run the course end to end in the
# default profile) and `make test` (set up, then run the tests, notebooks included).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A pinned torch: on this project's CPU machines 2.13.0 is a local CPU wheel (seconds).
# On a CUDA machine pass e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH ?= torch==2.13.0
PROFILE ?= tiny
export TOKENIZERS_PARALLELISM ?= false
# glibc only (ignored elsewhere): keep freed memory in the process instead of returning each
# step's large blocks to the kernel, which then zeroes fresh pages for the next step. Same
# numbers, 1.22x faster tiny SFT steps and far steadier timings (benchmarks/bench_train.py).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: setup test course lint clean-runs

setup: $(VENV)/.installed

# PYTHONWARNINGS=ignore: setuptools' build backend warns on every editable install ("be careful with
# folders named like the package"); the warning is about import order, not about this project.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -e ".[dev,notebooks]"
	$(BIN)/diffchat setup
	touch $@

# Tests run on one thread: two threads on a loaded 2-core machine are up to 20x slower.
# The course itself uses the machine's cores (torch's default), its kernels with passive OpenMP
# waiting unless OMP_NUM_THREADS or OMP_WAIT_POLICY is set (diffchat.course.thread_env).
test: setup
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The small profile's model offline: the SmolLM2 copy only `diffchat setup --small-model` builds.
course: setup
	$(if $(filter small,$(PROFILE)),$(BIN)/diffchat setup --small-model)
	$(BIN)/diffchat course --profile $(PROFILE)

lint: setup
	$(BIN)/ruff check diffchat tests benchmarks

clean-runs:
	rm -rf runs
