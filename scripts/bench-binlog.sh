#!/usr/bin/env bash
# Benchmark of the continuous binlog archive: what following the server's
# binlog costs `selmai-backup run` while the server takes a sustained write
# load. Prints a Markdown table: the archiver's CPU (% of one core, from
# /proc/PID/stat), its peak RSS (VmHWM), and its lag behind the server on
# the volume (p50, p99, max).
#
#   scripts/bench-binlog.sh                        # 1,000 transactions/s for 60 s, 16 rows of 4 MiB
#   scripts/bench-binlog.sh --seconds 3 --rate 100 --big 2   # a quick run (CI checks the script with it)
#
# The load: one connection commits small single-row transactions at the
# given rate (autocommit INSERTs, paced every 10 ms); half-way through, a
# second connection inserts the large rows one after the other. The server
# is a private MariaDB (`--log-bin --server-id=1 --binlog-format=ROW`) on
# its own port and data directory, so nothing else writes to its binlog
# (started as root, like scripts/services.sh, which installs mariadb-server).
#
# Lag: every 5 ms the size of the server's binlog file and of the archive's
# open segment in BACKUP_DIR/.binlog are read; the lag of a position is the
# time from the server's file reaching it to the archive's segment reaching
# it (written to the volume; the segment is fsynced every second on top).
# The resolution is the sampling interval, 5 ms.
#
# Results are figures, never assertions: docs/BENCHMARKS.md records them
# with date and machine. The only check is that `verify --binlog` finds
# the archive whole at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

SECONDS_OF_LOAD=60
RATE=1000
BIG=16
BIG_MIB=4
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_OF_LOAD=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --big) BIG=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--rate TRANSACTIONS_PER_SECOND] [--big ROWS_OF_4_MIB]" >&2; exit 2 ;;
  esac
done

command -v mariadb-install-db >/dev/null || { echo "bench-binlog: mariadb-server is missing (scripts/services.sh installs it)" >&2; exit 1; }

bench_binary

work=$(mktemp -d /var/tmp/selmai-bench-binlog.XXXXXX)
server_pid=
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data="$work/data"
mkdir -p "$data" "$work/backups"
chown mysql:mysql "$data" "$work"
echo "bench-binlog: starting a private MariaDB on 127.0.0.1:$port" >&2
mariadb-install-db --no-defaults --user=mysql --datadir="$data" \
  --auth-root-authentication-method=socket --skip-test-db >"$work/install.log" 2>&1 ||
  { echo "bench-binlog: mariadb-install-db failed:" >&2; cat "$work/install.log" >&2; exit 1; }
/usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$work/mariadb.sock" \
  --port="$port" --bind-address=127.0.0.1 --max-allowed-packet=64M --log-bin=binlog \
  --server-id=1 --binlog-format=ROW --innodb-buffer-pool-size=128M \
  --innodb-flush-log-at-trx-commit=2 --skip-name-resolve --log-error="$work/mariadb.err" \
  2>>"$work/mariadb.err" &
server_pid=$!
root=(mariadb --no-defaults -u root -S "$work/mariadb.sock")
for _ in $(seq 1 120); do "${root[@]}" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
"${root[@]}" <<SQL
CREATE USER 'backup'@'%' IDENTIFIED BY 'bench';
GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'backup'@'%';
CREATE DATABASE bench;
CREATE TABLE bench.small (id BIGINT PRIMARY KEY AUTO_INCREMENT, at DATETIME(6), note VARCHAR(64));
CREATE TABLE bench.big (id INT PRIMARY KEY AUTO_INCREMENT, b LONGBLOB);
SQL

env_of_ours=(env -i PATH="$PATH" DB_HOST=127.0.0.1 DB_PORT="$port" DB_USER=backup DB_PASSWORD=bench
  DB_NAME=bench BACKUP_DIR="$work/backups" LOG_LEVEL=warn BINLOG_ARCHIVE=on
  BACKUP_SCHEDULE=off CONFIG_SCHEDULE=off UPLOADS_SCHEDULE=off FULL_SCHEDULE=off DRILL_SCHEDULE=off)
# A dump first: the archive starts at its snapshot, as in production.
"${env_of_ours[@]}" "$BIN" backup >/dev/null
"${env_of_ours[@]}" "$BIN" run 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 100); do
  grep -q '"connected": true' "$work/backups/.binlog/status.json" 2>/dev/null && break
  sleep 0.1
