# make book : set up (first time) + verify the committed results against today's code + execute every notebook
#             (paper profile; pages show the verification) + build the HTML book
# make test : set up (first time) + unit tests + verify the committed results (`--strict`: any committed result
#             that today's code no longer reproduces fails the build) + every notebook in the quick profile
#             + book build + HTML checks + the reader's check (one chapter in headless Chromium; skips without it)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OPTEX_DATA_DIR ?= $(abspath ../shared/data)
# One torch thread per process: the committed results were computed so (book verify recomputes with the
# recorded count), and on a shared or 2-core machine more threads only contend (mnist quick: 20 s vs 105 s).
export OMP_NUM_THREADS ?= 1

.PHONY: setup test unit book demo clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[jax,book,rl,test]"
	touch $(STAMP)

setup: $(STAMP)

unit: setup
	$(PY) -m pytest -q -n 2 tests --ignore=tests/test_browser.py

test: unit
	$(PY) -m optex book verify --no-progress --strict
	$(PY) -m optex book execute --profile quick
	$(PY) -m optex book build
	$(PY) -m optex book check
	$(PY) -m pytest -q tests/test_browser.py

book: setup
	$(PY) -m optex book verify --no-progress
	$(PY) -m optex book execute --profile paper
	$(PY) -m optex book build

demo: setup
	$(PY) -m optex run synthetic --function rosenbrock --dim 1000 --iterations 100 --seeds 5 --clip 100

clean:
	rm -rf _build book/_executed results/_quick
