# Two entry points: `make train` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/bigger.py
SHARED_DATA := ../shared/data
# pytest-xdist processes for `make test`; CI's machine has 2 cores.
TEST_WORKERS ?= 2

.PHONY: setup data train test lint clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# Seed data/ from the corpora shipped beside the project; the loader downloads otherwise.
data:
	@mkdir -p data
	@if [ -d $(SHARED_DATA) ]; then cp -n $(SHARED_DATA)/*.txt data/ 2>/dev/null || true; fi

train: setup data
	$(PY) scripts/train.py --config=$(CONFIG) $(ARGS)

test: setup data
	$(PY) -m pytest tests -n $(TEST_WORKERS)

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs
