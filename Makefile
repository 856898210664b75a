# gan_lab — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.14.1 torchvision==0.29.1
ARGS   ?=

.PHONY: help install run test test-full test-install test-slurm bench docs gpu-check clean
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,sweep]" --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install gan_lab with its dependencies

run: $(STAMP)  ## train the default DCGAN on the bundled digits (CPU, a few minutes); ARGS=... adds overrides
	$(PY) -m gan_lab.run experiment=digits $(ARGS)

test: $(STAMP)  ## the test suite (fast, CPU, no network)
	$(PY) -m pytest -q $(ARGS)

test-full: $(STAMP)  ## the test suite including the slow tests
	$(PY) -m pytest -q -m "" $(ARGS)

test-install: $(STAMP)  ## the wheel installed into a fresh environment and run from outside the repository
	$(PY) -m pytest -q -m install $(ARGS)

test-slurm: $(STAMP)  ## the slurm tests, on a one-node SLURM cluster started here and stopped after (root)
	scripts/local_slurm.sh up
	SLURM_CONF=$$(scripts/local_slurm.sh conf) $(PY) -m pytest -q -m slurm $(ARGS); \
	  status=$$?; scripts/local_slurm.sh down; exit $$status

bench: $(STAMP)  ## training and data throughput benchmarks (python -m gan_lab.bench)
	$(PY) -m gan_lab.bench $(ARGS)

docs: $(STAMP)  ## the documentation site of README.md, docs/ and experiments/, built strictly into site/
	$(PY) -m mkdocs build --strict --site-dir site

gpu-check:  ## on a CUDA machine with torch installed: the gpu-marked tests, then the GPU benchmark suite
	$(PYTHON) -m pytest -q -m gpu -p no:cacheprovider tests
	$(PYTHON) -m gan_lab.bench suite --device cuda --repeats 3 --steps 30 $(ARGS)

clean:  ## remove the virtual environment, caches, run outputs and the built site
	rm -rf $(VENV) .pytest_cache runs multiruns outputs site *.egg-info
