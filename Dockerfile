# syntax=docker/dockerfile:1
#
# nsqgate container image.
#   docker build -t nsqgate .
#   docker run --rm -v "$PWD/proxy.toml:/etc/nsqgate/proxy.toml:ro" -p 4150:4150 nsqgate
# (proxy.toml: your own, from proxy.toml.example; deploy/proxy.compose.toml is the compose stack's)
# The image runs as the unprivileged user nsqgate (uid/gid 10001). Mount the configuration
# at /etc/nsqgate/proxy.toml (or override CMD) and the certificates it names, readable by
# that user. See docker-compose.yml for a development stack with stock nsqd.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build ----------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /build
# rustls uses ring, whose C/asm parts build with the gcc that the rust image ships.
# Only the manifest and src/ are needed for the binary (.dockerignore keeps the context
# small); copy more here if Cargo.toml ever names targets outside src/ explicitly.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin nsqgate \
    && install -D -m 0755 target/release/nsqgate /out/nsqgate

# --- runtime --------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN groupadd --system --gid 10001 nsqgate \
    && useradd --system --uid 10001 --gid nsqgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin nsqgate \
    # /certs is owned by nsqgate so that a fresh named volume mounted there (which Docker
    # fills from the image, ownership included) is writable by `nsqgate certs dev`.
    && install -d -o root -g root -m 0755 /etc/nsqgate \
    && install -d -o nsqgate -g nsqgate -m 0755 /certs
COPY --from=build /out/nsqgate /usr/local/bin/nsqgate
USER 10001:10001
EXPOSE 4150 4151 4152 4161 4171 9150
ENV NSQGATE_LOG=info
ENTRYPOINT ["nsqgate"]
CMD ["run", "--config", "/etc/nsqgate/proxy.toml"]
