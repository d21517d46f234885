# cks-lab developer entry points. `make test` is exactly what CI runs (after .ci/run installs
# what it needs).

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: help test lint fmt crds crds-check scenarios-lint unit run bench

help:
	@echo "make run         start the platform locally (not available yet; see README)"
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

unit:
	$(CARGO) test --workspace --locked

run:
	@echo "make run is not available yet: the development control plane (crates/devcluster) is still being built." >&2
	@exit 1

bench:
	$(CARGO) bench --locked -p cks-scenarios --bench catalog_load
