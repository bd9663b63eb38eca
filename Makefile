# The README's first two commands: `make demo` and `make test`. Both create the environment first.
# The system's interpreter when there is one: PyTriton's Triton stub links the system libpython and fails
# under a separately built Python (pyenv, conda).
PY ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: env demo test test-fast clean

$(BIN)/vsseg-edge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: on CPU machines this takes the local CPU wheel instead of a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,export,plot,calib-trt,dev,serve]'
	touch $@

env: $(BIN)/vsseg-edge

demo: env
	$(BIN)/vsseg-edge demo --out $(OUT)

test: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --durations=15

test-fast: env
	$(BIN)/python -m pytest -n 2 -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
