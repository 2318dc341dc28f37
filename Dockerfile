# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, ship only the two binaries (the service and the
# load generator), the scenario catalog and the load profiles on a small Debian runtime, as a
# non-root user. The load generator job (infra/modules/loadgen-job.bicep) runs this same image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts keep the crate registry and compiled dependencies between builds (BuildKit); the
# binaries are copied out of the cached target dir because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chaos-lab --bin loadgen \
    && mkdir -p /out \
    && cp target/release/chaos-lab target/release/loadgen /out/ \
    && strip /out/chaos-lab /out/loadgen

FROM debian:bookworm-slim
# ca-certificates is unpinned on purpose: it must follow Debian's security updates (new and revoked
# roots for Azure endpoints), and bookworm's archive drops superseded versions, so a pin would
# break the build rather than make it reproducible.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home chaos \
    && mkdir -p /app/runs \
    && chown 10001:10001 /app/runs
WORKDIR /app
COPY --from=build /out/chaos-lab /out/loadgen /usr/local/bin/
COPY scenarios ./scenarios
COPY loadtests/profiles ./loadtests/profiles
USER 10001
ENV APP_HOST=0.0.0.0 \
    APP_PORT=8000 \
    LOG_FORMAT=json \
    SCENARIOS_DIR=/app/scenarios \
    RUNS_DIR=/app/runs \
    LOADGEN_PROFILES_DIR=/app/loadtests/profiles
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/chaos-lab"]
