#!/usr/bin/env bash
# Installs (when missing) and starts (when not running) the real servers the
# test suite talks to: a MariaDB server on 127.0.0.1:$TEST_DB_PORT, a moto
# S3-compatible server on 127.0.0.1:$TEST_S3_PORT and an OpenSSH server (for
# the SFTP target) on 127.0.0.1:$TEST_SFTP_PORT. Idempotent: a second call
# finds them running and returns at once. Prints the variables the tests read.
set -euo pipefail

STATE=${SELMAI_TEST_STATE:-/var/tmp/selmai-backup-test}
DB_PORT=${TEST_DB_PORT:-33306}
S3_PORT=${TEST_S3_PORT:-35555}
SFTP_PORT=${TEST_SFTP_PORT:-32222}
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
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
for tool in ssh-keygen ssh-keyscan sftp; do
  command -v "$tool" >/dev/null 2>&1 || { need_apt+=(openssh-client); break; }
done
# Password logins from the command line (ssh and sftp read a password from a
# terminal only).
command -v sshpass >/dev/null 2>&1 || need_apt+=(sshpass)
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

# The SFTP server: Debian's sshd with its own host key, config and log under
# $STATE/sshd, and two users: one logging in with keys only (an ed25519 key,
# an RSA key and a passphrase-protected ed25519 key), one with a password
# only. No PAM: sshd checks the shadow password itself.
SSHD=$STATE/sshd
SFTP_BASE=/var/tmp/selmai-sftp
SFTP_KEY_USER=selmai-key
SFTP_PW_USER=selmai-pw
SFTP_HOME=$SFTP_BASE/$SFTP_KEY_USER
SFTP_FULL=$SFTP_BASE/full
SFTP_PASSWORD=selmai-sftp-password
SFTP_KEY_PASSPHRASE=selmai-key-passphrase

# sshd drops to the user to read its authorized keys: the directory must be
# traversable, the private keys in it are root's alone (0600).
mkdir -p "$SSHD/authorized_keys" "$SFTP_BASE" /run/sshd
chmod 755 "$SSHD" "$SSHD/authorized_keys" "$SFTP_BASE"
chmod 755 /run/sshd
newkey() { # file type passphrase [bits]
  [ -f "$1" ] && return
  ssh-keygen -q -t "$2" ${4:+-b "$4"} -N "$3" -C "selmai-test-$(basename "$1")" -f "$1"
  chmod 600 "$1"
}
newkey "$SSHD/host_ed25519" ed25519 ''
newkey "$SSHD/id_ed25519" ed25519 ''
newkey "$SSHD/id_rsa" rsa '' 3072
newkey "$SSHD/id_ed25519_enc" ed25519 "$SFTP_KEY_PASSPHRASE"

if ! id "$SFTP_KEY_USER" >/dev/null 2>&1; then
  log "creating user $SFTP_KEY_USER"
  useradd --no-create-home --home-dir "$SFTP_HOME" --shell /bin/sh "$SFTP_KEY_USER"
  # useradd leaves the account locked ('!'), and sshd refuses a locked
  # account even for key logins; '*' is no password but not locked.
  usermod -p '*' "$SFTP_KEY_USER"
fi
if ! id "$SFTP_PW_USER" >/dev/null 2>&1; then
  log "creating user $SFTP_PW_USER"
  useradd --no-create-home --home-dir "$SFTP_BASE/$SFTP_PW_USER" --shell /bin/sh "$SFTP_PW_USER"
  echo "$SFTP_PW_USER:$SFTP_PASSWORD" | chpasswd
fi
for u in "$SFTP_KEY_USER" "$SFTP_PW_USER"; do
  if [ ! -d "$SFTP_BASE/$u" ]; then
    mkdir -p "$SFTP_BASE/$u"
    chown "$u:$u" "$SFTP_BASE/$u"
    chmod 755 "$SFTP_BASE/$u"
  fi
done
cat "$SSHD/id_ed25519.pub" "$SSHD/id_rsa.pub" "$SSHD/id_ed25519_enc.pub" \
  > "$SSHD/authorized_keys/$SFTP_KEY_USER.new"
chmod 644 "$SSHD/authorized_keys/$SFTP_KEY_USER.new"
mv "$SSHD/authorized_keys/$SFTP_KEY_USER.new" "$SSHD/authorized_keys/$SFTP_KEY_USER"

# A small file system that fills up, for the full-disk test.
mkdir -p "$SFTP_FULL"
if ! mountpoint -q "$SFTP_FULL"; then
  mount -t tmpfs -o size=8m,mode=0755 selmai-sftp-full "$SFTP_FULL" \
    || { log "cannot mount an 8 MiB tmpfs at $SFTP_FULL (needs root, CAP_SYS_ADMIN)"; exit 1; }
