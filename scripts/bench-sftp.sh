#!/usr/bin/env bash
# Benchmark of the SFTP target: a backup-sized file uploaded to and
# downloaded from the loopback OpenSSH server started by
# scripts/services.sh, by selmai-backup's SFTP target and, in the same run,
# by OpenSSH's `sftp` (`put -f`, `put`, `get`) on the same file. Prints a
# Markdown table: MB/s of each, the ratios, and the peak RSS of our
# transfers.
#
#   scripts/bench-sftp.sh                  # 500 MB, one run
#   scripts/bench-sftp.sh --runs 3         # three runs, a column each
#   scripts/bench-sftp.sh --mb 20          # a quick run
#   scripts/bench-sftp.sh --concurrency 32 # SFTP_CONCURRENCY for our transfers (default 16)
#   scripts/bench-sftp.sh --delay-ms 10    # 10 ms each way (a 20 ms round trip) through a delaying proxy
#   scripts/bench-sftp.sh --mb 20 --debug  # the tests' dev build, figures not worth keeping (CI checks the script with it)
#
# The measurement is the ignored integration test
# `target_conformance::sftp_throughput` (tests/it/target_conformance.rs
# says what is timed and how memory is measured), built with the release
# profile (the dev profile with --debug). Results are figures, never assertions: docs/BENCHMARKS.md
# records them with date and machine. The only checks are that every copy
# has the source's SHA-256.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MB=500
RUNS=1
CONCURRENCY=
DELAY_MS=0
PROFILE=(--release)
PROFILE_NAME=release
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) MB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --delay-ms) DELAY_MS=$2; shift 2 ;;
    --debug) PROFILE=(); PROFILE_NAME=dev; shift ;;
    *) echo "usage: $0 [--mb MEGABYTES] [--runs N] [--concurrency REQUESTS_IN_FLIGHT] [--delay-ms MS_EACH_WAY] [--debug]" >&2; exit 2 ;;
  esac
done

# Assigned first so that a failure of services.sh stops us.
services_env=$(scripts/services.sh)
eval "$services_env"

echo "bench-sftp: building the integration tests (${PROFILE_NAME} profile)" >&2
cargo test --locked "${PROFILE[@]}" --test it --no-run -q >&2

export SELMAI_BENCH_MB=$MB SELMAI_BENCH_SFTP_DELAY_MS=$DELAY_MS
if [ -n "$CONCURRENCY" ]; then
  export SELMAI_BENCH_SFTP_CONCURRENCY=$CONCURRENCY
fi
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for run in $(seq 1 "$RUNS"); do
  echo "bench-sftp: run $run of $RUNS, $MB MB" >&2
  out=$(cargo test --locked "${PROFILE[@]}" --test it -q -- --ignored --exact \
    target_conformance::sftp_throughput --nocapture 2>&1) ||
    { printf '%s\n' "$out" >&2; echo "bench-sftp: run $run failed" >&2; exit 1; }
  printf '%s\n' "$out" | awk -F '\t' -v run="$run" '$1 == "bench-sftp" { print run "\t" $2 "\t" $3 }' >>"$results"
done

# One row per figure, one column per run, in the order the test printed them.
printf '%s MB to and from the loopback OpenSSH server\n\n' "$MB"
awk -F '\t' -v runs="$RUNS" '
  !($2 in seen) { seen[$2] = 1; order[++n] = $2 }
  { value[$2, $1] = $3 }
  END {
    if (n == 0) { print "bench-sftp: the test printed no figures" > "/dev/stderr"; exit 1 }
    header = "| what |"; rule = "|---|"
    for (r = 1; r <= runs; r++) { header = header " run " r " |"; rule = rule "---:|" }
    print header; print rule
    for (i = 1; i <= n; i++) {
      line = "| " order[i] " |"
      for (r = 1; r <= runs; r++) line = line " " value[order[i], r] " |"
      print line
    }
  }' "$results"