done
grep -q '"connected": true' "$work/backups/.binlog/status.json" ||
  { echo "bench-binlog: the archive did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }

echo "bench-binlog: $RATE transactions/s for ${SECONDS_OF_LOAD}s and $BIG rows of $BIG_MIB MiB" >&2
python3 - "$work" "$daemon_pid" "$SECONDS_OF_LOAD" "$RATE" "$BIG" "$BIG_MIB" <<'PY' >"$work/figures"
import os, subprocess, sys, threading, time

work, pid, seconds, rate, big, big_mib = sys.argv[1:]
pid, seconds, rate, big, big_mib = int(pid), float(seconds), int(rate), int(big), int(big_mib)
data, seg_dir = f"{work}/data", f"{work}/backups/.binlog"
client = ["mariadb", "--no-defaults", "-u", "root", "-S", f"{work}/mariadb.sock", "bench"]
tick = os.sysconf("SC_CLK_TCK")

def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def hwm_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

def server_position():
    """(file index, size) of the server's newest binlog file."""
    with open(f"{data}/binlog.index") as f:
        name = f.read().split()[-1]
    name = os.path.basename(name)
    return int(name.rsplit(".", 1)[1]), os.stat(f"{data}/{name}").st_size

def archived_position():
    """(file index, position) the archive's open segment has reached."""
    best = None
    for n in os.listdir(seg_dir):
        if not n.endswith(".open"):
            continue
        stem = n[: -len(".open")]
        file, start = stem.rsplit("_", 1)
        start = int(start)
        try:
            with open(f"{seg_dir}/{n}", "rb") as f:
                head = f.read(17)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            continue
        header = 4 if start == 4 else 4 + int.from_bytes(head[13:17], "little")
        pos = (int(file.rsplit(".", 1)[1]), start + max(size - header, 0))
        best = pos if best is None or pos > best else best
    return best

def small_load(stop_at):
    p = subprocess.Popen(client, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    sent, t0 = 0, time.monotonic()
    while time.monotonic() < stop_at:
        due = int((time.monotonic() - t0) * rate)
        if due > sent:
            p.stdin.write("".join(f"INSERT INTO small (at, note) VALUES (NOW(6), 'transaction {i}');\n" for i in range(sent, due)))
            p.stdin.flush()
            sent = due
        time.sleep(0.01)
    p.stdin.close()
    p.wait()
    counts["small"] = sent

def big_load():
    sql = "".join(f"INSERT INTO big (b) VALUES (REPEAT('x', {big_mib} * 1048576));\n" for _ in range(big))
    subprocess.run(client, input=sql, text=True, check=True, stdout=subprocess.DEVNULL)
    counts["big"] = big

counts = {}
time.sleep(1)
cpu0, t0 = cpu_seconds(), time.monotonic()
stop_at = t0 + seconds
threads = [threading.Thread(target=small_load, args=(stop_at,))]
threads[0].start()
burst = None
server_seen = {}   # position -> first time the server had it
samples = []       # (time, server position, archived position)
while any(t.is_alive() for t in threads) or (burst is not None and burst.is_alive()):
    now = time.monotonic()
    if burst is None and now >= t0 + seconds / 2:
        burst = threading.Thread(target=big_load)
        burst.start()
    samples.append((now, server_position(), archived_position()))
    time.sleep(0.005)
load_end = time.monotonic()
# Until the archive has everything the server wrote.
final = server_position()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    a = archived_position()
    samples.append((time.monotonic(), server_position(), a))
    if a is not None and a >= final:
        break
    time.sleep(0.005)
cpu1, t1 = cpu_seconds(), time.monotonic()

# Lag: for each new server position, first time archived >= it, minus first
# time the server had it.
lags, pending = [], []
last_server = None
for t, s, a in samples:
    if s != last_server:
        pending.append((s, t))
        last_server = s
    while pending and a is not None and a >= pending[0][0]:
        lags.append(t - pending.pop(0)[1])
lags.sort()
def pct(p):
    return lags[min(len(lags) - 1, int(p / 100 * len(lags)))] * 1000 if lags else float("nan")
worst = lags[-1] * 1000 if lags else float("nan")
print(f"{(cpu1 - cpu0) / (t1 - t0) * 100:.2f} {hwm_kib() / 1024:.1f} {pct(50):.0f} {pct(99):.0f} {worst:.0f} "
      f"{len(lags)} {counts.get('small', 0) / (load_end - t0):.0f} {counts.get('big', 0)} {load_end - t0:.1f} {len(pending)}")
PY
read -r cpu rss p50 p99 max n achieved big_rows load_secs unreached <"$work/figures"
[ "$unreached" = 0 ] || { echo "bench-binlog: the archive did not reach the server's position within 60 s after the load" >&2; cat "$work/daemon.log" >&2; exit 1; }

kill "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=
"${env_of_ours[@]}" "$BIN" verify --binlog >"$work/verify" 2>&1 ||
  { echo "bench-binlog: verify --binlog failed:" >&2; cat "$work/verify" >&2; exit 1; }
segments=$(find "$work/backups" -maxdepth 1 -name '*_binlog_*.manifest.json' | wc -l)
binlog_mb=$(du -cb "$data"/binlog.0* | tail -1 | awk '{ printf "%.1f", $1 / 1e6 }')

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu_model), MariaDB $("${root[@]}" -N -e 'SELECT VERSION()'): ${load_secs}s of load at $achieved transactions/s (asked: $RATE) plus $big_rows rows of $BIG_MIB MiB, $binlog_mb MB of binlog, $segments segments stored, lag measured at $n positions."
echo
echo "| what | value |"
echo "|---|---:|"
echo "| archiver CPU, % of one core (whole process, load and catch-up) | $cpu |"
echo "| archiver peak RSS (VmHWM), MiB | $rss |"
echo "| lag to the volume, p50, ms | $p50 |"
echo "| lag to the volume, p99, ms | $p99 |"
echo "| lag to the volume, max, ms | $max |"
