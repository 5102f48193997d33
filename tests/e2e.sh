#!/usr/bin/env bash
# End-to-end test of the container on the real Docker engine, with no
# registry: every image is built here. scripts/test.sh runs it after cargo
# test; it exits non-zero on the first failed check.
#
# What it proves (RELIABILITY.md 16 and 17, and the compose recipe of the
# README):
#   - our image is FROM scratch, static, and resolves the `db` service name;
#   - docker-compose.backup.yml, merged with a SELMai-shaped stack, brings
#     the backup service up and it turns healthy after its first backup;
#   - `run --rm backup restore latest --yes` restores while the labelled app
#     container is stopped, and the app runs again afterwards; unlabelled
#     containers, a label set to false and other projects are untouched;
#   - a corrupt backup exits 5 and touches neither the app nor the database;
#   - a restore that fails midway still starts the app again;
#   - a crash mid-restore (the record left behind) is repaired by the next
#     command;
#   - without the Docker socket a restore works and says once that it
#     cannot stop containers.
#
# Images: selmai-local/bookworm (debootstrap, once per machine: ~3 min cold),
# selmai-test/mariadb:bookworm and selmai-test/app (docker build on it,
# cached by the builder), selmai-backup:e2e (scripts/build-image.sh).
# SELMAI_BINARY=path skips cargo (see scripts/build-image.sh).
# Runs with docker-compose v1 and, when present, `docker compose` v2 too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
T0=$SECONDS

IMAGE=selmai-backup:e2e
MARIADB_IMAGE=selmai-test/mariadb:bookworm
APP_IMAGE=selmai-test/app:latest
PROJECT=selmaie2e
EVENT_ROWS=${SELMAI_E2E_ROWS:-300000}
LABEL=selmai.backup.stop-during-restore

step() { printf '\n== e2e: %s (%ss)\n' "$*" "$((SECONDS - T0))" >&2; }
fail() { printf 'e2e: FAILED: %s\n' "$*" >&2; exit 1; }
ok() { printf 'e2e: ok: %s\n' "$*" >&2; PASSED=$((PASSED + 1)); }
PASSED=0

command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "the Docker engine is not reachable (is dockerd running?)"
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "e2e: installing docker-compose (v1, Debian's package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null
fi
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi

# docker build, quiet unless it fails (the classic builder's deprecation
# notice is noise here).
build() {
  local out
  out=$(docker build -q "$@" 2>&1) || { printf '%s\n' "$out" >&2; fail "docker build $*"; }
}

WORK=
cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] && [ -n "${COMPOSE:-}" ]; then
    echo "e2e: logs of the failed run:" >&2
    compose logs --no-color --tail=40 >&2 2>&1
  fi
  [ -n "${COMPOSE:-}" ] && compose down -v --remove-orphans >/dev/null 2>&1
  [ -n "${OTHER:-}" ] && docker rm -f "$OTHER" >/dev/null 2>&1
  [ -n "$WORK" ] && rm -rf "$WORK"
  printf '\ne2e: %s after %ss\n' "$([ $rc -eq 0 ] && echo passed || echo FAILED)" "$((SECONDS - T0))" >&2
  exit $rc
}
trap cleanup EXIT

step "images"
BASE=$(scripts/debian-image.sh)
build --build-arg "BASE=$BASE" -t "$MARIADB_IMAGE" tests/e2e/mariadb
build --build-arg "BASE=$BASE" -t "$APP_IMAGE" tests/e2e/app
scripts/build-image.sh "$IMAGE" >/dev/null
SIZE=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "e2e: image $IMAGE is $((SIZE / 1024 / 1024)) MiB ($SIZE bytes)" >&2
[ "$SIZE" -le $((20 * 1024 * 1024)) ] || fail "image larger than 20 MiB"
ok "image size ≤ 20 MiB"
# FROM scratch: the file system is ours alone, no shell, no libc.
cid=$(docker create "$IMAGE")
files=$(docker export "$cid" | tar -t)
docker rm "$cid" >/dev/null
if grep -qE '^(bin|lib|usr|sbin)/' <<<"$files"; then
  printf '%s\n' "$files" >&2
  fail "the image has more than our files (not FROM scratch?)"
