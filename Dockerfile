# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, ship only the binary (plus the scenario catalog)
# on a small Debian runtime, running as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin chaos-lab \
    && strip target/release/chaos-lab

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home chaos \
    && mkdir -p /app/runs \
    && chown 10001 /app/runs
WORKDIR /app
COPY --from=build /src/target/release/chaos-lab /usr/local/bin/chaos-lab
COPY scenarios ./scenarios
USER 10001
ENV APP_HOST=0.0.0.0 \
    APP_PORT=8000 \
    LOG_FORMAT=json \
    SCENARIOS_DIR=/app/scenarios \
    RUNS_DIR=/app/runs
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/chaos-lab"]
