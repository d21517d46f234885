# syntax=docker/dockerfile:1
# One image for cks-lab: cks-operator, cks-gateway and the cks CLI, the web page and the scenario
# catalog. The command picks the binary (the chart runs /usr/local/bin/cks-operator or
# /usr/local/bin/cks-gateway). Build with a plain `docker build .` (BuildKit) where the registries
# are reachable; docs/install.md says how to push it. Nothing here needs a shell at run time.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=22

# ---- Rust: the three binaries, from Cargo.lock (--locked) ----------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS rust
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cks-operator -p cks-gateway -p cks-cli \
        --bin cks-operator --bin cks-gateway --bin cks \
    && mkdir -p /out \
    && cp target/release/cks-operator target/release/cks-gateway target/release/cks /out/

# ---- Web page: `npm ci && npm run build` in web/ when the checkout has it -------------------------
# `web*` matches nothing in a checkout without web/ (Cargo.toml keeps the COPY valid), so the
# stage then leaves an empty page directory and the gateway serves the API only.
FROM docker.io/library/node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/web
COPY Cargo.toml web* ./
RUN if [ -f package.json ]; then \
        npm ci --no-audit --no-fund && npm run build && mv dist /out; \
    else \
        mkdir /out; \
    fi

# ---- Scenario catalog, checked with the CLI that was just built ----------------------------------
FROM docker.io/library/debian:bookworm-slim AS catalog
COPY --from=rust /out/cks /usr/local/bin/cks
COPY scenarios /catalog
RUN ["/usr/local/bin/cks", "scenario", "lint", "--strict", "/catalog"]

# ---- Runtime: distroless cc (glibc, libgcc; no shell, no package manager), UID 65532 -------------
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cks-lab" \
      org.opencontainers.image.description="CKS practice platform on KubeVirt: cks-operator, cks-gateway, cks CLI, web page and scenario catalog" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/cks-lab/cks-lab" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=rust /out/ /usr/local/bin/
COPY --from=web /out /usr/share/cks-lab/web
COPY --from=catalog /catalog /usr/share/cks-lab/scenarios
# Both binaries read the catalog from here when --scenarios is not given; the chart passes
# --web-dir /usr/share/cks-lab/web to the gateway.
ENV CKS_SCENARIOS=/usr/share/cks-lab/scenarios
# glibc keeps up to eight malloc arenas per core, each holding on to freed memory: two keep the
# operator's resident memory after a burst of 1 000 Sessions ~10 MiB lower (make bench runs the
# operator with the same setting).
ENV MALLOC_ARENA_MAX=2
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/cks-gateway"]
