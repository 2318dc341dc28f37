# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, ship only the binary on a small Debian runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin chaos-lab \
    && strip target/release/chaos-lab

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home chaos
COPY --from=build /src/target/release/chaos-lab /usr/local/bin/chaos-lab
USER 10001
ENV APP_HOST=0.0.0.0 \
    APP_PORT=8000 \
    LOG_FORMAT=json
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/chaos-lab"]