fi
for f in selmai-backup etc/passwd etc/group etc/nsswitch.conf etc/ssl/certs/ca-certificates.crt; do
  grep -qx "$f" <<<"$files" || fail "the image lacks /$f"
done
[ "$(docker image inspect --format '{{.Config.User}}' "$IMAGE")" = 10001:10001 ] || fail "the image does not run as uid 10001"
ok "FROM scratch, static binary, CA certificates, non-root user"
help=$(docker run --rm "$IMAGE" --help 2>&1) || true
for sub in run health restore; do
  if ! grep -qE "^  $sub " <<<"$help"; then
    printf '%s\n' "$help" >&2
    fail "the image has no \`$sub\` subcommand (\`run\` and \`health\` come with the daemon)"
  fi
done

# ---------------------------------------------------------------- stack ----
WORK=$(mktemp -d /tmp/selmai-e2e.XXXXXX)
OTHER=selmai-e2e-other-$$
SOCKET_GID=$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)

cat >"$WORK/.env" <<'EOF'
DB_USER=selmai
DB_PASSWORD=e2e-app-password
DB_NAME=selmai
DB_ROOT_PASSWORD=must-not-reach-the-backup-container
EOF
# The SELMai-shaped stack (db, app, a service whose label is false), the
# way examples/selmai/docker-compose.prod.yml is shaped.
cat >"$WORK/docker-compose.prod.yml" <<EOF
version: "3.8"
services:
  db:
    image: $MARIADB_IMAGE
    environment:
      MARIADB_ROOT_PASSWORD: \${DB_ROOT_PASSWORD}
      MARIADB_DATABASE: \${DB_NAME}
      MARIADB_USER: \${DB_USER}
      MARIADB_PASSWORD: \${DB_PASSWORD}
    volumes:
      - db_data:/var/lib/mysql
  backend:
    image: $APP_IMAGE
    depends_on: [db]
    volumes:
      - uploads:/app/uploads
  nginx:
    image: $APP_IMAGE
    labels:
      $LABEL: "false"
volumes:
  db_data:
  uploads:
EOF
# What the test changes: our image, quick health checks, the socket.
cat >"$WORK/e2e.override.yml" <<EOF
services:
  backup:
    image: $IMAGE
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
    group_add:
      - "$SOCKET_GID"
    healthcheck:
      interval: 1s
      timeout: 10s
      retries: 3
      start_period: 5m
EOF
mkdir -p "$WORK/backups" "$WORK/nginx"
echo "server {}" >"$WORK/nginx/default.conf"
chown 10001:10001 "$WORK/backups"

