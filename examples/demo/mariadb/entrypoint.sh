#!/bin/sh
# Initialises the data directory on first start (the database, the user and
# root's password from MARIADB_* variables, like the official image), then
# runs mariadbd in the foreground as PID 1, so `docker stop` shuts it down
# cleanly.
set -eu
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
mkdir -p /run/mysqld "$DATADIR"
chown mysql:mysql /run/mysqld "$DATADIR"

if [ ! -d "$DATADIR/mysql" ]; then
  : "${MARIADB_DATABASE:?set MARIADB_DATABASE}" "${MARIADB_USER:?set MARIADB_USER}" \
    "${MARIADB_PASSWORD:?set MARIADB_PASSWORD}"
  echo "mariadb-entrypoint: initialising $DATADIR" >&2
  mariadb-install-db --user=mysql --datadir="$DATADIR" \
    --auth-root-authentication-method=socket --skip-test-db >/dev/null
  mariadbd --user=mysql --datadir="$DATADIR" --socket="$SOCKET" --skip-networking &
  pid=$!
  i=0
  until mariadb-admin --protocol=socket -uroot ping >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 120 ] || { echo "mariadb-entrypoint: server did not start" >&2; exit 1; }
    sleep 0.5
  done
  mariadb --protocol=socket -uroot <<SQL
CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;
CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '$MARIADB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';
SQL
  if [ -n "${MARIADB_ROOT_PASSWORD:-}" ]; then
    mariadb --protocol=socket -uroot <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('$MARIADB_ROOT_PASSWORD');
SQL
  fi
  mariadb --protocol=socket -uroot -e 'FLUSH PRIVILEGES'
  kill "$pid"
  wait "$pid" || true
fi

exec mariadbd --user=mysql --datadir="$DATADIR" --socket="$SOCKET" \
  --bind-address=0.0.0.0 --port=3306 --skip-name-resolve \
  --log-bin=binlog --server-id=1 --binlog-format=ROW \
  --innodb-buffer-pool-size=64M
