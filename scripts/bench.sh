#!/usr/bin/env bash
# Benchmark: selmai-backup next to mariadb-dump | gzip -6, mariadb-dump |
# zstd -3, mydumper/myloader and gunzip | mariadb, on the same machine and
# server in one run. Prints a Markdown table: wall time, MB/s of SQL, output
# size, peak RSS.
#
#   scripts/bench.sh                 # 4 tables, 2,000,000 rows (~300 MB of SQL)
#   scripts/bench.sh --rows 100000   # a quick run (CI uses this to check the script)
#
# Uses the test server of scripts/services.sh. Results are figures, never
# assertions: docs/BENCHMARKS.md records them with date and machine. The
# only checks are that every restore gives back the row counts it should.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ROWS=2000000
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    *) echo "usage: $0 [--rows N]" >&2; exit 2 ;;
  esac
done
PER_TABLE=$((ROWS / 4))

need=()
command -v zstd >/dev/null || need+=(zstd)
command -v mydumper >/dev/null || need+=(mydumper)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

bench_services

bench_binary

work=$(mktemp -d /var/tmp/selmai-bench.XXXXXX)
trap 'rm -rf "$work"; mariadb "${conn[@]}" -e "DROP DATABASE IF EXISTS bench; DROP DATABASE IF EXISTS bench_restore" >/dev/null 2>&1 || true' EXIT

echo "building the data set: 4 tables, $ROWS rows" >&2
mariadb "${conn[@]}" <<SQL
DROP DATABASE IF EXISTS bench;
CREATE DATABASE bench CHARACTER SET utf8mb4;
USE bench;
$(bench_tables_sql "$PER_TABLE")
SQL
expected=$(mariadb "${conn[@]}" -N -e "SELECT SUM(TABLE_ROWS) >= 0, (SELECT COUNT(*) FROM bench.orders)+(SELECT COUNT(*) FROM bench.members)+(SELECT COUNT(*) FROM bench.messages)+(SELECT COUNT(*) FROM bench.photos) FROM information_schema.TABLES WHERE TABLE_SCHEMA='bench'" | cut -f2)

# The size of the SQL, to express every rate in MB of SQL per second.
sql_bytes=$(mariadb-dump "${conn[@]}" --single-transaction --quick bench | wc -c)
sql_mb=$(awk -v b="$sql_bytes" 'BEGIN { printf "%.1f", b / 1e6 }')

rows=()
# measure LABEL OUTPUT_FILE_OR_DIR COMMAND...: runs COMMAND under GNU time.
measure() {
  local label=$1 output=$2; shift 2
  local t="$work/time"
  /usr/bin/time -f '%e %M' -o "$t" "$@" >/dev/null 2>"$work/err" || {
    echo "bench: $label failed:" >&2; tail -5 "$work/err" >&2; exit 1; }
  local secs rss size
  read -r secs rss < "$t"
  size=$(du -sb "$output" 2>/dev/null | cut -f1); size=${size:-0}
  rows+=("$(L="$label" awk -v s="$secs" -v r="$rss" -v z="$size" -v m="$sql_mb" \
    'BEGIN { printf "| %s | %.2f | %.0f | %s | %.1f |", ENVIRON["L"], s, (s > 0 ? m / s : 0), (z > 0 ? sprintf("%.1f", z / 1e6) : "-"), r / 1024 }')")
  echo "bench: $label: ${secs}s" >&2
}

check_restore() {
  local got
  got=$(mariadb "${conn[@]}" -N -e "SELECT (SELECT COUNT(*) FROM bench_restore.orders)+(SELECT COUNT(*) FROM bench_restore.members)+(SELECT COUNT(*) FROM bench_restore.messages)+(SELECT COUNT(*) FROM bench_restore.photos)")
  [ "$got" = "$expected" ] || { echo "bench: $1 restored $got rows, expected $expected" >&2; exit 1; }
}
fresh_target() { mariadb "${conn[@]}" -e "DROP DATABASE IF EXISTS bench_restore; CREATE DATABASE bench_restore CHARACTER SET utf8mb4"; }

dump="mariadb-dump ${conn[*]} --single-transaction --quick bench"
measure "mariadb-dump --single-transaction --quick (no compression)" "$work/plain.sql" bash -c "$dump > $work/plain.sql"
measure "mariadb-dump \| gzip -6" "$work/ref.sql.gz" bash -c "$dump | gzip -6 > $work/ref.sql.gz"
measure "mariadb-dump \| zstd -3" "$work/ref.sql.zst" bash -c "$dump | zstd -q -3 > $work/ref.sql.zst"
measure "mydumper (4 threads, compressed)" "$work/mydumper" \
  mydumper -h "$TEST_DB_HOST" -P "$TEST_DB_PORT" -u "$TEST_DB_USER" -p "$TEST_DB_PASSWORD" -B bench -o "$work/mydumper" -t 4 -c

