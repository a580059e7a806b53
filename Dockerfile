# syntax=docker/dockerfile:1
#
# One image recipe for all six services. Pick the service with build args:
#
#   docker build --build-arg SERVICE=inventory-sync --build-arg HTTP_PORT=8083 \
#     -t ghcr.io/datasync/inventory-sync:dev .
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> cacher (builds only
# the dependencies, so this layer survives edits to our own code) -> builder (our crates) ->
# runtime (debian slim, the one binary, non-root).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS cacher
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<crate name>" >&2; exit 1; }
COPY --from=planner /app/recipe.json recipe.json
# Cook for the same package as the final build: cargo unifies features over the selected
# packages only, so cooking the whole workspace would leave deps with other features to rebuild.
RUN cargo chef cook --release --recipe-path recipe.json --package "${SERVICE}"

FROM chef AS builder
ARG SERVICE
COPY . .
COPY --from=cacher /app/target target
COPY --from=cacher /usr/local/cargo /usr/local/cargo
RUN cargo build --release --locked --package "${SERVICE}" \
    && cp "target/release/${SERVICE}" /app/service-binary

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
RUN test -n "${HTTP_PORT}" || { echo "build with --build-arg HTTP_PORT=<port>" >&2; exit 1; }

COPY --from=builder /app/service-binary /usr/local/bin/${SERVICE}
# Exec-form ENTRYPOINT cannot expand build args, so give the binary a fixed second name.
RUN ln -s "/usr/local/bin/${SERVICE}" /usr/local/bin/datasync-service

LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
EXPOSE ${HTTP_PORT}
# The binary is PID 1 and handles SIGTERM itself (graceful drain within SHUTDOWN_GRACE_SECS).
ENTRYPOINT ["/usr/local/bin/datasync-service"]
CMD ["serve"]
