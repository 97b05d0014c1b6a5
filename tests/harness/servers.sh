#!/usr/bin/env bash
# Starts a real Redis and a real PostgreSQL on free loopback ports in a
# temporary directory, exports their URLs, runs the given command, and
# stops both (and removes the directory) however the command ends, even on
# Ctrl-C. PostgreSQL refuses to run as root: as root it runs as the
# unprivileged user "postgres" (created by Debian's postgresql package).
#
#   tests/harness/servers.sh COMMAND [ARGS...]
#
# The command sees:
#   PPM_TEST_TMP            the temporary directory (logs, sockets, data)
#   PPM_TEST_REDIS_URL      redis://127.0.0.1:PORT
#   PPM_TEST_PG_URL         postgresql://ppm@127.0.0.1:PORT/postgres (superuser "ppm", trust auth)
#   PPM_TEST_REDIS_RESTART  a command that restarts Redis on the same port (data kept)
#   PPM_TEST_PG_RESTART     a command that restarts PostgreSQL on the same port
#   PPM_TEST_ROOT           the repository root
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { echo "servers: PostgreSQL server binaries not found (make deps)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "servers: redis-server not found (make deps)" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

tmp=$(mktemp -d /tmp/ppm-test.XXXXXX)
chmod 755 "$tmp"
runas=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runas=(runuser -u postgres --)
fi

cleanup() {
    set +e
    [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    # A Redis restarted by PPM_TEST_REDIS_RESTART runs daemonized under a new pid.
    [ -f "$tmp/redis/redis.pid" ] && kill "$(cat "$tmp/redis/redis.pid")" 2>/dev/null
    [ -f "$tmp/pg/postmaster.pid" ] && "${runas[@]}" "$pgbin/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1
    [ "${PPM_TEST_KEEP:-0}" = "1" ] && { echo "servers: kept $tmp" >&2; return; }
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Redis -----------------------------------------------------------------
redis_port=$(free_port)
mkdir -p "$tmp/redis"
cat > "$tmp/redis/redis.conf" <<CONF
port $redis_port
bind 127.0.0.1
dir $tmp/redis
save ""
appendonly yes
appendfsync no
databases 64
logfile $tmp/redis/redis.log
CONF
redis-server "$tmp/redis/redis.conf" &
redis_pid=$!
cat > "$tmp/redis-restart.sh" <<SH
#!/usr/bin/env bash
# Restarts the test Redis on port $redis_port, keeping its AOF data.
redis-cli -p $redis_port shutdown nosave >/dev/null 2>&1 || true
for i in \$(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 || break; sleep 0.1; done
redis-server $tmp/redis/redis.conf --daemonize yes --pidfile $tmp/redis/redis.pid >/dev/null
# Up means PONG: while it replays its AOF, Redis answers LOADING instead.
for i in \$(seq 600); do [ "\$(redis-cli -p $redis_port ping 2>/dev/null)" = PONG ] && exit 0; sleep 0.05; done
exit 1
SH
chmod +x "$tmp/redis-restart.sh"

# --- PostgreSQL ------------------------------------------------------------
pg_port=$(free_port)
mkdir -p "$tmp/pg" "$tmp/pgsock" "$tmp/pglog"
[ ${#runas[@]} -eq 0 ] || chown postgres "$tmp/pg" "$tmp/pgsock" "$tmp/pglog"
"${runas[@]}" "$pgbin/initdb" -D "$tmp/pg" -U ppm -A trust -E UTF8 --no-sync >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; exit 1; }
pg_opts="-p $pg_port -k $tmp/pgsock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
"${runas[@]}" "$pgbin/pg_ctl" -D "$tmp/pg" -l "$tmp/pglog/pg.log" -o "$pg_opts" -w start >/dev/null ||
    { cat "$tmp/pglog/pg.log" >&2; exit 1; }
cat > "$tmp/pg-restart.sh" <<SH
#!/usr/bin/env bash
# Restarts the test PostgreSQL on port $pg_port (fast shutdown, same data).
${runas[*]} $pgbin/pg_ctl -D $tmp/pg -l $tmp/pglog/pg.log -o "$pg_opts" -m fast -w restart >/dev/null
SH
chmod +x "$tmp/pg-restart.sh"

for i in $(seq 200); do [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done

export PPM_TEST_TMP=$tmp
export PPM_TEST_ROOT=$root
export PPM_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
export PPM_TEST_PG_URL=postgresql://ppm@127.0.0.1:$pg_port/postgres
export PPM_TEST_REDIS_RESTART=$tmp/redis-restart.sh
export PPM_TEST_PG_RESTART=$tmp/pg-restart.sh

set +e
"$@"
rc=$?
set -e
exit $rc