# ours DIR [VAR=VALUE ...]: the environment for one of our runs on BACKUP_DIR=DIR.
ours() {
  local dir=$1; shift
  mkdir -p "$dir"
  echo env -i PATH="$PATH" DB_HOST="$TEST_DB_HOST" DB_PORT="$TEST_DB_PORT" DB_USER="$TEST_DB_USER" \
    DB_PASSWORD="$TEST_DB_PASSWORD" DB_NAME=bench BACKUP_DIR="$dir" LOG_LEVEL=warn "$@"
}
measure "selmai-backup backup (gzip, default level 1)" "$work/gz" $(ours "$work/gz") "$BIN" backup
measure "selmai-backup backup (gzip level 1, encrypted)" "$work/enc" $(ours "$work/enc" BACKUP_PASSPHRASE=bench) "$BIN" backup
measure "selmai-backup backup (zstd 3)" "$work/zst" $(ours "$work/zst" BACKUP_COMPRESSION=zstd) "$BIN" backup

# Off-site to the SFTP server of scripts/services.sh (loopback, so the
# network is not what limits): the runbook's way, a dump to a file and then
# its copy, next to ours, one pass to the volume and the server.
remote="$TEST_SFTP_HOME/bench-$$"
mkdir -p "$remote" && chown "$TEST_SFTP_USER" "$remote"
trap 'rm -rf "$work" "$remote"; mariadb "${conn[@]}" -e "DROP DATABASE IF EXISTS bench; DROP DATABASE IF EXISTS bench_restore" >/dev/null 2>&1 || true' EXIT
sftp_put() {
  echo "put -f $1 $remote/" | sftp -b - -q -i "$TEST_SFTP_KEY_FILE" -P "$TEST_SFTP_PORT" \
    -o UserKnownHostsFile="$TEST_SFTP_KNOWN_HOSTS" -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes \
    -o GlobalKnownHostsFile=/dev/null "$TEST_SFTP_USER@$TEST_SFTP_HOST"
}
export -f sftp_put
export remote
measure "mariadb-dump \| gzip -6, then sftp put -f" "$work/runbook.sql.gz" \
  bash -c "$dump | gzip -6 > $work/runbook.sql.gz && sftp_put $work/runbook.sql.gz"
measure "selmai-backup backup to the volume and the SFTP server (gzip 1, one pass)" "$work/sftp" \
  $(ours "$work/sftp" SFTP_HOST="$TEST_SFTP_HOST" SFTP_PORT="$TEST_SFTP_PORT" SFTP_USER="$TEST_SFTP_USER" \
    SFTP_PATH="$remote/ours" SFTP_KEY_FILE="$TEST_SFTP_KEY_FILE" SFTP_KNOWN_HOSTS="$TEST_SFTP_KNOWN_HOSTS") "$BIN" backup
cmp "$work/sftp/$(cd "$work/sftp" && ls selmai_backup_*.sql.gz)" "$remote/ours/$(cd "$remote/ours" && ls selmai_backup_*.sql.gz)" ||
  { echo "bench: the SFTP server's copy differs from the volume's" >&2; exit 1; }

fresh_target
measure "gunzip -c \| mariadb (restore of mariadb-dump's file)" "$work/ref.sql.gz" bash -c "gunzip -c $work/ref.sql.gz | mariadb ${conn[*]} bench_restore"
check_restore "gunzip | mariadb"
fresh_target
measure "myloader (4 threads)" "$work/mydumper" \
  myloader -h "$TEST_DB_HOST" -P "$TEST_DB_PORT" -u "$TEST_DB_USER" -p "$TEST_DB_PASSWORD" -d "$work/mydumper" -B bench_restore -t 4 -o
check_restore "myloader"
fresh_target
measure "selmai-backup restore (our .sql.gz)" "$work/gz" $(ours "$work/gz") "$BIN" restore latest --into bench_restore --yes
check_restore "selmai-backup restore"
fresh_target
cp "$work/ref.sql.gz" "$work/gz-legacy.sql.gz"
mkdir -p "$work/legacy" && mv "$work/gz-legacy.sql.gz" "$work/legacy/selmai_backup_20250101_000000.sql.gz"
measure "selmai-backup restore (mariadb-dump's .sql.gz)" "$work/legacy" $(ours "$work/legacy") "$BIN" restore latest --into bench_restore --yes
check_restore "selmai-backup restore of a mariadb-dump file"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, MariaDB $(mariadb "${conn[@]}" -N -e 'SELECT VERSION()'), $ROWS rows, $sql_mb MB of SQL."
echo
echo "| what | seconds | MB/s of SQL | output MB | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
