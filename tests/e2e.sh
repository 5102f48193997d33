#!/usr/bin/env bash
# End-to-end test of the image and the compose files on the real Docker
# engine, with no registry: every image is built here. scripts/test.sh runs
# it after cargo test; it exits non-zero on the first failed check.
#
# It starts from the README's first command, scripts/demo.sh, which does the
# README's set-up steps with the shipped files as they are (no override
# file, no edit): the image tag build-image.sh gives is the one
# docker-compose.backup.yml runs; ./backups belongs to uid 10001; the Docker
# socket and its group; backup.env passed whole; the drill's GRANT. Every
# later command is a README recipe run in that directory (`docker compose
# run --rm backup ...`, COMPOSE_FILE in .env). One function per step, each
# with its own checks:
#   demo           the stack turns (healthy) after its first backup; `list`
#   image          FROM scratch, static, non-root, <= 20 MiB, the tag compose runs
#   env_whole      every variable of backup.env reaches the tool, the app's
#                  DB_ROOT_PASSWORD does not
#   backup_now     the "back up now" recipe
#   restore_latest the labelled app stopped and started again, nothing else
#                  touched, health checks meanwhile leave it alone
#                  (RELIABILITY 16)
#   corrupt        a corrupt backup exits 5, touches neither app nor data
#   failed_midway  a restore that fails midway starts the app again
#   sigterm        docker stop during a restore starts the app again
#   crash          a crash mid-restore is repaired by the next command
#   no_socket      without the Docker socket a restore works, says so once
#                  (RELIABILITY 17)
#   no_label       a restore with no labelled container warns, naming the label
#   drill          the README's GRANT lets `verify --restore-test` run; without
#                  it `check` warns with that GRANT
#   ownership      ./backups not writable by uid 10001: the daemon stops at
#                  start saying so and how to fix it
#   typo           a misspelt variable in backup.env stops the container
#                  with the "did you mean" line
#   down           the demo's teardown command removes everything
#
# Images: selmai-local/bookworm (debootstrap, once per machine: ~3 min cold),
# the demo's selmai-demo/mariadb and selmai-demo/app (cached by the builder),
# selmai-backup:latest (scripts/build-image.sh; SELMAI_BINARY=path skips
# cargo). Runs with docker-compose v1 and, when present, `docker compose` v2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
T0=$SECONDS

IMAGE=selmai-backup:latest
APP_IMAGE=selmai-demo/app:latest
PROJECT=selmaie2e
EVENT_ROWS=${SELMAI_E2E_ROWS:-300000}
LABEL=selmai.backup.stop-during-restore
RECORD=.selmai-backup-stopped.json

step() { printf '\n== e2e: %s (%ss)\n' "$*" "$((SECONDS - T0))" >&2; }
fail() { printf 'e2e: FAILED: %s\n' "$*" >&2; exit 1; }
ok() { printf 'e2e: ok: %s\n' "$*" >&2; PASSED=$((PASSED + 1)); }
indent() { sed 's/^/    | /' >&2; }
PASSED=0

command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "the Docker engine is not reachable (is dockerd running?)"
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "e2e: installing docker-compose (v1, Debian's package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq docker-compose >/dev/null
fi

WORK=$(mktemp -d /tmp/selmai-e2e.XXXXXX)
DIR=$WORK/demo
OTHER=selmai-e2e-other-$$
COMPOSE=()

cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] && [ ${#COMPOSE[@]} -gt 0 ] && [ -f "$DIR/.env" ]; then
    echo "e2e: logs of the failed run:" >&2
    compose logs --no-color --tail=40 >&2 2>&1
  fi
  [ -f "$DIR/.env" ] && (cd "$DIR" && DOCKER_GID=${DOCKER_GID:-0} "${COMPOSE[@]:-docker-compose}" down -v --remove-orphans) >/dev/null 2>&1
  docker rm -f "$OTHER" >/dev/null 2>&1
  rm -rf "$WORK"
  printf '\ne2e: %s after %ss\n' "$([ $rc -eq 0 ] && echo passed || echo FAILED)" "$((SECONDS - T0))" >&2
  exit $rc
}
trap cleanup EXIT

# The README's form of every command: in the stack's directory, no -f
# (COMPOSE_FILE is in .env).
compose() { (cd "$DIR" && "${COMPOSE[@]}" "$@"); }
id_of() { compose ps -q "$1"; }
started_at() { docker inspect --format '{{.State.StartedAt}}' "$1"; }
running() { [ "$(docker inspect --format '{{.State.Running}}' "$1")" = true ]; }
sql() { docker exec -i "$(id_of db)" mariadb -uroot -N -B selmai "$@"; }
root_sql() { docker exec -i "$(id_of db)" mariadb -uroot -N -B "$@"; }
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
# A one-off command of the backup service; exit code in RC, output in OUT.
backup_run() {
  set +e
  OUT=$(compose run --rm -T "$@" 2>&1)
  RC=$?
  set -e
  printf '%s\n' "$OUT" | indent
}
restore() { backup_run backup restore "$@"; }
no_record() { [ ! -e "$DIR/backups/$RECORD" ]; }

step_demo() {
  step "the README's first command: scripts/demo.sh (with ${COMPOSE[*]})"
  local t0=$SECONDS out
  out=$(SELMAI_DEMO_DIR=$DIR SELMAI_DEMO_PROJECT=$PROJECT SELMAI_COMPOSE="${COMPOSE[*]}" \
    scripts/demo.sh 2>&1) || { printf '%s\n' "$out" | indent; fail "scripts/demo.sh failed"; }
  printf '%s\n' "$out" | indent
  DEMO_SECONDS=$((SECONDS - t0))
  [ "$(docker inspect --format '{{.State.Health.Status}}' "$(id_of backup)")" = healthy ] \
    || fail "the backup container is not healthy after the demo"
  grep -q '(healthy)' <<<"$out" || fail "the demo did not show the container (healthy)"
  grep -qE '^selmai_backup_[0-9]{8}_[0-9]{6}\.sql\.gz +' <<<"$out" || fail "the demo's \`list\` shows no backup"
  # The configuration (.env and backup.env are secrets, yet readable by the
  # backup's group) and the full set made at first start.
  grep -qE '^selmai_config_[0-9]{8}_[0-9]{6}\.tar\.gz +' <<<"$out" || fail "the demo's \`list\` shows no configuration archive"
  grep -qE '^selmai_full_[0-9]{8}_[0-9]{6}' <<<"$out" || fail "the demo's \`list\` shows no full backup"
  grep -qE 'restore latest' <<<"$out" && grep -q 'scripts/demo.sh down' <<<"$out" \
    || fail "the demo did not print the commands to restore and to tear down"
  ok "demo: (healthy) after the first backups in ${DEMO_SECONDS}s, \`list\` shows them"
}

step_image() {
  step "the image"
  local size cid files help
  [ "$(docker inspect --format '{{.Image}}' "$(id_of backup)")" = "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ] \
    || fail "the backup container does not run $IMAGE, the tag scripts/build-image.sh gives"
  size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
  echo "e2e: image $IMAGE is $((size / 1024 / 1024)) MiB ($size bytes)" >&2
  [ "$size" -le $((20 * 1024 * 1024)) ] || fail "image larger than 20 MiB"
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
  help=$(docker run --rm "$IMAGE" --help 2>&1) || true
  for sub in run health restore check; do
    grep -qE "^  $sub " <<<"$help" || { printf '%s\n' "$help" >&2; fail "the image has no \`$sub\` subcommand"; }
  done
  ok "image: the tag compose runs, FROM scratch, static, CA certificates, uid 10001, $((size / 1024 / 1024)) MiB"
}

step_env_whole() {
  step "backup.env reaches the tool whole, the app's .env does not"
  local env want k
  env=$(docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$(id_of backup)")
  want=$(grep -E '^[A-Z][A-Z0-9_]*=' "$DIR/backup.env" | cut -d= -f1)
  [ "$(wc -l <<<"$want")" -ge 15 ] || fail "backup.env has too few variables to prove anything"
  for k in $want; do
    grep -q "^$k=" <<<"$env" || fail "$k of backup.env did not reach the container"
  done
  ! grep -q '^DB_ROOT_PASSWORD=' <<<"$env" || fail "DB_ROOT_PASSWORD reached the backup container"
  ok "env: all $(wc -l <<<"$want") variables of backup.env reach the tool, DB_ROOT_PASSWORD does not"
}

step_backup_now() {
  step "the app's data, and the \"back up now\" recipe"
  sql <<SQL
CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total DECIMAL(10,2),
  FOREIGN KEY (customer) REFERENCES customers(id));
INSERT INTO orders VALUES (1, 1, 9.99), (2, 2, 120.00);
-- Enough rows for the restore to outlast a few health checks (below).
CREATE TABLE events (id INT PRIMARY KEY, payload VARCHAR(200));
INSERT INTO events SELECT seq, CONCAT(MD5(seq), SHA1(seq), MD5(seq * 7)) FROM seq_1_to_$EVENT_ROWS;
SQL
  BEFORE=$(fingerprint)
  set +e
  local file
  file=$(compose run --rm -T backup backup 2>"$WORK/backup.err")
  RC=$?
  set -e
  indent <"$WORK/backup.err"
  [ "$RC" -eq 0 ] || fail "backup exited $RC"
  [[ "$file" =~ ^/backups/selmai_backup_[0-9]{8}_[0-9]{6}\.sql\.gz$ ]] || fail "backup printed '$file', not the file it wrote"
  [ -s "$DIR/backups/${file#/backups/}" ] || fail "$file is not in ./backups"
  ok "backup now: $file"
}

step_restore_latest() {
  step "restore latest while the app is stopped"
  # A restore replaces the tables in the backup (it does not drop others).
  sql -e "DELETE FROM orders; DELETE FROM customers WHERE id = 3; UPDATE customers SET note = 'changed'"
  [ "$(fingerprint)" != "$BEFORE" ] || fail "the change did not change the fingerprint"
  APP=$(id_of backend); NGINX=$(id_of nginx); DB=$(id_of db)
  local app0 nginx0 db0 other0 t0 t1 checker
  app0=$(started_at "$APP"); nginx0=$(started_at "$NGINX"); db0=$(started_at "$DB"); other0=$(started_at "$OTHER")
  # The container's health check, twice a second while the restore runs:
  # it sees the record of stopped containers and must leave it alone (the
  # restore holds the BACKUP_DIR lock), so the app is started by the
  # restore at its end, not by a health check in the middle.
  local daemon
  daemon=$(id_of backup)
  (while :; do docker exec "$daemon" /selmai-backup health >>"$WORK/health.log" 2>&1; sleep 0.5; done) &
  checker=$!
  t0=$(date +%s.%N)
  restore latest --yes
  t1=$(date +%s.%N)
  kill "$checker"; wait "$checker" 2>/dev/null || true
  [ "$RC" -eq 0 ] || fail "restore latest exited $RC"
  python3 - "$t0" "$t1" "$(started_at "$APP")" <<'PY' || fail "the app was started again before the restore ended"
import sys, datetime
t0, t1, started = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
whole, _, frac = started.rstrip("Z").partition(".")
s = datetime.datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))
print(f"e2e: restore took {t1 - t0:.1f}s; the app started again {t1 - s:.1f}s before it returned", file=sys.stderr)
sys.exit(0 if t1 - s < 3.0 else 1)
PY
  [ -s "$WORK/health.log" ] || fail "no health check ran during the restore"
  ! grep -q "interrupted" "$WORK/health.log" || fail "a health check restarted the app during the restore"
  grep -q "stopping ${PROJECT}[_-]backend[_-]1" <<<"$OUT" || fail "the restore did not say it stopped the backend"
  grep -q "started ${PROJECT}[_-]backend[_-]1 .* again" <<<"$OUT" || fail "the restore did not say it started the backend again"
  [ "$(grep -c '^stopping ' <<<"$OUT")" -eq 1 ] || fail "the restore stopped more than the backend"
  running "$APP" || fail "the backend is not running after the restore"
  [ "$(started_at "$APP")" != "$app0" ] || fail "the backend was not restarted (StartedAt unchanged)"
  { [ "$(started_at "$NGINX")" = "$nginx0" ] && running "$NGINX"; } || fail "nginx (label false) was touched"
  [ "$(started_at "$DB")" = "$db0" ] || fail "db was touched"
  { [ "$(started_at "$OTHER")" = "$other0" ] && running "$OTHER"; } || fail "another project's container was touched"
  [ "$(fingerprint)" = "$BEFORE" ] || fail "the restored data differ: $(fingerprint) vs $BEFORE"
  no_record || fail "the record of stopped containers was left"
  ok "restore latest: backend stopped and started again, data restored, nothing else touched"
}

