#!/usr/bin/env bash
# Benchmark: point-in-time replay of the binlog archive, natively
# (`selmai-backup restore latest --to end`) next to `mariadb-binlog |
# mariadb` over the same archived segments, on the same machine and server
# in one run. Prints a Markdown table: wall time, transactions per second,
# peak RSS.
#
#   scripts/bench_pitr.sh                      # 200,000 small transactions and 20 large ones
#   scripts/bench_pitr.sh --transactions 5000  # a quick run
#   scripts/bench_pitr.sh --whole-recovery     # the whole recovery: a 1 GB dump plus that day
#
# --whole-recovery [--data-rows N] measures the recovery time of a lost
# database in one run: the dump also holds N generated rows in four tables
# (12,000,000 by default, 1.12 GB of SQL, the data set of scripts/bench.sh;
# generated with sql_log_bin=0, so only the workload is in the binlog),
# then the same workload is archived, and `restore latest --to end` into a
# new database is timed end to end (fetch and verify the dump, plan and
# verify the segments, restore, replay), next to the dump's restore alone
# and the plan alone. mariadb-binlog is not run in this mode (the default
# mode compares the replays).
#
# Uses the test server of scripts/services.sh (--log-bin, ROW). The dump is
# small (an empty table); what is timed is the dump's restore plus the
# replay, and the dump's restore alone, so the replay's own time is the
# difference. mariadb-binlog reads the decompressed segments (preparing
# them is not timed); selmai-backup reads the stored (compressed) segments
# twice: once to verify every one before touching the database, once to
# replay. Results are figures, never assertions: docs/BENCHMARKS.md records
# them. The only check is that both replays give the same tables as the source.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

TX=200000
LARGE=20
WHOLE=0
DATA_ROWS=12000000
while [ $# -gt 0 ]; do
  case "$1" in
    --transactions) TX=$2; shift 2 ;;
    --large) LARGE=$2; shift 2 ;;
    --whole-recovery) WHOLE=1; shift ;;
    --data-rows) DATA_ROWS=$2; shift 2 ;;
    *) echo "usage: $0 [--transactions N] [--large N] [--whole-recovery [--data-rows N]]" >&2; exit 2 ;;
  esac
done

[ -x /usr/bin/time ] || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }

bench_services

bench_binary

work=$(mktemp -d /var/tmp/selmai-bench-pitr.XXXXXX)
daemon=
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$work"
  mariadb "${conn[@]}" -e "DROP DATABASE IF EXISTS bench_pitr; DROP DATABASE IF EXISTS bench_native; DROP DATABASE IF EXISTS bench_dumponly; DROP DATABASE IF EXISTS bench_mb; DROP DATABASE IF EXISTS bench_whole" >/dev/null 2>&1 || true
}
trap cleanup EXIT

export DB_HOST=$TEST_DB_HOST DB_PORT=$TEST_DB_PORT DB_USER=$TEST_DB_USER DB_PASSWORD=$TEST_DB_PASSWORD
export DB_NAME=bench_pitr BACKUP_DIR=$work/backups
export BINLOG_ARCHIVE=on BINLOG_UPLOAD_SECONDS=1 BINLOG_SERVER_ID=$((4100 + $$ % 800))
export BACKUP_SCHEDULE=off CONFIG_SCHEDULE=off UPLOADS_SCHEDULE=off FULL_SCHEDULE=off LOG_LEVEL=warn
mkdir -p "$BACKUP_DIR"

mariadb "${conn[@]}" <<SQL
DROP DATABASE IF EXISTS bench_pitr;
CREATE DATABASE bench_pitr CHARACTER SET utf8mb4;
USE bench_pitr;
CREATE TABLE events (id INT PRIMARY KEY AUTO_INCREMENT, member INT NOT NULL, kind VARCHAR(20), amount DECIMAL(10,2), at DATETIME(6), KEY (member)) ENGINE=InnoDB;
CREATE TABLE docs (id INT PRIMARY KEY, body MEDIUMBLOB) ENGINE=InnoDB;
SQL
tables="events, docs"
if [ "$WHOLE" = 1 ]; then
  per=$((DATA_ROWS / 4))
  echo "building the data set: 4 tables, $DATA_ROWS rows" >&2
  mariadb "${conn[@]}" <<SQL
SET SESSION sql_log_bin = 0;
USE bench_pitr;
$(bench_tables_sql "$per")
SQL
  tables="events, docs, orders, members, messages, photos"
