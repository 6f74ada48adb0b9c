# Two entry points: `make demo` (the live pipeline on the simulated microscope) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= recordings/demo.zarr

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deepz live --config demo --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) recordings .pytest_cache