step_corrupt() {
  step "a corrupt backup exits 5 and touches nothing"
  local latest mid app0
  latest=$(cd "$DIR/backups" && ls selmai_backup_*.sql.gz | sort | tail -1)
  # -p: backups are the container user's and 0600, and so must the copies be.
  cp -p "$DIR/backups/$latest" "$DIR/backups/selmai_backup_20000101_000000.sql.gz"
  cp -p "$DIR/backups/$latest.manifest.json" "$DIR/backups/selmai_backup_20000101_000000.sql.gz.manifest.json"
  python3 - "$DIR/backups/selmai_backup_20000101_000000.sql.gz" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(b)
PY
  sql -e "INSERT INTO customers (name) VALUES ('after the backup')"
  mid=$(fingerprint); app0=$(started_at "$APP")
  restore selmai_backup_20000101_000000.sql.gz --yes
  [ "$RC" -eq 5 ] || fail "restore of a corrupt file exited $RC, not 5"
  { [ "$(started_at "$APP")" = "$app0" ] && running "$APP"; } || fail "the app was stopped for a corrupt file"
  [ "$(fingerprint)" = "$mid" ] || fail "the database changed after a rejected restore"
  rm "$DIR/backups/selmai_backup_20000101_000000.sql.gz"*
  ok "corrupt backup: exit 5, app running, database untouched"
}

