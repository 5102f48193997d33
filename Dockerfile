# selmai-backup: one static binary in an empty (scratch) image, with CA
# certificates for TLS to buckets, a non-root user and a health check.
#
# The binary comes from the build context (dist/selmai-backup), built static
# with glibc (the musl target is not used):
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu
#
# How it is built here, with no registry to pull from: scripts/build-image.sh
# builds that binary on the host, makes a local Debian image from debootstrap
# (scripts/debian-image.sh, tagged selmai-local/bookworm) for the first
# stage, and runs
#   docker build --build-arg BASE=selmai-local/bookworm:latest -t selmai-backup:latest CONTEXT
# with a small context holding this file and dist/selmai-backup.
#
# How someone with a registry builds it: build the binary in the official
# Rust image, then build this file as it is (BASE defaults to
# debian:bookworm-slim, which gets ca-certificates from apt):
#   docker run --rm -v "$PWD":/src -w /src rust:bookworm sh -c \
#     'RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
#        --target x86_64-unknown-linux-gnu \
#      && mkdir -p dist && cp target/x86_64-unknown-linux-gnu/release/selmai-backup dist/'
#   docker build -t selmai-backup .
# (A `FROM rust:bookworm AS build` stage is not used in this file because
# the classic builder of Docker 20.10 builds every stage, and that one
# cannot be pulled here.)
#
# Works with the classic builder and with BuildKit: no BuildKit-only syntax.

ARG BASE=debian:bookworm-slim

# Stage 1: the few files a scratch image needs, made with a shell.
FROM ${BASE} AS base
RUN set -eu; \
    if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
    fi; \
    mkdir -p /out/etc/ssl/certs /out/backups /out/tmp; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    echo 'selmai:x:10001:10001:selmai-backup:/nonexistent:/sbin/nologin' > /out/etc/passwd; \
    echo 'selmai:x:10001:' > /out/etc/group; \
    # Static glibc reads this to choose how to resolve names: /etc/hosts,
    # then the DNS server compose gives every container (service names).
    echo 'hosts: files dns' > /out/etc/nsswitch.conf; \
    chmod 1777 /out/tmp

# Stage 2: the image.
FROM scratch
COPY --from=base /out/etc/ /etc/
COPY --from=base /out/tmp/ /tmp/
# The owner carries over to a named volume mounted here; a bind mount
# (./backups) must be made writable for uid 10001 on the host.
COPY --from=base --chown=10001:10001 /out/backups/ /backups/
COPY dist/selmai-backup /selmai-backup
ENV BACKUP_DIR=/backups \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
ENTRYPOINT ["/selmai-backup"]
CMD ["run"]
# Healthy while the newest backup is fresh (see `selmai-backup health`).
# The start period covers the first backup of a new installation.
HEALTHCHECK --interval=1m --timeout=30s --start-period=10m --retries=3 \
    CMD ["/selmai-backup", "health"]
LABEL org.opencontainers.image.title="selmai-backup" \
      org.opencontainers.image.description="Backup sidecar for MariaDB applications under docker compose"
