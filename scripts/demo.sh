#!/usr/bin/env bash
# The README's first command: selmai-backup working in a SELMai-shaped
# stack, on a machine with a Docker engine and no registry access.
#
#   scripts/demo.sh          # set up and start the demo in ./demo, print the first backup
#   scripts/demo.sh down     # stop it and delete ./demo (its database and backups)
#
# It does the README's set-up steps, in the README's order, in ./demo:
#   1. builds the image selmai-backup:latest (scripts/build-image.sh), and
#      the demo's MariaDB and app images from a local Debian image;
#   2. puts the stack's compose file (examples/demo), docker-compose.backup.yml,
#      .env and backup.env (from examples/selmai) side by side;
#   3. makes ./backups writable for uid 10001, the image's user;
#   4. writes DOCKER_GID (the Docker socket's group) and COMPOSE_FILE in .env;
#   5. starts the database and the app, and gives the database user the
#      restore drill's privileges (the README's GRANT);
#   6. starts the backup service, waits until it reports (healthy), and
#      prints the first backup, `list`, and the commands to restore and to
#      tear it all down.
# Needs root (for the chown of step 3) or sudo, and docker compose v2 or
# docker-compose v1. SELMAI_DEMO_DIR, SELMAI_DEMO_PROJECT and
# SELMAI_COMPOSE ("docker-compose" or "docker compose") choose another
# directory, compose project or compose command (the e2e test uses them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
DIR=${SELMAI_DEMO_DIR:-$REPO/demo}
PROJECT=${SELMAI_DEMO_PROJECT:-selmaidemo}
T0=$SECONDS

say() { printf '\n== demo: %s\n' "$*" >&2; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }
# Shows a command the way the README writes it, then runs it in $DIR.
run() { printf '   $ %s\n' "$*" >&2; (cd "$DIR" && eval "$*"); }

