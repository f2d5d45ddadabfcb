# make book : set up (first time) + execute every notebook (paper profile) + build the HTML book
# make test : set up (first time) + unit tests + every notebook in the quick profile + book build + HTML checks
#             + the reader's check (one chapter rendered in headless Chromium; skips without Chromium)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OPTEX_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup test unit book demo clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[jax,book,rl,test]"
	touch $(STAMP)

setup: $(STAMP)

unit: setup
	$(PY) -m pytest -q -n 2 tests --ignore=tests/test_browser.py

test: unit
	$(PY) -m optex book execute --profile quick
	$(PY) -m optex book build
	$(PY) -m optex book check
	$(PY) -m pytest -q tests/test_browser.py

book: setup
	$(PY) -m optex book execute --profile paper
	$(PY) -m optex book build

demo: setup
	$(PY) -m optex run synthetic --function rosenbrock --dim 1000 --iterations 100 --seeds 5 --clip 100

clean:
	rm -rf _build book/_executed results/_quick