fi
dump_started=$(date +%s.%N)
"$BIN" backup --no-prune >/dev/null
dump_secs=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$dump_started")
"$BIN" run >"$work/daemon.log" 2>&1 &
daemon=$!
sleep 3

echo "workload: $TX small transactions and $LARGE large ones" >&2
python3 - "$TX" "$LARGE" >"$work/workload.sql" <<'PY'
import sys
tx, large = int(sys.argv[1]), int(sys.argv[2])
every = max(1, tx // max(1, large))
print("USE bench_pitr;")
done = 0
for i in range(tx):
    m = i % 5000
    if i % 10 == 9:
        print(f"UPDATE events SET amount = amount + 1 WHERE id = {i - 5};")
    elif i % 10 == 8:
        print(f"BEGIN; INSERT INTO events (member, kind, amount, at) VALUES ({m}, 'order', {i % 997}.25, NOW(6)); UPDATE events SET kind = 'paid' WHERE id = {max(1, i - 100)}; COMMIT;")
    else:
        print(f"INSERT INTO events (member, kind, amount, at) VALUES ({m}, 'visit', NULL, NOW(6));")
    if i % every == every - 1 and done < large:
        done += 1
        print(f"REPLACE INTO docs VALUES ({done % 5}, REPEAT(CHAR(65 + {done} % 26), 1048576));")
        print(f"UPDATE events SET amount = IFNULL(amount, 0) + 0.5 WHERE member = {done};")
PY
mariadb "${conn[@]}" --max-allowed-packet=1G <"$work/workload.sql"

# Wait until the archive has stored everything the server has.
target=$(mariadb "${conn[@]}" -N -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
for _ in $(seq 1 600); do
  got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])).get("uploaded") or {}; print(s.get("file",""), s.get("position",0))' "$BACKUP_DIR/.binlog/status.json" 2>/dev/null || true)
  read -r tf tp <<<"$target"; read -r gf gp <<<"${got:-x 0}"
  if [ "$gf" = "$tf" ] && [ "$gp" -ge "$tp" ]; then break; fi
  sleep 1
done
kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=

timed() { # label, command...: prints "label;seconds;rss MiB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs kb <"$work/time"
  echo "$label;$secs;$((kb / 1024))"
}

same_as_source() { # database: the source's CHECKSUM TABLE, or exit
  local want got
  want=$(mariadb "${conn[@]}" -N -e "USE bench_pitr; CHECKSUM TABLE $tables" | awk '{print $2}')
  got=$(mariadb "${conn[@]}" -N -e "USE $1; CHECKSUM TABLE $tables" | awk '{print $2}')
  [ "$want" = "$got" ] || { echo "$1 differs from bench_pitr" >&2; exit 1; }
}