fi
chown "$SFTP_KEY_USER:$SFTP_KEY_USER" "$SFTP_FULL"

# Written only when it changes: a running sshd and a test copying it must
# never see half a file. Tests start private servers from a copy with the
# Port and PidFile lines replaced.
write_if_changed() { # file; content on stdin; true when it changed
  cat > "$1.new"
  if cmp -s "$1.new" "$1"; then rm -f "$1.new"; return 1; fi
  mv "$1.new" "$1"
}
sshd_config_changed=false
write_if_changed "$SSHD/sshd_config" <<CONF && sshd_config_changed=true
Port $SFTP_PORT
ListenAddress 127.0.0.1
PidFile $SSHD/sshd.pid
HostKey $SSHD/host_ed25519
AuthorizedKeysFile $SSHD/authorized_keys/%u
# /var/tmp is world-writable: the strict check of the path to the keys
# would refuse every key.
StrictModes no
AllowUsers $SFTP_KEY_USER $SFTP_PW_USER
PermitRootLogin no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
# Tests run in parallel and each opens its own connections: sshd's default
# (10:30:100) would drop some of them at random.
MaxStartups 200
MaxSessions 50
LoginGraceTime 30
LogLevel VERBOSE
Subsystem sftp internal-sftp
Match User $SFTP_KEY_USER
  AuthenticationMethods publickey
Match User $SFTP_PW_USER
  PasswordAuthentication yes
  AuthenticationMethods password
CONF

host_key=$(cut -d' ' -f1,2 "$SSHD/host_ed25519.pub")
fingerprint=$(ssh-keygen -lf "$SSHD/host_ed25519.pub" | cut -d' ' -f2)
printf '[127.0.0.1]:%s %s\n' "$SFTP_PORT" "$host_key" | write_if_changed "$SSHD/known_hosts" || true
chmod 644 "$SSHD/known_hosts"

# Up means: something on the port answers with our host key.
sshd_up() {
  ssh-keyscan -T 2 -t ed25519 -p "$SFTP_PORT" 127.0.0.1 2>/dev/null | cut -d' ' -f2,3 \
    | grep -qxF "$host_key"
}
if $sshd_config_changed; then
  # A running sshd keeps the configuration it started with.
  start-stop-daemon --stop --quiet --retry 5 --pidfile "$SSHD/sshd.pid" --exec /usr/sbin/sshd || true
fi
if ! sshd_up; then
  /usr/sbin/sshd -t -f "$SSHD/sshd_config"
  log "starting sshd on 127.0.0.1:$SFTP_PORT"
  # sshd writes the pid file itself; start-stop-daemon reads it to see
  # whether this instance is already running (then it does nothing).
  start-stop-daemon --start --background --pidfile "$SSHD/sshd.pid" --exec /usr/sbin/sshd \
    -- -D -f "$SSHD/sshd_config" -E "$SSHD/sshd.log" || true
  for _ in $(seq 1 60); do sshd_up && break; sleep 0.25; done
  sshd_up || { log "sshd did not come up; see $SSHD/sshd.log"; tail -20 "$SSHD/sshd.log" >&2; exit 1; }
fi

cat <<VARS
export TEST_DB_HOST=127.0.0.1
export TEST_DB_PORT=$DB_PORT
export TEST_DB_USER=$DB_USER
export TEST_DB_PASSWORD=$DB_PASS
export TEST_DB_SOCKET=$STATE/run/mariadb.sock
export TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export TEST_SFTP_HOST=127.0.0.1
export TEST_SFTP_PORT=$SFTP_PORT
export TEST_SFTP_USER=$SFTP_KEY_USER
export TEST_SFTP_KEY_FILE=$SSHD/id_ed25519
export TEST_SFTP_RSA_KEY_FILE=$SSHD/id_rsa
export TEST_SFTP_ENC_KEY_FILE=$SSHD/id_ed25519_enc
export TEST_SFTP_KEY_PASSPHRASE=$SFTP_KEY_PASSPHRASE
export TEST_SFTP_PW_USER=$SFTP_PW_USER
export TEST_SFTP_PASSWORD=$SFTP_PASSWORD
export TEST_SFTP_PW_HOME=$SFTP_BASE/$SFTP_PW_USER
export TEST_SFTP_KNOWN_HOSTS=$SSHD/known_hosts
export TEST_SFTP_HOST_KEY='$host_key'
export TEST_SFTP_FINGERPRINT=$fingerprint
export TEST_SFTP_HOME=$SFTP_HOME
export TEST_SFTP_FULL_DIR=$SFTP_FULL
export TEST_SFTP_SSHD_CONFIG=$SSHD/sshd_config
VARS
