# Two commands do everything on a fresh machine:
#   make demo   build the default procedural scene, render a short HR/LR sequence into a store, show it
#   make test   run the test suite (what CI runs)
# Each sets up .venv on first use with Python 3.13 (bpy 5.3 needs exactly 3.13).

# The first Python 3.13 that runs: PYTHON=... if given, python3.13 on PATH, then pyenv's versions
# folder (its bare shim refuses until pyenv selects 3.13, so the interpreter is called directly).
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON ?= $(firstword $(foreach p,python3.13 $(sort $(wildcard $(PYENV_ROOT)/versions/3.13*/bin/python3.13)),\
            $(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 13); print("$(p)")' 2>/dev/null)))
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "gbuf needs Python 3.13 (bpy 5.3 requires it): install it, e.g. 'pyenv install 3.13', or run make PYTHON=/path/to/python3.13"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gbuf render -o demo/default.zarr --resolution 320x180 --scale 4 --frames 1:6 --samples 16
	$(BIN)/gbuf dataset verify demo/default.zarr
	$(BIN)/gbuf dataset info demo/default.zarr
	$(BIN)/gbuf dataset preview demo/default.zarr --frame 2 -o demo/preview.png
	@echo "contact sheet: demo/preview.png"

# Test files run side by side, one per worker (at most 4: each render uses every core anyway);
# torch in each worker keeps to one thread (gbuf's default), so two workers fill two cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations 15

clean-demo:
	rm -rf demo
