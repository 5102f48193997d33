#!/usr/bin/env bash
# Builds, once per machine, a local Debian bookworm image from a root
# filesystem made by debootstrap, because no container registry can be
# reached here (nothing can be pulled). It holds what the other images take
# from it: CA certificates (for our scratch image), busybox-static (for the
# demo's stand-in app) and mariadb-server (for the demo's database), see
# examples/demo.
#
#   scripts/debian-image.sh            # prints the image name
#   DEBIAN_IMAGE=name:tag scripts/debian-image.sh
#
# The mirror is the one this machine's apt already uses (never a hard-coded
# host). Skips all work when the image exists.
set -euo pipefail

IMAGE=${DEBIAN_IMAGE:-selmai-local/bookworm:latest}
SUITE=bookworm
PACKAGES=ca-certificates,busybox-static,mariadb-server

log() { printf 'debian-image: %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE"
  exit 0
fi

# The first Debian archive URI of this machine's apt sources that is not a
# security archive: deb822 files (URIs:) first, then one-line sources.list.
mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # One stanza per blank-line-separated paragraph; keep stanzas whose
    # Suites name the plain suite (not -security, -updates).
    uri=$(awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        u = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, a, /[ \t]+/); u = a[1] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
        }
        if (ok && u != "") { print u; exit }
      }' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) !~ /-(security|updates|backports)$/) { print $i; exit }
      }' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
}

MIRROR=$(mirror)
if [ -z "$MIRROR" ]; then
  log "no Debian mirror found in /etc/apt/sources.list{,.d}: add one (apt must work on this machine)"
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  # Waits for another apt run instead of failing on its lock.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
fi

STATE=${SELMAI_TEST_STATE:-/var/tmp/selmai-backup-test}
ROOT="$STATE/rootfs-$SUITE"
mkdir -p "$STATE"
cleanup() {
  # debootstrap may leave /proc and /sys mounted when it fails.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m" || true
  done
  rm -rf "$ROOT"
}
trap cleanup EXIT
cleanup

log "debootstrap $SUITE ($PACKAGES) from $MIRROR into $ROOT"
started=$SECONDS
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
    >"$STATE/debootstrap.log" 2>&1; then
  log "debootstrap failed; the end of $STATE/debootstrap.log:"
  tail -25 "$STATE/debootstrap.log" >&2
  exit 1
fi
# Package postinst scripts may have started mariadbd inside the chroot.
pkill_chroot() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOT" ] && kill "$pid" 2>/dev/null || true
  done
}
pkill_chroot
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/lib/mysql/*
log "importing as $IMAGE ($((SECONDS - started))s so far)"
tar --numeric-owner -C "$ROOT" -c . | docker import - "$IMAGE" >/dev/null
log "built $IMAGE in $((SECONDS - started))s"
echo "$IMAGE"
