#!/usr/bin/env bash
# Installs (when missing) and starts (when not running) the real servers the
# test suite talks to: a MariaDB server on 127.0.0.1:$TEST_DB_PORT and a moto
# S3-compatible server on 127.0.0.1:$TEST_S3_PORT. Idempotent: a second call
# finds both running and returns at once. Prints the variables the tests read.
set -euo pipefail

STATE=${SELMAI_TEST_STATE:-/var/tmp/selmai-backup-test}
DB_PORT=${TEST_DB_PORT:-33306}
S3_PORT=${TEST_S3_PORT:-35555}
DB_USER=selmai_test
DB_PASS=selmai-test-password
mkdir -p "$STATE"

log() { printf 'services: %s\n' "$*" >&2; }

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v gpg >/dev/null 2>&1 || need_apt+=(gnupg)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

db_up() { mariadb-admin --protocol=TCP -h 127.0.0.1 -P "$DB_PORT" -u "$DB_USER" -p"$DB_PASS" ping >/dev/null 2>&1; }

if ! db_up; then
  data="$STATE/mariadb"
  if [ ! -d "$data/mysql" ]; then
    log "initialising MariaDB data directory in $data"
    rm -rf "$data"; mkdir -p "$data"; chown mysql:mysql "$data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$data" \
      --auth-root-authentication-method=socket >/dev/null
  fi
  mkdir -p "$STATE/run"
  chown -R mysql:mysql "$data" "$STATE/run"
  log "starting MariaDB on 127.0.0.1:$DB_PORT"
  start-stop-daemon --start --background --make-pidfile --pidfile "$STATE/mariadb.pid" \
    --exec /usr/sbin/mariadbd -- --no-defaults --user=mysql --datadir="$data" \
    --socket="$STATE/run/mariadb.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --max-allowed-packet=64M --log-bin=binlog --server-id=1 \
    --binlog-format=ROW --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
    --event-scheduler=OFF --log-error="$STATE/run/mariadb.err"
  for _ in $(seq 1 60); do
    mariadb --no-defaults -S "$STATE/run/mariadb.sock" -u root -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb --no-defaults -S "$STATE/run/mariadb.sock" -u root <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost' WITH GRANT OPTION;
SQL
  db_up || { log "MariaDB did not come up; see $STATE/run/mariadb.err"; tail -20 "$STATE/run/mariadb.err" >&2; exit 1; }
fi

s3_up() { python3 - "$S3_PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=2)
PY
}
if ! s3_up; then
  venv="$STATE/moto-venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "installing moto into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[server]'
  fi
  log "starting moto on 127.0.0.1:$S3_PORT"
  start-stop-daemon --start --background --make-pidfile --pidfile "$STATE/moto.pid" \
    --output "$STATE/moto.log" --exec "$venv/bin/moto_server" -- -H 127.0.0.1 -p "$S3_PORT"
  for _ in $(seq 1 60); do s3_up && break; sleep 0.5; done
  s3_up || { log "moto did not come up; see $STATE/moto.log"; exit 1; }
fi

cat <<VARS
export TEST_DB_HOST=127.0.0.1
export TEST_DB_PORT=$DB_PORT
export TEST_DB_USER=$DB_USER
export TEST_DB_PASSWORD=$DB_PASS
export TEST_DB_SOCKET=$STATE/run/mariadb.sock
export TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
VARS