step_failed_midway() {
  step "a restore that fails midway is rolled back and starts the app again"
  local app0 before
  printf -- '-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\nCREATE TABLE midway (i INT);\nINSERT INTO midway VALUES (1);\nTHIS IS NOT SQL;\n' |
    gzip >"$DIR/backups/midway.sql.gz"
  app0=$(started_at "$APP")
  before=$(fingerprint)
  restore /backups/midway.sql.gz --yes
  [ "$RC" -eq 1 ] || fail "a failing statement exited $RC, not 1"
  grep -q "is as it was before" <<<"$OUT" || fail "the failed restore was not rolled back"
  [ "$(fingerprint)" = "$before" ] || fail "the database differs after the roll-back"
  grep -q "stopping ${PROJECT}[_-]backend" <<<"$OUT" || fail "the app was not stopped for the restore"
  { running "$APP" && [ "$(started_at "$APP")" != "$app0" ]; } || fail "the app was not started again after a failed restore"
  no_record || fail "the record was left after a failed restore"
  ok "failed restore: rolled back, app stopped and started again"
}

step_sigterm() {
  step "docker stop during a restore starts the app again"
  # A restore of the real backup can end within the half second below (it
  # did once); this one is still running when the signal comes.
  printf -- '-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\nCREATE TABLE slow_restore (i INT);\nDO SLEEP(30);\n' | gzip >"$DIR/backups/slow.sql.gz"
  local app0 runner=${PROJECT}_restore_sigterm t0
  app0=$(started_at "$APP")
  docker rm -f "$runner" >/dev/null 2>&1 || true
  compose run -d -T --name "$runner" backup restore /backups/slow.sql.gz --yes >/dev/null 2>&1
  # The record appears when the app is stopped, just before the first statement.
  wait_for 60 "the restore stopped the app" test -e "$DIR/backups/$RECORD"
  sleep 0.5
  t0=$SECONDS
  docker stop -t 20 "$runner" >/dev/null
  RC=$(docker wait "$runner")
  docker logs "$runner" 2>&1 | indent
  docker logs "$runner" 2>&1 | grep -q "interrupted by SIGTERM" \
    || fail "the restore did not report SIGTERM (exit $RC after $((SECONDS - t0))s)"
  docker rm "$runner" >/dev/null
  { [ "$RC" -ne 0 ] && [ "$RC" -ne 137 ]; } || fail "an interrupted restore exited $RC"
  { running "$APP" && [ "$(started_at "$APP")" != "$app0" ]; } || fail "the app was not started again after SIGTERM"
  no_record || fail "the record was left after SIGTERM"
  sql -e "DROP TABLE IF EXISTS slow_restore"
  rm "$DIR/backups/slow.sql.gz" "$DIR/backups/midway.sql.gz"
  ok "SIGTERM mid-restore: app started again, exit $RC"
}

