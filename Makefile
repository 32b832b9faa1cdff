# Two commands do everything on a fresh machine:
#   make demo   build the default procedural scene, render a short HR/LR sequence into a store, show it
#   make test   run the test suite (what CI runs)
# Each sets up .venv on first use (Python 3.11: bpy 5.0 needs it).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
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

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf demo
