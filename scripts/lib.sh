# Shared by the benchmark scripts (sourced, from the repository's root):
# the test services and the release binary they measure.

# The servers of scripts/services.sh, with their TEST_* variables exported,
# and `conn`, the mariadb client's options for the test server (password
# in MYSQL_PWD). Assigned first so that a failure of services.sh stops the
# script.
bench_services() {
  local services_env
  services_env=$(scripts/services.sh)
  eval "$services_env"
  export MYSQL_PWD=$TEST_DB_PASSWORD
  conn=(--no-defaults --protocol=TCP -h "$TEST_DB_HOST" -P "$TEST_DB_PORT" -u "$TEST_DB_USER")
}

# BIN: the same static release binary as the image (scripts/build-image.sh),
# which cargo rebuilds only when the sources changed; SELMAI_BINARY names
# another one.
bench_binary() {
  BIN=${SELMAI_BINARY:-}
  if [ -z "$BIN" ]; then
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo build --locked --release --target x86_64-unknown-linux-gnu --bin selmai-backup -q
    BIN=target/x86_64-unknown-linux-gnu/release/selmai-backup
  fi
}
