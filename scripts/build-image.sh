#!/usr/bin/env bash
# Builds the static binary and the container image, without any registry.
#
#   scripts/build-image.sh                 # tag selmai-backup:latest, what
#                                          # docker-compose.backup.yml runs
#   scripts/build-image.sh myrepo/selmai-backup:1.2.3
#   SELMAI_BINARY=path/to/selmai-backup scripts/build-image.sh   # skip cargo
#
# 1. cargo builds a static glibc binary (+crt-static, x86_64-unknown-linux-gnu,
#    release) and we check that it is static;
# 2. scripts/debian-image.sh makes the local Debian image the Dockerfile's
#    first stage starts from (once per machine);
# 3. docker build runs on a small context: the Dockerfile and the binary.
# Prints the image's size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TAG=${1:-selmai-backup:latest}
TRIPLE=x86_64-unknown-linux-gnu
log() { printf 'build-image: %s\n' "$*" >&2; }

if [ -n "${SELMAI_BINARY:-}" ]; then
  BIN=$SELMAI_BINARY
  log "using the binary $BIN"
else
  log "cargo build --release --target $TRIPLE (static glibc)"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --release --target "$TRIPLE" --bin selmai-backup
  BIN="${CARGO_TARGET_DIR:-target}/$TRIPLE/release/selmai-backup"
fi
# A dynamic binary would start on the host and fail in the scratch image
# with a bare "no such file or directory" (no loader there).
linkage=$(ldd "$BIN" 2>&1 || true)
case "$linkage" in
  *"not a dynamic executable"*|*"statically linked"*) log "$BIN: ldd: $linkage" ;;
  *) log "$BIN is dynamically linked:"; printf '%s\n' "$linkage" >&2; exit 1 ;;
esac

BASE=$(scripts/debian-image.sh)

CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
mkdir -p "$CONTEXT/dist"
cp Dockerfile "$CONTEXT/"
cp "$BIN" "$CONTEXT/dist/selmai-backup"

# Docker 20.10's own builder when the CLI has no buildx plugin (BuildKit
# through the CLI needs it); the Dockerfile works with both.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
log "docker build -t $TAG (BASE=$BASE)"
previous=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
# Quiet unless it fails: the classic builder's deprecation notice is noise.
if ! out=$(docker build -q --build-arg "BASE=$BASE" -t "$TAG" "$CONTEXT" 2>&1); then
  printf '%s\n' "$out" >&2
  log "docker build failed"
  exit 1
fi
# The image this tag named before is now untagged: drop it (not when a
# container or another tag still uses it), so rebuilds do not pile up.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$TAG")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect --format '{{.Size}}' "$TAG")
log "built $TAG: $((size / 1024 / 1024)) MiB ($size bytes)"
echo "$TAG"
