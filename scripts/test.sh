#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run). Starts the
# real MariaDB, S3-compatible and SFTP servers the integration tests talk
# to (scripts/services.sh, idempotent), then checks formatting and lints and
# runs every test. Exits non-zero on the first failure.
#
# Extra arguments go to `cargo test` (and skip the end-to-end test of the
# container unless SELMAI_E2E=1):
#   ./scripts/test.sh harness -- --nocapture
#
# Needs only cargo from rustup (with its default rustfmt and clippy) on
# Debian bookworm, as root: the servers and a C compiler come from apt.
# The end-to-end test also needs a running Docker engine and docker-compose.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*" >&2; }

# ring (TLS) and zstd-sys build C code, and rustup does not bring a compiler.
if ! command -v cc >/dev/null 2>&1; then
  step "installing a C compiler (build-essential)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq build-essential >/dev/null
fi
for component in rustfmt clippy; do
  if ! cargo "${component#rust}" --version >/dev/null 2>&1; then
    echo "test.sh: cargo ${component#rust} is missing: rustup component add $component" >&2
    exit 1
  fi
done

step "starting test services"
# Assigned first so that a failure of services.sh stops us (set -e does not
# see a failing command substitution inside eval's argument).
services_env=$(scripts/services.sh)
eval "$services_env"

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test $*"
cargo test --locked "$@"

# The container on the real Docker engine: the README's first command
# (scripts/demo.sh) and its recipes on the shipped compose files; builds
# the images it needs, with no registry. Skipped when arguments chose a
# subset of the tests.
if [ $# -eq 0 ] || [ "${SELMAI_E2E:-}" = 1 ]; then
  step "end-to-end test of the image and compose files (tests/e2e.sh)"
  tests/e2e.sh
fi

# The benchmarks themselves are run by hand (docs/BENCHMARKS.md); CI only
# checks that the scripts still work, on a small data set or a short load.
step "benchmark script on a small data set (scripts/bench.sh --rows 20000)"
scripts/bench.sh --rows 20000 >/dev/null
step "binlog archive benchmark script, briefly (scripts/bench-binlog.sh --seconds 3 --rate 100 --big 2)"
scripts/bench-binlog.sh --seconds 3 --rate 100 --big 2 >/dev/null
step "point-in-time replay benchmark script, briefly (scripts/bench_pitr.sh --transactions 2000 --large 2)"
scripts/bench_pitr.sh --transactions 2000 --large 2 >/dev/null
step "SFTP benchmark script, briefly (scripts/bench-sftp.sh --mb 20 --debug: the tests' build)"
scripts/bench-sftp.sh --mb 20 --debug >/dev/null
