# sarssl: one-command set-up, run and test.
#   make run    create .venv if needed, then run the whole workflow (snakemake --cores all)
#   make test   create .venv if needed, then run the test suite
#   make matrix the demo with the study's full fine-tuning matrix (config/matrix.yaml)
#   make lint   ruff check + ruff format --check, snakemake --lint, snakefmt --check
#   make dag    docs/rulegraph.svg (the rule graph shown in the README)
#   make clean  remove workflow outputs (results/, resources/, logs/, benchmarks/*/)
# The environment is built once: a stamp file records a successful install and depends
# on pyproject.toml and requirements.txt, so a second `make run` installs nothing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
STAMP := $(VENV)/.sarssl-installed
# Debian's system Python when present: its sqlite3 can load extensions (SpatiaLite),
# which pyroSAR's scene archive needs; otherwise whatever python3 is on PATH.
PYTHON ?= $(shell if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi)
CORES ?= all
# pytest-xdist workers: 0 = serial (measured faster on 2 cores, where the workflow test
# already uses both); `make test PYTEST_WORKERS=4` on bigger machines.
PYTEST_WORKERS ?= 0
SNAKEMAKE := $(VENV)/bin/snakemake
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -y -q

.PHONY: help env pyrosar-env run matrix test lint dag clean

help:
	@sed -n '2,10p' Makefile | sed 's/^# \{0,1\}//'

# Python itself and the venv module (Debian ships `venv` in python3-venv).
$(VENV)/bin/python:
	@if [ -z "$(PYTHON)" ] || ! "$(PYTHON)" -c 'import venv, ensurepip' 2>/dev/null; then \
	  echo "python3 with venv missing: installing python3 python3-venv with apt-get"; \
	  $(APT_GET) update && $(APT_GET) install python3 python3-venv python3-dev; \
	fi
	$(or $(PYTHON),/usr/bin/python3) -m venv $(VENV)

# System data the Python packages cannot ship: the EGM96 geoid grid (Debian proj-data)
# that converts DEM heights to ellipsoidal heights offline. Skipped when already present.
GEOID := /usr/share/proj/egm96_15.gtx
$(GEOID):
	@echo "geoid grid missing: installing Debian's proj-data"
	$(APT_GET) update && $(APT_GET) install proj-data

# Exact pins (requirements.txt) as constraints, the package editable with its extras.
$(STAMP): $(VENV)/bin/python pyproject.toml requirements.txt | $(GEOID)
	$(VENV)/bin/python -m pip install --quiet -c requirements.txt -r requirements.txt \
	  -e ".[workflow,test]"
	$(VENV)/bin/python -c "import sarssl, torch, timm, rasterio, snakemake"
	touch $@

env: $(STAMP)

# pyroSAR's scene archive (SQLite/SpatiaLite or PostGIS) in its own environment: its
# GDAL 3.6 / numpy<2 pins must not constrain .venv (see tools/pyrosar-env.sh).
PYROSAR_STAMP := .venv-pyrosar/.sarssl-pyrosar-installed
CATALOGUE_BACKEND ?= builtin
$(PYROSAR_STAMP): tools/pyrosar-env.sh
	bash tools/pyrosar-env.sh --postgis

pyrosar-env: $(PYROSAR_STAMP)

run: $(STAMP) $(if $(filter pyrosar,$(CATALOGUE_BACKEND)),$(PYROSAR_STAMP))
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SNAKEMAKE) --cores $(CORES)

# The study's full fine-tuning matrix on the demo areas (6 fractions x 3 seeds x 2 protocols
# x 3 inits x 2 tasks x 2 areas = 432 runs, + 72 of the fine-tuned U-Net): `make run`'s outputs are reused.
matrix: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SNAKEMAKE) --cores $(CORES) --configfile config/matrix.yaml

# The tests are independent (each workflow test works in its own tmp directory), so
# they may run in parallel with PYTEST_WORKERS > 0.
test: $(STAMP) $(PYROSAR_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SARSSL_REQUIRE_PYROSAR=1 $(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check workflow/

# The scenes to preprocess come from the catalogue checkpoint, so the graph is drawn after
# running the tiny config up to the catalogues in a scratch directory (else the
# preprocess rule would be missing from it).
dag: $(STAMP)
	@command -v dot >/dev/null || { $(APT_GET) update && $(APT_GET) install graphviz; }
	mkdir -p docs
	work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	sm="$(CURDIR)/$(SNAKEMAKE) --snakefile $(CURDIR)/workflow/Snakefile --directory $$work \
	  --configfile $(CURDIR)/config/test.yaml --replace-workflow-config --cores 2"; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $$sm --until catalogue --quiet all; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $$sm --rulegraph --quiet all \
	  | dot -Tsvg > docs/rulegraph.svg.tmp
	mv docs/rulegraph.svg.tmp docs/rulegraph.svg

clean:
	rm -rf results resources logs .snakemake
	find benchmarks -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