if [ "$WHOLE" = 1 ]; then
  dump_file=$(ls -t "$BACKUP_DIR"/selmai_backup_*.sql.gz* 2>/dev/null | grep -v manifest | head -1)
  dump_mb=$(du -m "$dump_file" | awk '{print $1}')
  sql_mb=$(python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        if "sql_bytes" in v:
            return v["sql_bytes"]
        return next((f for f in map(find, v.values()) if f), 0)
    return 0
print(f"{find(json.load(open(sys.argv[1]))) / 1e9:.2f}")' "${dump_file}.manifest.json")
  r_dump=$(timed "restore of the dump alone" "$BIN" restore latest --into bench_dumponly --yes --no-safety-snapshot)
  mariadb "${conn[@]}" -e "DROP DATABASE bench_dumponly"
  r_plan=$(timed "plan alone (--dry-run: read and verify the segments)" "$BIN" restore latest --to end --into bench_whole --dry-run)
  planned=$(grep -o 'transactions: [0-9]*' "$work/out" | head -1 | awk '{print $2}')
  r_whole=$(timed "**whole recovery: restore latest --to end into a new database**" "$BIN" restore latest --to end --into bench_whole --yes --no-safety-snapshot)
  same_as_source bench_whole
  seg_mb=$(python3 -c 'import glob,json,os,sys; print(sum(json.load(open(p)).get("raw_size", 0) for p in glob.glob(os.path.join(sys.argv[1], "*binlog*.manifest.json"))) // 1000000)' "$BACKUP_DIR")
  echo
  echo "Whole recovery: a dump of $DATA_ROWS generated rows plus two small tables (${sql_mb} GB of SQL, ${dump_mb} MB on the volume, backup ${dump_secs} s), then $TX small transactions and $LARGE large ones archived; ${planned:-?} transactions replayed; ${seg_mb} MB of binlog"
  echo
  echo "| what | seconds | peak RSS MiB |"
  echo "|---|---:|---:|"
  for r in "$r_dump" "$r_plan" "$r_whole"; do
    IFS=';' read -r label secs rss <<<"$r"
    echo "| $label | $secs | $rss |"
  done
  IFS=';' read -r _ s_dump _ <<<"$r_dump"
  IFS=';' read -r _ s_whole _ <<<"$r_whole"
  python3 -c "import sys; d,w=map(float,sys.argv[1:]); print(f'| replay and the rest (difference) | {w-d:.2f} | |')" "$s_dump" "$s_whole"
  exit 0
fi

r_dump=$(timed "selmai-backup restore of the dump alone" "$BIN" restore latest --into bench_dumponly --yes --no-safety-snapshot)
r_plan=$(timed "selmai-backup restore latest --to end --dry-run (read and verify the segments, plan)" "$BIN" restore latest --to end --into bench_native --dry-run)
r_native=$(timed "selmai-backup restore latest --to end (dump + native replay)" "$BIN" restore latest --to end --into bench_native --yes --no-safety-snapshot)
planned=$(grep -o 'transactions: [0-9]*' "$work/out" | head -1 | awk '{print $2}')

# mariadb-binlog over the same segments: the dump first, then the replay.
"$BIN" restore latest --into bench_mb --yes --no-safety-snapshot >/dev/null 2>&1
mkdir -p "$work/plain"
python3 - "$BACKUP_DIR" "$work/plain" >"$work/files" <<'PY'
import glob, gzip, json, os, sys
d, out = sys.argv[1], sys.argv[2]
manifests = [json.load(open(p)) for p in glob.glob(os.path.join(d, "*.manifest.json"))]
dump = max((m for m in manifests if m.get("snapshot")), key=lambda m: m["started_at"])
snap = dump["snapshot"]
def idx(f): return int(f.rsplit(".", 1)[1])
segs = sorted((m for m in manifests if m.get("kind") == "binlog"), key=lambda m: (idx(m["binlog_file"]), m["start_position"]))
segs = [m for m in segs if (idx(m["binlog_file"]), m["end_position"]) > (idx(snap["file"]), snap["position"])]
first = segs[0]
offset = first["header_len"] + max(0, snap["position"] - first["start_position"]) if first["binlog_file"] == snap["file"] else 4
paths = []
for i, m in enumerate(segs):
    p = os.path.join(out, f"{i:05}.bin")
    with gzip.open(os.path.join(d, m["file"])) as src, open(p, "wb") as dst:
        dst.write(src.read())
    paths.append(p)
print(offset)
print("\n".join(paths))
PY
offset=$(head -1 "$work/files")
mapfile -t files < <(tail -n +2 "$work/files")
cat >"$work/mb.sh" <<EOF
set -o pipefail
mariadb-binlog --no-defaults --start-position=$offset --database=bench_pitr --rewrite-db='bench_pitr->bench_mb' ${files[*]} | mariadb ${conn[*]} --max-allowed-packet=1G
EOF
r_mb=$(timed "mariadb-binlog \\| mariadb (replay only)" bash "$work/mb.sh")

for db in bench_native bench_mb; do
  want=$(mariadb "${conn[@]}" -N -e "CHECKSUM TABLE bench_pitr.events, bench_pitr.docs" | awk '{print $2}')
  got=$(mariadb "${conn[@]}" -N -e "CHECKSUM TABLE $db.events, $db.docs" | awk '{print $2}')
  [ "$want" = "$got" ] || { echo "$db differs from bench_pitr" >&2; exit 1; }
done

seg_mb=$(du -sm "$work/plain" | awk '{print $1}')
echo
echo "$TX small transactions, $LARGE large ones; ${planned:-?} transactions replayed; $seg_mb MB of binlog"
echo
echo "| what | seconds | peak RSS MiB |"
echo "|---|---:|---:|"
for r in "$r_dump" "$r_plan" "$r_native" "$r_mb"; do
  IFS=';' read -r label secs rss <<<"$r"
  echo "| $label | $secs | $rss |"
done
IFS=';' read -r _ s_dump _ <<<"$r_dump"
IFS=';' read -r _ s_native _ <<<"$r_native"
IFS=';' read -r _ s_mb _ <<<"$r_mb"
python3 -c "import sys; d,n,m=map(float,sys.argv[1:]); print(f'| native replay alone (difference) | {n-d:.2f} | |'); print(); print(f'native replay / mariadb-binlog: {(m)/(n-d):.2f}x as fast')" "$s_dump" "$s_native" "$s_mb"