compose() {
  "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$WORK" \
    -f "$WORK/docker-compose.prod.yml" -f "$REPO/docker-compose.backup.yml" \
    -f "$WORK/e2e.override.yml" "$@"
}
id_of() { compose ps -q "$1"; }
started_at() { docker inspect --format '{{.State.StartedAt}}' "$1"; }
running() { [ "$(docker inspect --format '{{.State.Running}}' "$1")" = true ]; }
sql() { docker exec -i "$(id_of db)" mariadb -uroot -N -B selmai "$@"; }
# A fingerprint of the data: row counts and CHECKSUM TABLE of every table.
fingerprint() {
  sql -e "SELECT table_name FROM information_schema.tables WHERE table_schema='selmai' ORDER BY 1" |
    while read -r t; do
      printf '%s %s %s\n' "$t" "$(sql -e "SELECT COUNT(*) FROM \`$t\`")" \
        "$(sql -e "CHECKSUM TABLE \`$t\`" | cut -f2)"
    done
}
wait_for() { # seconds, description, command...
  local limit=$1 what=$2; shift 2
  local until=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $until ] || fail "$what: not within ${limit}s"
    sleep 1
  done
}
health() { docker inspect --format '{{.State.Health.Status}}' "$(id_of backup)" 2>/dev/null; }
healthy() { [ "$(health)" = healthy ]; }
restore() { # exit code in RC, output in OUT
  set +e
  OUT=$(compose run --rm -T backup restore "$@" 2>&1)
  RC=$?
  set -e
  printf '%s\n' "$OUT" | sed 's/^/    | /' >&2
}

scenario() {
  step "stack up with ${COMPOSE[*]}"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  compose config -q || fail "the merged compose files do not validate"
  compose up -d db backend nginx >/dev/null 2>&1 || { compose up -d db backend nginx; fail "up"; }
  wait_for 120 "MariaDB accepts the app user" \
    docker exec "$(id_of db)" mariadb -uselmai -pe2e-app-password -h 127.0.0.1 selmai -e 'SELECT 1' >/dev/null 2>&1
  sql <<SQL
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, note TEXT) CHARSET utf8mb4;
INSERT INTO customers (name, note) VALUES ('Ada', 'first 🚀'), ('Grace', NULL), ('Linus', '');
CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total DECIMAL(10,2),
  FOREIGN KEY (customer) REFERENCES customers(id));
INSERT INTO orders VALUES (1, 1, 9.99), (2, 2, 120.00);
-- Enough rows for the restore to outlast a few health checks (below).
CREATE TABLE events (id INT PRIMARY KEY, payload VARCHAR(200));
INSERT INTO events SELECT seq, CONCAT(MD5(seq), SHA1(seq), MD5(seq * 7)) FROM seq_1_to_$EVENT_ROWS;
SQL
  BEFORE=$(fingerprint)

  # Another project's labelled container must never be touched.
  docker rm -f "$OTHER" >/dev/null 2>&1 || true
  docker run -d --name "$OTHER" --label com.docker.compose.project=someoneelse "$APP_IMAGE" >/dev/null

  compose up -d backup >/dev/null 2>&1 || { compose up -d backup; fail "up backup"; }
  step "waiting for the backup container to turn healthy"
  wait_for 180 "backup container healthy (status: $(health))" healthy
  ok "backup container healthy after its first backup"
  ls "$WORK/backups" | grep -q '^selmai_backup_.*\.sql\.gz$' || fail "no backup file in ./backups"
  docker exec "$(id_of backup)" /selmai-backup list >/dev/null 2>&1 \
    || fail "list inside the running container failed"
  if docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$(id_of backup)" | grep -q DB_ROOT_PASSWORD; then
    fail "DB_ROOT_PASSWORD reached the backup container"
  fi

  step "restore latest while the app is stopped"
  # A restore replaces the tables in the backup (it does not drop others).
  sql -e "DELETE FROM orders; DELETE FROM customers WHERE id = 3; UPDATE customers SET note = 'changed'"
  [ "$(fingerprint)" != "$BEFORE" ] || fail "the change did not change the fingerprint"
  APP=$(id_of backend); NGINX=$(id_of nginx); DB=$(id_of db)
  app0=$(started_at "$APP"); nginx0=$(started_at "$NGINX"); db0=$(started_at "$DB"); other0=$(started_at "$OTHER")
  t0=$(date +%s.%N)
  restore latest --yes
  t1=$(date +%s.%N)
  [ "$RC" -eq 0 ] || fail "restore latest exited $RC"
  # While it ran, the daemon's health check (every second) saw the record of
  # stopped containers; it must have left it alone (the restore holds the
  # BACKUP_DIR lock across containers), so the app was started by the
  # restore at its end, not by a health check in the middle.
  python3 - "$t0" "$t1" "$(started_at "$APP")" <<'PY' || fail "the app was started again before the restore ended"
import sys, datetime
t0, t1, started = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
whole, _, frac = started.rstrip("Z").partition(".")
s = datetime.datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))
print(f"e2e: restore took {t1 - t0:.1f}s; the app started again {t1 - s:.1f}s before it returned", file=sys.stderr)
sys.exit(0 if t1 - s < 3.0 else 1)
PY
  # Docker keeps the last five health checks: any that ran
  # during the restore must not have "repaired" it.
  if docker inspect --format '{{range .State.Health.Log}}{{.Output}}{{end}}' "$(id_of backup)" |
     grep -q "interrupted"; then
    fail "a health check restarted the app during the restore"
  fi
  grep -q "stopping ${PROJECT}[_-]backend[_-]1" <<<"$OUT" || fail "the restore did not say it stopped the backend"
  grep -q "started ${PROJECT}[_-]backend[_-]1 .* again" <<<"$OUT" || fail "the restore did not say it started the backend again"
  [ "$(grep -c '^stopping ' <<<"$OUT")" -eq 1 ] || fail "the restore stopped more than the backend"
  running "$APP" || fail "the backend is not running after the restore"
  [ "$(started_at "$APP")" != "$app0" ] || fail "the backend was not restarted (StartedAt unchanged)"
  [ "$(started_at "$NGINX")" = "$nginx0" ] && running "$NGINX" || fail "nginx (label false) was touched"
  [ "$(started_at "$DB")" = "$db0" ] || fail "db was touched"
  [ "$(started_at "$OTHER")" = "$other0" ] && running "$OTHER" || fail "another project's container was touched"
  [ "$(fingerprint)" = "$BEFORE" ] || fail "the restored data differ: $(fingerprint) vs $BEFORE"
  [ ! -e "$WORK/backups/.selmai-backup-stopped.json" ] || fail "the record of stopped containers was left"
  ok "restore latest: backend stopped and started again, data restored, nothing else touched"

  step "a corrupt backup exits 5 and touches nothing"
  latest=$(cd "$WORK/backups" && ls selmai_backup_*.sql.gz | sort | tail -1)
  cp "$WORK/backups/$latest" "$WORK/backups/selmai_backup_20000101_000000.sql.gz"
  cp "$WORK/backups/$latest.manifest.json" "$WORK/backups/selmai_backup_20000101_000000.sql.gz.manifest.json"
  python3 - "$WORK/backups/selmai_backup_20000101_000000.sql.gz" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(b)
PY
  sql -e "INSERT INTO customers (name) VALUES ('after the backup')"
  mid=$(fingerprint); app0=$(started_at "$APP")
  restore /backups/selmai_backup_20000101_000000.sql.gz --yes
  [ "$RC" -eq 5 ] || fail "restore of a corrupt file exited $RC, not 5"
  [ "$(started_at "$APP")" = "$app0" ] && running "$APP" || fail "the app was stopped for a corrupt file"
  [ "$(fingerprint)" = "$mid" ] || fail "the database changed after a rejected restore"
  ok "corrupt backup: exit 5, app running, database untouched"

  step "a restore that fails midway is rolled back and starts the app again"
  printf 'CREATE TABLE midway (i INT);\nINSERT INTO midway VALUES (1);\nTHIS IS NOT SQL;\n' |
    gzip >"$WORK/backups/midway.sql.gz"
  app0=$(started_at "$APP")
  before=$(fingerprint)
  restore /backups/midway.sql.gz --yes
  [ "$RC" -eq 1 ] || fail "a failing statement exited $RC, not 1"
  grep -q "is as it was before" <<<"$OUT" || fail "the failed restore was not rolled back"
  [ "$(fingerprint)" = "$before" ] || fail "the database differs after the roll-back"
  grep -q "stopping ${PROJECT}[_-]backend" <<<"$OUT" || fail "the app was not stopped for the restore"
  running "$APP" && [ "$(started_at "$APP")" != "$app0" ] || fail "the app was not started again after a failed restore"
  [ ! -e "$WORK/backups/.selmai-backup-stopped.json" ] || fail "the record was left after a failed restore"
  ok "failed restore: rolled back, app stopped and started again"

  step "docker stop during a restore starts the app again"
  # A restore of the real backup can end within the half second below (it
  # did once); this one is still running when the signal comes.
  printf 'CREATE TABLE slow_restore (i INT);\nDO SLEEP(30);\n' | gzip >"$WORK/backups/slow.sql.gz"
  app0=$(started_at "$APP")
  RUNNER=${PROJECT}_restore_sigterm
  docker rm -f "$RUNNER" >/dev/null 2>&1 || true
  compose run -d -T --name "$RUNNER" backup restore /backups/slow.sql.gz --yes >/dev/null 2>&1
  # The record appears when the app is stopped, just before the first statement.
  wait_for 60 "the restore stopped the app" test -e "$WORK/backups/.selmai-backup-stopped.json"
  sleep 0.5
  t0=$SECONDS
  docker stop -t 20 "$RUNNER" >/dev/null
  RC=$(docker wait "$RUNNER")
  docker logs "$RUNNER" 2>&1 | sed 's/^/    | /' >&2
  docker logs "$RUNNER" 2>&1 | grep -q "interrupted by SIGTERM" \
    || fail "the restore did not report SIGTERM (exit $RC after $((SECONDS - t0))s)"
  docker rm "$RUNNER" >/dev/null
  [ "$RC" -ne 0 ] && [ "$RC" -ne 137 ] || fail "an interrupted restore exited $RC"
  running "$APP" && [ "$(started_at "$APP")" != "$app0" ] || fail "the app was not started again after SIGTERM"
  [ ! -e "$WORK/backups/.selmai-backup-stopped.json" ] || fail "the record was left after SIGTERM"
  sql -e "DROP TABLE IF EXISTS slow_restore"
  ok "SIGTERM mid-restore: app started again, exit $RC"

  step "a crash mid-restore is repaired by the next command"
  # The daemon's health check is a command too and would win the race;
  # with it stopped, the next command is ours.
  compose stop backup >/dev/null 2>&1
  docker stop "$APP" >/dev/null
  printf '{"version":1,"project":"%s","stopped_at":"2025-01-01T00:00:00Z","containers":[{"id":"%s","name":"backend"}]}\n' \
    "$PROJECT" "$APP" >"$WORK/backups/.selmai-backup-stopped.json"
  set +e; OUT=$(compose run --rm -T backup list 2>&1); RC=$?; set -e
  printf '%s\n' "$OUT" | sed 's/^/    | /' >&2
  [ "$RC" -eq 0 ] || fail "list exited $RC"
  grep -q "interrupted" <<<"$OUT" || fail "the next command did not say it found an interrupted restore"
  running "$APP" || fail "the app was not started again after a crash"
  [ ! -e "$WORK/backups/.selmai-backup-stopped.json" ] || fail "the record was left after recovery"
  compose start backup >/dev/null 2>&1
  ok "crash recovery: app started again by the next command"

  step "without the Docker socket a restore works and says so once"
  set +e
  OUT=$(docker run --rm --network "$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$DB")" \
    -e DB_USER=selmai -e DB_PASSWORD=e2e-app-password -e DB_NAME=selmai \
    -v "$WORK/backups:/backups" "$IMAGE" restore latest --yes 2>&1)
  RC=$?
  set -e
  printf '%s\n' "$OUT" | sed 's/^/    | /' >&2
  [ "$RC" -eq 0 ] || fail "restore without the socket exited $RC"
  [ "$(grep -c "cannot stop the application's containers" <<<"$OUT")" -eq 1 ] \
    || fail "the warning about the missing socket was not said exactly once"
  [ "$(fingerprint)" = "$BEFORE" ] || fail "restore without the socket did not restore"
  ok "no socket: restored (name db resolved from a scratch image), one warning"

  compose down -v --remove-orphans >/dev/null 2>&1
  docker rm -f "$OTHER" >/dev/null 2>&1 || true
}

COMPOSE=(docker-compose)
scenario
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
  scenario
else
  echo "e2e: docker compose v2 is not installed; ran docker-compose v1 only" >&2
fi
COMPOSE=()
echo "e2e: image $IMAGE: $((SIZE / 1024 / 1024)) MiB" >&2
echo "e2e: $PASSED passed, 0 failed"
