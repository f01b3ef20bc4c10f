# `make run` and `make test` each set up what they need (.venv) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast check conformance golden mutation bench protos manifests clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[run,echo,test]'
	@touch $@

# The seed scenario locally: two echo backends (HTTP and gRPC), the control plane, an Envoy on
# port 8000 (HTTP seed) and one on port 8001 (gRPC seed, docs/grpc.md). The mirror answers 500 on
# /v2-only, so that `mirrorplane diff` has a difference to show (docs/shadow-testing.md).
run: $(STAMP)
	$(VENV)/bin/mirrorplane run manifests/local --echo pipy=8081,grpc=8083 --echo pipy-mirror=8082,grpc=8084,/v2-only=500

test: $(STAMP)
	$(PY) -m pytest -q

# The inner loop: everything but the tests that start Envoys, run the conformance suite, talk to
# the fake Kubernetes API server or take long (markers: tests/conftest.py, docs/development.md).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not envoy and not conformance and not kubernetes and not slow"

# Lint, format and types, as configured in pyproject.toml (CI runs it before the tests).
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Gateway API v1.6.1 conformance against real Envoys (conformance/); writes conformance-report.yaml.
# `make test` runs it too (tests/test_conformance.py::test_full_conformance_run).
conformance: $(STAMP)
	$(PY) -m conformance

# Rewrite the golden translator outputs after an intended change (refused when CI is set; never
# part of a test run); review with `git diff tests/golden`. `make test` only compares.
golden: $(STAMP)
	$(PY) -m tests.goldens

# Flip mirroring decisions of the translator, one at a time in a copy of the tree, and show the tests
# fail for each (tests/mutation.py; exit 1 if a mutant survives). Takes a few minutes.
mutation: $(STAMP)
	$(PY) -m tests.mutation

# Regenerate the Python code of every .proto under protos/ (admin API: controlplane/admin/v1/; echo:
# controlplane/echo/grpcecho/ and controlplane/echo/v1/; shadow testing: controlplane/shadow/v1/) after editing one;
# tests/test_admin_protos.py fails while the committed code is not current.
PROTOS_OUT ?= .
PROTO_FILES := protos/controlplane/admin/v1/admin.proto protos/controlplane/echo/grpcecho/grpcecho.proto \
	protos/controlplane/echo/v1/streamecho.proto protos/controlplane/shadow/v1/shadow.proto
protos: | $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(PROTOS_OUT) --pyi_out=$(PROTOS_OUT) \
		--grpc_python_out=$(PROTOS_OUT) $(PROTO_FILES)

# Regenerate manifests/install.yaml from manifests/src/ (tests/test_kubernetes_manifests.py checks it).
manifests: $(STAMP)
	$(PY) manifests/generate.py

bench: $(STAMP)
	$(PY) -m benchmarks.translate
	$(PY) -m benchmarks.loading
	$(PY) -m benchmarks.push_latency
	$(PY) -m benchmarks.change_latency
	$(PY) -m benchmarks.fleet latency
	$(PY) -m benchmarks.fleet latency --delta
	$(PY) -m benchmarks.fleet memory
	$(PY) -m benchmarks.conformance
	$(PY) -m benchmarks.mirror_stall
	$(PY) -m benchmarks.grpc_mirror
	$(PY) -m benchmarks.shadow

clean:
	rm -rf $(VENV) build *.egg-info
