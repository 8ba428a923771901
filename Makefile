# Two set-up commands for users: `make demo` and `make test`.  Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BENCH_VENV := .venv-bench
DIFFBIO_VENV := .venv-diffbio
PY312 ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
THREADS ?= 2
# test files run in parallel, one process per CPU (CI has 2); TEST_WORKERS=0 runs in-process
TEST_WORKERS ?= 2

.PHONY: demo test docs lint bench bench-deconv bench-svg bench-hic bench-integration bench-chromatin bench-scale bench-env clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,docs]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/diffomics demo --out demo_out

test: $(VENV)/.installed
	$(VENV)/bin/python -m ruff check src tests benchmarks docs
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The user guide (docs/, mkdocs.yml) into site/; strict: any warning fails, nothing is fetched.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/python -m mkdocs build --strict

lint: $(VENV)/.installed
	$(VENV)/bin/python -m ruff check src tests benchmarks docs

# Benchmarks: peers live in their own environments, never in .venv.
$(BENCH_VENV)/.installed: pyproject.toml benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements.txt -e .
	touch $@

$(DIFFBIO_VENV)/.installed: benchmarks/requirements-diffbio.txt
	test -x $(DIFFBIO_VENV)/bin/python || $(PY312) -m venv $(DIFFBIO_VENV)
	$(DIFFBIO_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-diffbio.txt
	touch $@

bench-env: $(BENCH_VENV)/.installed $(DIFFBIO_VENV)/.installed

bench-deconv: bench-env
	$(BENCH_VENV)/bin/python benchmarks/deconvolution.py --threads $(THREADS) \
		--diffbio-python $(DIFFBIO_VENV)/bin/python

bench-svg: bench-env
	$(BENCH_VENV)/bin/python benchmarks/spatial_genes.py --threads $(THREADS) \
		--diffbio-python $(DIFFBIO_VENV)/bin/python

bench-hic: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/hic.py --threads $(THREADS)

bench-integration: bench-env
	$(BENCH_VENV)/bin/python benchmarks/integration.py --threads $(THREADS) \
		--diffbio-python $(DIFFBIO_VENV)/bin/python

bench-chromatin: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/chromatin_states.py --threads $(THREADS)

# time and peak memory against data size on 1 and 4 simulated devices (diffomics only)
bench-scale: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/scale.py --threads $(THREADS)

bench: bench-deconv bench-svg bench-hic bench-integration bench-chromatin bench-scale

clean:
	rm -rf demo_out .pytest_cache .ruff_cache
