# Quick start: `make demo` (synthetic cohort end to end) and `make test` (the test suite).
# Both install what they need: into the active virtual environment when one is active,
# otherwise into ./.venv. On a machine without an NVIDIA GPU the CPU build of torch is taken.

VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PYTHON := $(VENV)/bin/python
BIN := $(VENV)/bin
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
# torch==2.13.0 is the CPU build on this project's machines; override TORCH_SPEC elsewhere.
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.1,torch==2.13.0)
INSTALLED := $(VENV)/.glmil_auto_installed
NP ?= 2
DEMO_TRAINER ?= GLMILTrainer_demo
FOLDS ?= 0 1 2 3 4
DEMO_RAW := $(or $(glmil_raw),glmil_data/raw)/Dataset001_SynthBrainMets
DEMO_OUT ?= glmil_data/demo_predictions
PYTEST_ARGS ?=

.PHONY: install demo test clean-demo

$(PYTHON):
	python3 -m venv $(VENV)

$(INSTALLED): setup.py | $(PYTHON)
	$(PYTHON) -m pip install --quiet "$(TORCH_SPEC)"
	$(PYTHON) -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(PYTHON) dataset_conversion/Dataset001_SynthBrainMets.py -np $(NP) --overwrite
	$(BIN)/glmil_verify_dataset -d 1 -np $(NP)
	$(BIN)/glmil_plan_and_preprocess -d 1 -np $(NP)
	for fold in $(FOLDS); do $(BIN)/glmil_train 1 $$fold -tr $(DEMO_TRAINER) -device cpu || exit 1; done
	$(BIN)/glmil_predict -d 1 -tr $(DEMO_TRAINER) -i $(DEMO_RAW)/imagesTs -m $(DEMO_RAW)/labelsTs \
		-c $(DEMO_RAW)/clinicalTs.csv -o $(DEMO_OUT) -npp 1 -device cpu --explain
	$(BIN)/glmil_evaluate -d 1 -i $(DEMO_OUT)/predictions.csv -o $(DEMO_OUT)/evaluation

test: $(INSTALLED)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf glmil_data
