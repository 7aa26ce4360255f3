# alvae — two commands: `make figures` (regenerate every figure) and `make test` (what CI runs).
# Both bootstrap .venv from requirements.lock on first use; later runs install nothing
# until pyproject.toml or the lock changes.

PYTHON  ?= python3
PROFILE ?= quick
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.alvae-installed
KERNEL  := alvae
# Exact versions of every dependency, torch/torchvision included: the one place they are
# pinned (docs/installation.md, "Why torch is pinned"). Refresh with `make lock`.
LOCK    ?= requirements.lock
PIP     := $(PY) -m pip --disable-pip-version-check
# The notebook filter: no outputs, and no run metadata (papermill's, Jupyter's timings); cell ids stay.
NBSTRIPOUT := --keep-id --extra-keys "metadata.papermill cell.metadata.papermill cell.metadata.execution"

.PHONY: figures book test lint unit-tests notebooks-ci setup lock lab clean-build test-browser

# Overrides pass through: make figures SET="train.initial_epochs=3 budget=200"
# (each word is quoted for the shell, so labels such as coreset+vae(α=0.5) pass as they are).
# So does how runs execute (docs/parallel.md):
#   make figures EXECUTOR=ray [RAY_ADDRESS=auto] [CPUS_PER_RUN=1] [GPUS_PER_RUN=0.25] [THREADS=1]
figures: $(STAMP)
	$(PY) -m alvae_utils figures --profile $(PROFILE) $(if $(SET),--set $(foreach word,$(SET),'$(word)')) \
		$(if $(EXECUTOR),--executor '$(EXECUTOR)') $(if $(RAY_ADDRESS),--ray-address '$(RAY_ADDRESS)') \
		$(if $(CPUS_PER_RUN),--cpus-per-run '$(CPUS_PER_RUN)') $(if $(GPUS_PER_RUN),--gpus-per-run '$(GPUS_PER_RUN)') \
		$(if $(THREADS),--threads '$(THREADS)')

# The executed notebooks of PROFILE as a static site, never re-executed (`make figures` first):
# build/book/_build/html/index.html (build/<profile>/book/... for another profile). Offline.
book: $(STAMP)
	$(PY) -m alvae_utils book --profile $(PROFILE)

# Cheapest check first: lint, then unit tests, then the notebooks.
test: lint unit-tests notebooks-ci

# ruff, and committed notebooks exactly as the nbstripout filter leaves them (no outputs, no run metadata).
lint: $(STAMP)
	$(VENV)/bin/ruff check alvae_utils tests benchmarks notebooks conftest.py
	$(VENV)/bin/nbstripout $(NBSTRIPOUT) --verify notebooks/*.ipynb

unit-tests: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/executed --ignore=tests/browser

# papermill runs every notebook at the `ci` profile into build/ci/, and the book is built from
# them (build/ci/book/, Sphinx warnings as errors); tests/executed checks those copies (figures
# as images, progress as widgets) and the book; then nbval re-executes the notebooks from scratch
# and compares the outputs.
notebooks-ci: $(STAMP)
	rm -rf build/ci
	$(PY) -m alvae_utils figures --profile ci
	$(PY) -m alvae_utils book --profile ci
	$(PY) -m pytest tests/executed
	$(PY) -m alvae_utils validate-notebooks

# JupyterLab in headless Chromium (tests/browser): opens, parametrises and runs 02 on a copy;
# opens the ci book (images loaded, equations rendered, no network request), screenshots in build/browser/.
# Needs `apt-get install chromium chromium-driver`; skipped without them. Not part of `make test`.
test-browser: $(STAMP)
	$(PY) -m pytest tests/browser

setup: $(STAMP)

# Rooted at the repository, so figures/, build/ and results/ are in the file browser; opens notebooks/.
# Containers often run as root, which Jupyter refuses without --allow-root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# Everything comes from the lock; the package itself is added with --no-deps so pip
# cannot pull an unlocked version. `pip check` then fails if pyproject.toml gained a
# dependency the lock lacks (fix: `make lock`).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r $(LOCK)
	$(PIP) install -q --no-deps -e .
	$(PIP) check
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (alvae)"
	# The git filter (.gitattributes) that strips outputs and run metadata from notebooks as they are
	# staged, so they never reach a commit. --keep-id: JupyterLab needs the cell ids the notebooks carry.
	if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '"$(CURDIR)/$(PY)" -m nbstripout $(NBSTRIPOUT)'; \
	  git config filter.nbstripout.smudge cat; \
	  git config filter.nbstripout.required true; \
	  git config diff.ipynb.textconv '"$(CURDIR)/$(PY)" -m nbstripout $(NBSTRIPOUT) -t'; \
	fi
	touch $(STAMP)

# Re-resolve the lock in a throwaway venv: keep its torch/torchvision pins (edit those two
# lines first to move them), take the newest of everything else that pyproject.toml allows.
# nvidia-*/cuda-*/triton are torch's CUDA runtime, which torch requires on Linux only; the
# same marker keeps the lock installable elsewhere. pip itself and alvae are left out.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	torch=$$(sed -n -E 's/^(torch(vision)?==[^ ;]+).*/\1/p' $(LOCK)); \
	test -n "$$torch" || { echo "no torch/torchvision pins in $(LOCK)" >&2; exit 1; }; \
	echo "make lock: resolving in a fresh venv with" $$torch; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	tpip="$$tmp/venv/bin/python -m pip --disable-pip-version-check"; \
	$$tpip install -q $$torch; \
	$$tpip install -q -e '.[notebooks,test,book]'; \
	{ echo "# Exact versions for \`make setup\` and environment.yml; the only place torch/torchvision are pinned."; \
	  echo "# Refresh: \`make lock\` (keeps the torch/torchvision lines below, re-resolves the rest)."; \
	  echo "# Generated by \`make lock\` with Python $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version(), platform.system(), platform.machine())')."; \
	  $$tpip freeze --all --exclude-editable | grep -v -E '^(#|-e |pip==|alvae==)' \
	    | sed -E '/^(nvidia-|cuda-|triton==)/ s/$$/ ; platform_system == "Linux"/'; \
	} > "$$tmp/lock"; \
	mv "$$tmp/lock" $(LOCK); \
	echo "make lock: wrote $(LOCK) ($$(grep -c '==' $(LOCK)) pins)"

clean-build:
	rm -rf build/
