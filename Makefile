# alvae — two commands: `make figures` (regenerate every figure) and `make test` (what CI runs).
# Both bootstrap .venv on first use; later runs install nothing.

PYTHON  ?= python3
PROFILE ?= quick
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.alvae-installed
KERNEL  := alvae
# torch/torchvision pins: see README, "Why torch is pinned".
TORCH   := torch==2.14.1 torchvision==0.29.1

.PHONY: figures test unit-tests notebooks-ci setup lab clean-build

figures: $(STAMP)
	$(PY) -m alvae_utils figures --profile $(PROFILE)

test: unit-tests notebooks-ci

unit-tests: $(STAMP)
	$(PY) -m pytest tests

# papermill runs every notebook at the `ci` profile into build/ci/, then nbval
# re-executes those copies from scratch and compares the outputs.
notebooks-ci: $(STAMP)
	rm -rf build/ci
	$(PY) -m alvae_utils figures --profile ci
	$(PY) -m alvae_utils validate-notebooks

setup: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(TORCH)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[notebooks,test]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (alvae)"
	touch $(STAMP)

clean-build:
	rm -rf build/