step_crash() {
  step "a crash mid-restore is repaired by the next command"
  # The daemon's health check is a command too and would win the race;
  # with it stopped, the next command is ours.
  compose stop backup >/dev/null 2>&1
  docker stop "$APP" >/dev/null
  printf '{"version":1,"project":"%s","stopped_at":"2025-01-01T00:00:00Z","containers":[{"id":"%s","name":"backend"}]}\n' \
    "$PROJECT" "$APP" >"$DIR/backups/$RECORD"
  backup_run backup list
  [ "$RC" -eq 0 ] || fail "list exited $RC"
  grep -q "interrupted" <<<"$OUT" || fail "the next command did not say it found an interrupted restore"
  running "$APP" || fail "the app was not started again after a crash"
  no_record || fail "the record was left after recovery"
  compose start backup >/dev/null 2>&1
  ok "crash recovery: app started again by the next command"
}

step_no_socket() {
  step "without the Docker socket a restore works and says so once"
  local net
  net=$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$DB")
  set +e
  OUT=$(docker run --rm --network "$net" --env-file "$DIR/backup.env" \
    -v "$DIR/backups:/backups" "$IMAGE" restore latest --yes 2>&1)
  RC=$?
  set -e
  printf '%s\n' "$OUT" | indent
  [ "$RC" -eq 0 ] || fail "restore without the socket exited $RC"
  [ "$(grep -c "cannot stop the application's containers" <<<"$OUT")" -eq 1 ] \
    || fail "the warning about the missing socket was not said exactly once"
  [ "$(fingerprint)" = "$BEFORE" ] || fail "restore without the socket did not restore"
  ok "no socket: restored (name db resolved from a scratch image), one warning"
}

step_no_label() {
  step "a restore with no labelled container warns, naming the label"
  local app0
  app0=$(started_at "$APP")
  # A project none of whose containers carries the label: the app would
  # keep writing during the restore.
  backup_run -e RESTORE_STOP_PROJECT=nolabel backup restore latest --yes
  [ "$RC" -eq 0 ] || fail "restore exited $RC"
  grep -E 'WARN' <<<"$OUT" | grep -q "$LABEL=true" \
    || fail "no warning naming $LABEL=true when no container carries it"
  [ "$(started_at "$APP")" = "$app0" ] || fail "a container of our project was stopped"
  ok "no labelled container: a warning naming $LABEL=true"
}

step_drill() {
  step "the drill's privileges: the README's GRANT, and the preflight without it"
  backup_run backup verify latest --restore-test
  [ "$RC" -eq 0 ] || fail "verify --restore-test exited $RC with the README's GRANT"
  # The README's GRANT, as the demo gave it.
  local grant='GRANT ALL PRIVILEGES ON `selmai\_drill\_%`.* TO '"'selmai'@'%'"
  grep -qF "$grant" "$REPO/README.md" || fail "the README does not give the drill's GRANT: $grant"
  root_sql -e "REVOKE ALL PRIVILEGES ON \`selmai\\_drill\\_%\`.* FROM 'selmai'@'%'"
  backup_run backup check
  grep -E '^warning: .*DRILL_SCHEDULE' <<<"$OUT" | grep -qF 'selmai\_drill\_%' \
    || fail "check did not warn that the drill lacks privileges, with the GRANT"
  backup_run backup verify latest --restore-test
  [ "$RC" -ne 0 ] || fail "verify --restore-test succeeded without the drill's privileges: the warning is wrong"
  root_sql -e "$grant"
  backup_run backup check
  ! grep -q 'DRILL_SCHEDULE' <<<"$OUT" || fail "check still warns about the drill after the GRANT"
  ok "drill: runs with the README's GRANT; without it check warns and gives it"
}

step_ownership() {
  step "./backups not writable by uid 10001"
  [ "$(stat -c %u:%g "$DIR/backups")" = 10001:10001 ] || fail "the demo did not give ./backups to uid 10001"
  compose stop backup >/dev/null 2>&1
  chown 0:0 "$DIR/backups"
  # The daemon, as `up` starts it: it must stop at once, saying why.
  backup_run backup run
  chown 10001:10001 "$DIR/backups"
  compose start backup >/dev/null 2>&1
  [ "$RC" -eq 8 ] || fail "run with an unwritable BACKUP_DIR exited $RC, not 8"
  grep -q "FATAL\|ERROR" <<<"$OUT" && grep -q 'chown 10001:10001' <<<"$OUT" \
    || fail "run did not say that BACKUP_DIR is not writable and how to fix it"
  ok "ownership: an unwritable ./backups stops the daemon with the chown to run"
}

step_typo() {
  step "a misspelt variable in backup.env stops the container"
  local line='unknown variable BACKUP_SCHEDUEL (did you mean BACKUP_SCHEDULE?)' id logs
  cp "$DIR/backup.env" "$WORK/backup.env.good"
  echo 'BACKUP_SCHEDUEL=0 3 * * *' >>"$DIR/backup.env"
  # Any command of the tool refuses it, with exit 2 ...
  backup_run backup check
  [ "$RC" -eq 2 ] || fail "check with a misspelt variable exited $RC, not 2"
  grep -qF "$line" <<<"$OUT" || fail "check did not say \"did you mean BACKUP_SCHEDULE?\""
  # ... and the service, recreated by `up` with the new file, stops at
  # start (then restarts and stops again: restart: unless-stopped).
  compose up -d backup >/dev/null 2>&1
  id=$(id_of backup)
  wait_for 60 "the container with a misspelt variable stops" \
    bash -c "[ \"\$(docker inspect --format '{{.State.Running}} {{.RestartCount}}' $id)\" != 'true 0' ]"
  logs=$(docker logs "$id" 2>&1)
  printf '%s\n' "$logs" | tail -3 | indent
  grep -qF "$line" <<<"$logs" || fail "the container did not say \"did you mean BACKUP_SCHEDULE?\""
  cp "$WORK/backup.env.good" "$DIR/backup.env"
  compose up -d backup >/dev/null 2>&1
  wait_for 60 "the backup container runs again" running "$(id_of backup)"
  ok "typo: check exits 2 and the container stops, both with \"did you mean BACKUP_SCHEDULE?\""
}

step_down() {
  step "the demo's teardown"
  local out
  out=$(SELMAI_DEMO_DIR=$DIR SELMAI_DEMO_PROJECT=$PROJECT SELMAI_COMPOSE="${COMPOSE[*]}" \
    scripts/demo.sh down 2>&1) || { printf '%s\n' "$out" | indent; fail "scripts/demo.sh down failed"; }
  [ ! -e "$DIR" ] || fail "$DIR is still there"
  [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "containers of $PROJECT are left"
  [ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "volumes of $PROJECT are left"
  ok "down: no container, volume or file of the demo left"
}

scenario() {
  step_demo
  step_image
  step_env_whole
  # Another project's labelled container must never be touched.
  docker rm -f "$OTHER" >/dev/null 2>&1 || true
  docker run -d --name "$OTHER" --label com.docker.compose.project=someoneelse \
    --label "$LABEL=true" "$APP_IMAGE" >/dev/null
  step_backup_now
  step_restore_latest
  step_corrupt
  step_failed_midway
  step_sigterm
  step_crash
  step_no_socket
  step_no_label
  step_drill
  step_ownership
  step_typo
  step_down
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
echo "e2e: the demo took ${DEMO_SECONDS}s" >&2
echo "e2e: $PASSED passed, 0 failed"
