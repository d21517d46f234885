# cks-lab developer entry points. `make test` is exactly what CI runs (after .ci/run installs
# what it needs).

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: help test lint fmt crds crds-check scenarios-lint unit run bench

help:
	@echo "make run         start the development control plane with the CRDs and samples"
	@echo "make test        formatting, clippy, CRD freshness and every test (what CI runs)"
	@echo "make lint        formatting and clippy only"
	@echo "make fmt         format the code"
	@echo "make crds        regenerate crds/ from crates/api"
	@echo "make bench       benchmarks; they print their figures"

test: lint crds-check scenarios-lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

crds:
	$(CARGO) run -q --locked -p cks-api --bin crdgen -- --out crds

# Regenerate into a scratch directory and fail when the committed crds/ differ.
crds-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(CARGO) run -q --locked -p cks-api --bin crdgen -- --out "$$tmp" >/dev/null && \
	if ! diff -ru crds "$$tmp"; then \
		echo "crds/ is stale: run 'make crds' and commit the result" >&2; exit 1; \
	fi && echo "crds/ is up to date"

# The shipped catalog must load without errors or warnings.
scenarios-lint:
	$(CARGO) run -q --locked -p cks-cli -- scenario lint --strict scenarios

# The kubectl tests run first with the client in .tools (or $KUBECTL), then again with the
# kubectl on PATH when that is another binary, so old and recent clients are both covered.
unit:
	$(CARGO) test --workspace --locked
	@path_kubectl=$$(command -v kubectl || true); \
	if [ -n "$$path_kubectl" ] && [ -x .tools/kubectl/usr/bin/kubectl ] && [ -z "$$KUBECTL" ]; then \
		echo "kubectl tests again with $$path_kubectl"; \
		KUBECTL="$$path_kubectl" $(CARGO) test --locked -p cks-devcluster --test kubectl; \
	fi

# The development control plane with the CRDs and samples applied; Ctrl-C stops it.
run:
	$(CARGO) run --locked -p cks-devcluster -- --apply crds --apply config/samples

bench:
	$(CARGO) bench --locked -p cks-scenarios --bench catalog_load
	$(CARGO) bench --locked -p cks-devcluster --bench api
