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

# The benchmarks' data set, as SQL for the current database: 4 tables
# (orders, members, messages with text, photos with binary digests) of
# $1 rows each, generated with the Sequence engine.
bench_tables_sql() {
  local n=$1
  cat <<SQL
CREATE TABLE orders (id INT PRIMARY KEY, member INT NOT NULL, amount DECIMAL(12,2), created DATETIME(6), note VARCHAR(100), KEY (member));
CREATE TABLE members (id INT PRIMARY KEY, name VARCHAR(64), email VARCHAR(100), joined DATE, balance DOUBLE);
CREATE TABLE messages (id INT PRIMARY KEY, sender INT, body TEXT, sent TIMESTAMP);
CREATE TABLE photos (id INT PRIMARY KEY, owner INT, digest BINARY(32), width SMALLINT, height SMALLINT);
INSERT INTO orders SELECT seq, seq % 50000, (seq * 37 % 100000) / 100, '2024-01-01' + INTERVAL seq SECOND, CONCAT('order ', seq, ' for service ', seq % 997) FROM seq_1_to_${n};
INSERT INTO members SELECT seq, CONCAT('Member ', seq), CONCAT('member', seq, '@example.org'), '2020-01-01' + INTERVAL (seq % 1500) DAY, seq / 7 FROM seq_1_to_${n};
INSERT INTO messages SELECT seq, seq % 50000, CONCAT('Bonjour, voici le message numero ', seq, ' ', SHA2(seq, 256)), '2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_${n};
INSERT INTO photos SELECT seq, seq % 50000, UNHEX(SHA2(seq, 256)), 640 + seq % 640, 480 + seq % 480 FROM seq_1_to_${n};
SQL
}
