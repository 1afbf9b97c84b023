#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, single combined node) on loopback, with no Docker.
#
#   scripts/kafka.sh fetch                 resolve the broker's classpath through Maven (cached)
#   scripts/kafka.sh start PORT DIR        format DIR, start the broker on 127.0.0.1:PORT, wait until it serves
#   scripts/kafka.sh stop DIR              stop the broker started in DIR and wait for it to exit
#   scripts/kafka.sh restart PORT DIR      kill the broker in DIR (SIGKILL, a crash) and start it again on its data
#
# The classpath is cached in ${BREAKOUT_CACHE:-~/.cache/breakout}/kafka-<version>; Maven's own
# repository (~/.m2) caches the jars, so a second machine run costs nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
cache=${BREAKOUT_CACHE:-$HOME/.cache/breakout}
classpath_dir="$cache/kafka-$version"

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  [ -f "$classpath_dir/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is required to fetch Apache Kafka"
  command -v java >/dev/null || die "Java 17+ is required to run Apache Kafka"
  rm -rf "$classpath_dir"
  mkdir -p "$classpath_dir"
  echo "kafka.sh: fetching Apache Kafka $version through Maven" >&2
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$classpath_dir" >&2
  touch "$classpath_dir/.complete"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local port=$1 dir=$2
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local cport=$((port + 1))
  port_open "$port" && die "port $port is already in use"
  rm -rf "$dir/data"  # a started broker is always a fresh one: tests depend on it
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=-1
PROPS
  local cp="$classpath_dir/*"
  local java_opts=(-Xmx512m -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info)
  local cluster_id
  cluster_id=$(java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java -cp "$cp" "${java_opts[@]}" kafka.tools.StorageTool format -g -t "$cluster_id" \
    -c "$dir/server.properties" > "$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "storage format failed"; }
  : > "$dir/broker.log"
  launch "$port" "$dir"
}

# Starts the broker configured in DIR on its existing data and waits until it serves.
launch() {
  local port=$1 dir=$2
  local cp="$classpath_dir/*"
  local java_opts=(-Xmx512m -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info)
  local started
  touch "$dir/broker.log"
  started=$(grep -c "Kafka Server started" "$dir/broker.log" || true)
  nohup java -cp "$cp" "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >> "$dir/broker.log" 2>&1 &
  echo $! > "$dir/broker.pid"
  for _ in $(seq 1 600); do
    if ! kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
      tail -n 30 "$dir/broker.log" >&2
      die "broker exited during start-up (log: $dir/broker.log)"
    fi
    if port_open "$port" && [ "$(grep -c "Kafka Server started" "$dir/broker.log")" -gt "$started" ]; then
      echo "kafka.sh: Apache Kafka $version serving on 127.0.0.1:$port" >&2
      return 0
    fi
    sleep 0.1
  done
  stop "$dir"
  die "broker did not serve on port $port within 60 s"
}

restart() {
  local port=$1 dir=$2 pid
  [ -f "$dir/broker.pid" ] || die "no broker was started in $dir"
  pid=$(cat "$dir/broker.pid")
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  for _ in $(seq 1 300); do port_open "$port" || break; sleep 0.1; done
  launch "$port" "$dir"
}

stop() {
  local dir=$1 pid
  [ -f "$dir/broker.pid" ] || return 0
  pid=$(cat "$dir/broker.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$dir/broker.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) [ $# -eq 3 ] || die "usage: kafka.sh start PORT DIR"; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: kafka.sh stop DIR"; stop "$2" ;;
  restart) [ $# -eq 3 ] || die "usage: kafka.sh restart PORT DIR"; restart "$2" "$3" ;;
  *) die "usage: kafka.sh fetch | start PORT DIR | stop DIR | restart PORT DIR" ;;
esac
