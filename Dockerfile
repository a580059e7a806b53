# syntax=docker/dockerfile:1
#
# One image recipe for all six services. Pick the service with build args:
#
#   docker build --build-arg SERVICE=inventory-sync --build-arg HTTP_PORT=8083 \
#     -t ghcr.io/datasync/inventory-sync:dev .
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder (cooks the
# dependencies, then compiles all six service binaries) -> runtime (debian slim, the one binary
# the SERVICE build arg picks, non-root).
#
# Nothing before the runtime stage depends on SERVICE: the six image builds (docker compose
# build, or a CI matrix on one BuildKit) have identical builder cache keys, so the dependency
# tree and the workspace are compiled once and every image copies its binary out of that.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Cook exactly the packages built below: cargo unifies features over the selected packages, so
# another selection would leave dependencies with other features to rebuild. This layer survives
# edits to our own code (only manifest and lock changes touch recipe.json).
RUN cargo chef cook --release --locked --recipe-path recipe.json \
    --package crm-sync --package erp-sync --package inventory-sync \
    --package user-sync --package conflict-resolver --package sync-monitor
COPY . .
RUN cargo build --release --locked \
    --package crm-sync --package erp-sync --package inventory-sync \
    --package user-sync --package conflict-resolver --package sync-monitor \
    && mkdir -p /app/bin \
    && cp target/release/crm-sync target/release/erp-sync target/release/inventory-sync \
       target/release/user-sync target/release/conflict-resolver target/release/sync-monitor \
       /app/bin/

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Fixed numeric ids so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 datasync \
    && useradd --system --uid 10001 --gid datasync --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin datasync

# Build args are declared only now: a RUN after an ARG is cached per value, and the layers
# above are meant to be shared by all six images.
ARG SERVICE
# The service's own default port (8081..8086); EXPOSE only documents it.
ARG HTTP_PORT
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<crate name>" >&2; exit 1; }; \
    test -n "${HTTP_PORT}" || { echo "build with --build-arg HTTP_PORT=<port>" >&2; exit 1; }

COPY --from=builder /app/bin/${SERVICE} /usr/local/bin/${SERVICE}
# Exec-form ENTRYPOINT cannot expand build args, so give the binary a fixed second name.
RUN ln -s "/usr/local/bin/${SERVICE}" /usr/local/bin/datasync-service

LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
EXPOSE ${HTTP_PORT}
# The binary is PID 1 and handles SIGTERM itself (graceful drain within SHUTDOWN_GRACE_SECS).
ENTRYPOINT ["/usr/local/bin/datasync-service"]
CMD ["serve"]