if [ -n "${SELMAI_COMPOSE:-}" ]; then
  read -r -a COMPOSE <<<"$SELMAI_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  command -v docker-compose >/dev/null 2>&1 \
    || fail "neither \`docker compose\` (v2) nor docker-compose (v1) is installed: install one (Debian: apt-get install docker-compose)"
  COMPOSE=(docker-compose)
fi
# The README says `docker compose`; this machine may have the v1 command.
dc() { (cd "$DIR" && "${COMPOSE[@]}" "$@"); }
DC=${COMPOSE[*]}

SUDO=
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo "; fi

down() {
  if [ -f "$DIR/.env" ]; then
    printf '   $ %s\n' "$DC down -v --remove-orphans" >&2
    # Also when a failed set-up left .env without DOCKER_GID (the group
    # does not matter to `down`).
    (cd "$DIR" && DOCKER_GID=${DOCKER_GID:-0} "${COMPOSE[@]}" down -v --remove-orphans)
  fi
  ${SUDO}rm -rf "$DIR"
}

case "${1:-up}" in
  down)
    say "stopping the demo and deleting $DIR"
    down
    echo "demo: removed" >&2
    exit 0
    ;;
  up) ;;
  *) fail "usage: scripts/demo.sh [up|down]" ;;
esac

command -v docker >/dev/null 2>&1 || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "the Docker engine is not reachable: start dockerd (and run as root or as a member of the docker group)"
if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
  fail "run as root: ./backups must be given to uid 10001 (chown), and sudo is not installed"
fi
if [ -e "$DIR" ]; then
  say "a previous demo is in $DIR: removing it first"
  down
fi

say "1. the images (selmai-backup:latest; the demo's database and app)"
printf '   $ %s\n' "scripts/build-image.sh" >&2
scripts/build-image.sh >/dev/null
BASE=$(scripts/debian-image.sh)
for part in mariadb:bookworm app:latest; do
  out=$(docker build -q --build-arg "BASE=$BASE" -t "selmai-demo/$part" "examples/demo/${part%%:*}" 2>&1) \
    || { printf '%s\n' "$out" >&2; fail "docker build of selmai-demo/$part failed"; }
done

say "2. the compose files, .env and backup.env side by side in $DIR"
mkdir -p "$DIR/nginx"
echo "server {}" >"$DIR/nginx/default.conf"
cp examples/demo/docker-compose.prod.yml docker-compose.backup.yml "$DIR/"
secret() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
APP_PASSWORD=$(secret)
sed -e "s/^DB_PASSWORD=.*/DB_PASSWORD=$APP_PASSWORD/" \
    -e "s/^DB_ROOT_PASSWORD=.*/DB_ROOT_PASSWORD=$(secret)/" \
    examples/selmai/.env.example >"$DIR/.env"
echo "COMPOSE_PROJECT_NAME=$PROJECT" >>"$DIR/.env"
sed -e "s/^DB_PASSWORD=.*/DB_PASSWORD=$APP_PASSWORD/" examples/selmai/backup.env.example >"$DIR/backup.env"
printf '   (.env and backup.env from examples/selmai, with new passwords)\n' >&2
# Secrets: readable by root and by the backup's group (the configuration
# archive reads them from /config), not by other users.
run "${SUDO}chgrp 10001 .env backup.env && chmod 640 .env backup.env"

say "3. the backups directory, owned by uid 10001 (the image's user)"
run "mkdir -p backups && ${SUDO}chown 10001:10001 backups"

say "4. the Docker socket's group and both compose files in .env"
run 'echo "DOCKER_GID=$(stat -c %g /var/run/docker.sock)" >> .env'
grep -q '^COMPOSE_FILE=docker-compose.prod.yml:docker-compose.backup.yml$' "$DIR/.env" \
  || fail "examples/selmai/.env.example lost its COMPOSE_FILE line"

say "5. the database and the app; the restore drill's privileges"
run "$DC up -d db backend nginx"
DB=$(dc ps -q db)
until=$((SECONDS + 180))
until [ "$(docker inspect --format '{{.State.Health.Status}}' "$DB")" = healthy ]; do
  [ $SECONDS -lt $until ] || { dc logs --tail=30 db >&2; fail "MariaDB did not turn healthy within 180 s"; }
  sleep 1
done
# What the app would have written: a few rows for the first backup.
dc exec -T db mariadb -uroot selmai <<'SQL'
CREATE TABLE IF NOT EXISTS customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, note TEXT) CHARSET utf8mb4;
INSERT INTO customers (name, note) VALUES ('Ada', 'first 🚀'), ('Grace', NULL), ('Linus', '');
SQL
run "$DC exec -T db sh -c 'exec mariadb -uroot -p\"\$MARIADB_ROOT_PASSWORD\"' <<'SQL'
GRANT ALL PRIVILEGES ON \`selmai\\_drill\\_%\`.* TO 'selmai'@'%';
SQL"

say "6. the backup service, until it reports (healthy) (its health check runs every minute)"
run "$DC up -d"
BACKUP=$(dc ps -q backup)
until=$((SECONDS + 240))
last=
while :; do
  status=$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$BACKUP")
  [ "$status" = "$last" ] || printf '   backup: %s (%ss)\n' "$status" "$((SECONDS - T0))" >&2
  last=$status
  case "$status" in
    "running healthy") break ;;
    running*) ;;
    *) dc logs --tail=40 backup >&2; fail "the backup container is $status (its log is above)" ;;
  esac
  [ $SECONDS -lt $until ] || { dc logs --tail=40 backup >&2; fail "the backup container did not turn healthy within 240 s"; }
  sleep 2
done
run "$DC ps"

say "the first backup"
run "ls -l backups"
run "$DC run --rm backup list"

cat >&2 <<EOF

demo: selmai-backup is running in $DIR ($((SECONDS - T0)) s). Try, in that directory:
   cd $DIR
   $DC run --rm backup backup                   # back up now
   $DC run --rm backup restore latest --yes     # restore: the backend is stopped meanwhile
   $DC run --rm backup verify latest --restore-test
   $DC logs backup
Tear it all down (containers, volumes, $DIR):
   scripts/demo.sh down
EOF
