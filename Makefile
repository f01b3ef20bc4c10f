# `make run` and `make test` each set up what they need (.venv) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test golden bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# The seed scenario locally: two echo backends, the control plane and an Envoy on port 8000.
run: $(STAMP)
	$(VENV)/bin/mirrorplane run manifests/local --echo pipy=8081 --echo pipy-mirror=8082

test: $(STAMP)
	$(PY) -m pytest -q

# Rewrite the golden translator outputs after an intended change; review with `git diff tests/golden`.
golden: $(STAMP)
	MIRRORPLANE_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/test_golden.py

bench: $(STAMP)
	$(PY) -m benchmarks.translate
	$(PY) -m benchmarks.push_latency

clean:
	rm -rf $(VENV) build *.egg-info
