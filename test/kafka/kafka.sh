#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, combined broker+controller, one node)
# for txstream's tests and local runs, from the jars on Maven Central: no
# Docker, no tarball, nothing downloaded into the repository.
#
#   kafka.sh fetch [VERSION]         resolve the jars (Maven) into the cache; prints the libs dir
#   kafka.sh start DIR [PORT] [key=value ...]
#                                    write DIR/server.properties, format DIR/data once,
#                                    start the broker in the background (log DIR/server.log,
#                                    pid DIR/pid), wait until it serves, print 127.0.0.1:PORT.
#                                    PORT 0 or omitted: the port of an earlier start in DIR,
#                                    else a free one. key=value pairs override server.properties.
#                                    A broker already running in DIR: prints its address.
#   kafka.sh run DIR [PORT] [key=value ...]
#                                    the same in the foreground (exec java; log to DIR/server.log)
#   kafka.sh stop DIR [SECONDS]      SIGTERM, wait (default 30 s), then SIGKILL
#   kafka.sh kill DIR                SIGKILL (a crash) and wait
#   kafka.sh addr DIR                the address of the broker in DIR
#   kafka.sh console-consumer ARGS   kafka-console-consumer from the same jars
#   kafka.sh console-producer ARGS   kafka-console-producer
#   kafka.sh consumer-groups ARGS    kafka-consumer-groups
#   kafka.sh topics ARGS             kafka-topics
#   kafka.sh transactions ARGS       kafka-transactions
#   kafka.sh class MAIN-CLASS ARGS   any main class on the broker's classpath
#
# Environment:
#   TXSTREAM_KAFKA_VERSION  Kafka version (default 4.1.2; 3.9.x for the pre-KIP-890
#                           transaction protocol). A DIR keeps the version it was
#                           first started with.
#   TXSTREAM_KAFKA_CACHE    cache root (default $HOME/.cache/txstream/kafka);
#                           jars go to <root>/<version>/libs
#   KAFKA_HEAP_OPTS         JVM heap flags (default -Xmx512m -Xms128m)
#   KAFKA_OPTS              more JVM flags
#   TXSTREAM_KAFKA_START_TIMEOUT  seconds to wait for start (default 120)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
default_version=4.1.2
cache_root="${TXSTREAM_KAFKA_CACHE:-${HOME:-/tmp}/.cache/txstream/kafka}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }

libs_dir() { echo "$cache_root/$1/libs"; }

# fetch VERSION: resolve the broker, tools and logging jars with Maven into
# the cache. A marker file makes a second call instant; a half-done fetch
# (no marker) is redone from scratch.
fetch() {
  local v="$1" libs
  libs="$(libs_dir "$v")"
  if [ -f "$libs/.complete" ]; then
    echo "$libs"
    return 0
  fi
  # One fetch at a time (go test runs packages in parallel): wait for the
  # other one, then use what it fetched.
  mkdir -p "$cache_root"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache_root/.fetch-$v.lock"
    flock 9
    if [ -f "$libs/.complete" ]; then
      exec 9>&-
      echo "$libs"
      return 0
    fi
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: cannot fetch Kafka $v (install Maven, or fill $libs by hand)"
  command -v java >/dev/null 2>&1 || die "java not found"
  local profile=kafka4
  case "$v" in
    3.*) profile=kafka3 ;;
    4.*) ;;
    *) die "unsupported Kafka version $v (3.9.x or 4.x)" ;;
  esac
  local tmp="$libs.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  echo "kafka.sh: fetching Kafka $v jars with Maven into $libs" >&2
  if ! mvn -q -B -f "$here/pom.xml" -P "$profile" -Dkafka.version="$v" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "Maven could not resolve Kafka $v (see above)"
  fi
  rm -f "$tmp.log"
  ls "$tmp"/kafka_2.13-"$v".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13-$v.jar missing after the fetch"; }
  echo "$v" >"$tmp/.complete"
  rm -rf "$libs"
  mkdir -p "$(dirname "$libs")"
  mv "$tmp" "$libs"
  exec 9>&- # unlock (and keep the lock from a broker this script execs)
  echo "$libs"
}

# version_of DIR: the version DIR was first started with, else the selected one.
version_of() {
  if [ -f "$1/version" ]; then cat "$1/version"; else echo "${TXSTREAM_KAFKA_VERSION:-$default_version}"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: a port nobody listens on, outside Linux's ephemeral range so
# that outgoing connections do not take it meanwhile.
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    if ! port_in_use "$p"; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

java_cmd() {
  local dir="$1" v="$2" libs
  libs="$(libs_dir "$v")"
  # shellcheck disable=SC2206
  local heap=(${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m})
  # shellcheck disable=SC2206
  local extra=(${KAFKA_OPTS:-})
  local log=(-Dlog4j2.configurationFile="$dir/log4j2.properties")
  case "$v" in 3.*) log=(-Dlog4j.configuration="file:$dir/log4j.properties") ;; esac
  JAVA_CMD=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true "${log[@]}" "${extra[@]}" -cp "$libs/*")
}

write_logging() {
  local dir="$1"
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
  cat >"$dir/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
EOF
}

# prepare DIR [PORT] [key=value ...]: configuration and storage format.
# Sets PORT, CPORT, VERSION.
prepare() {
  local dir="$1" want="${2:-0}"
  shift 2 || shift $#
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  DIR="$dir"
  VERSION="$(version_of "$dir")"
  fetch "$VERSION" >/dev/null
  case "$want" in ''|*[!0-9]*) die "PORT must be a number, got '$want'" ;; esac
  if [ "$want" = 0 ] && [ -f "$dir/port" ]; then want="$(cat "$dir/port")"; fi
  if [ "$want" = 0 ]; then want="$(free_port)"; fi
  PORT="$want"
  if [ -f "$dir/controller-port" ]; then CPORT="$(cat "$dir/controller-port")"; else CPORT="$(free_port)"; fi
  [ "$CPORT" != "$PORT" ] || CPORT="$(free_port)"
  echo "$VERSION" >"$dir/version"
  echo "$PORT" >"$dir/port"
  echo "$CPORT" >"$dir/controller-port"
  write_logging "$dir"

  local props="$dir/server.properties"
  cat >"$props" <<EOF
# Written by test/kafka/kafka.sh: one KRaft node, broker and controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
log.retention.check.interval.ms=1000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.dedupe.buffer.size=33554432
# A broker restarted after SIGKILL can register only once the controller has
# expired its previous registration: keep that short (default 9 s).
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500
EOF
  local kv
  for kv in "$@"; do
    case "$kv" in *=*) ;; *) die "expected key=value, got '$kv'" ;; esac
    # A later line wins in java.util.Properties; drop the default for clarity.
    grep -v "^${kv%%=*}=" "$props" >"$props.tmp" || true
    mv "$props.tmp" "$props"
    echo "$kv" >>"$props"
  done

  if [ ! -f "$dir/data/meta.properties" ]; then
    local id
    # A cluster id is 16 random bytes, base64url without padding.
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    java_cmd "$dir" "$VERSION"
    if ! "${JAVA_CMD[@]}" kafka.tools.StorageTool format -t "$id" -c "$props" >"$dir/format.log" 2>&1; then
      cat "$dir/format.log" >&2
      die "formatting $dir/data failed"
    fi
  fi
}

run_fg() {
  prepare "$@"
  java_cmd "$DIR" "$VERSION"
  exec >>"$DIR/server.log" 2>&1
  echo "--- kafka.sh run $(date -Is) version $VERSION port $PORT controller $CPORT"
  echo $$ >"$DIR/pid"
  exec "${JAVA_CMD[@]}" kafka.Kafka "$DIR/server.properties"
}

# alive PID: the process exists and is not a zombie (a child that exited
# but was not reaped yet still answers kill -0).
alive() {
  local st
  [ -n "$1" ] && st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"
  [ "${st%% *}" != Z ]
}

running() { [ -f "$1/pid" ] && alive "$(cat "$1/pid")"; }

start() {
  local dir="$1" want="${2:-0}" auto=0
  shift 2 || shift $#
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if running "$dir"; then
    echo "kafka.sh: a broker already runs in $dir (pid $(cat "$dir/pid"))" >&2
    echo "127.0.0.1:$(cat "$dir/port")"
    return 0
  fi
  [ "$want" != 0 ] || [ -f "$dir/port" ] || auto=1
  local timeout="${TXSTREAM_KAFKA_START_TIMEOUT:-120}" attempt t0 off pid waited
  for attempt in 1 2 3; do
    t0=$(date +%s%N)
    touch "$dir/server.log"
    off=$(stat -c %s "$dir/server.log")
    # A session of its own: the broker outlives this script and a
    # terminal's ^C. (A background child of a script is no process group
    # leader, so setsid does not fork: $! is the broker's pid.)
    setsid "${BASH_SOURCE[0]}" run "$dir" "$want" "$@" </dev/null >/dev/null 2>>"$dir/server.log" &
    pid=$!
    echo "$pid" >"$dir/pid"
    waited=0
    while alive "$pid"; do
      if tail -c +"$((off + 1))" "$dir/server.log" | grep -q "Kafka Server started" && port_in_use "$(cat "$dir/port")"; then
        echo "kafka.sh: Kafka $(cat "$dir/version") started in $(( ($(date +%s%N) - t0) / 1000000 )) ms (pid $pid, log $dir/server.log)" >&2
        echo "127.0.0.1:$(cat "$dir/port")"
        return 0
      fi
      if [ "$waited" -ge $((timeout * 10)) ]; then
        kill -9 "$pid" 2>/dev/null || true
        tail -c +"$((off + 1))" "$dir/server.log" | tail -n 40 >&2
        die "Kafka did not start within ${timeout}s (log $dir/server.log)"
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    rm -f "$dir/pid"
    # It exited during start-up. A port taken meanwhile is retried with new
    # ports when they were picked here; anything else is an error.
    if [ "$auto" = 1 ] && tail -c +"$((off + 1))" "$dir/server.log" | grep -q "Address already in use"; then
      echo "kafka.sh: port taken, retrying with another (attempt $attempt)" >&2
      rm -f "$dir/port" "$dir/controller-port"
      continue
    fi
    break
  done
  tail -c +"$((off + 1))" "$dir/server.log" | tail -n 40 >&2
  die "Kafka exited during start-up (log $dir/server.log)"
}

stop() {
  local dir="$1" secs="${2:-30}" sig="${3:-TERM}" pid i
  [ -f "$dir/pid" ] || { echo "kafka.sh: no broker in $dir" >&2; return 0; }
  pid="$(cat "$dir/pid")"
  alive "$pid" || { rm -f "$dir/pid"; return 0; }
  kill -"$sig" "$pid" 2>/dev/null || true
  for i in $(seq 1 $((secs * 10))); do
    alive "$pid" || { rm -f "$dir/pid"; return 0; }
    sleep 0.1
  done
  echo "kafka.sh: broker $pid still running ${secs}s after SIG$sig; killing it" >&2
  kill -9 "$pid" 2>/dev/null || true
  while alive "$pid"; do sleep 0.1; done
  rm -f "$dir/pid"
}

# tool CLASS ARGS: run a Kafka command-line tool from the cached jars.
tool() {
  local v="${TXSTREAM_KAFKA_VERSION:-$default_version}" libs cls="$1"
  shift
  libs="$(fetch "$v")"
  local log=(-Dlog4j2.configurationFile="$here/tools-log4j2.properties")
  case "$v" in 3.*) log=(-Dlog4j.configuration="file:$here/tools-log4j.properties") ;; esac
  exec java -Xmx256m "${log[@]}" -cp "$libs/*" "$cls" "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  fetch) fetch "${1:-${TXSTREAM_KAFKA_VERSION:-$default_version}}" ;;
  start) [ $# -ge 1 ] || usage; start "$@" ;;
  run) [ $# -ge 1 ] || usage; run_fg "$@" ;;
  stop) [ $# -ge 1 ] || usage; stop "$1" "${2:-30}" ;;
  kill) [ $# -ge 1 ] || usage; stop "$1" 10 KILL ;;
  addr) [ $# -ge 1 ] || usage; [ -f "$1/port" ] || die "no broker in $1"; echo "127.0.0.1:$(cat "$1/port")" ;;
  console-consumer) tool org.apache.kafka.tools.consumer.ConsoleConsumer "$@" ;;
  console-producer)
    case "${TXSTREAM_KAFKA_VERSION:-$default_version}" in
      3.*) tool kafka.tools.ConsoleProducer "$@" ;;
      *) tool org.apache.kafka.tools.ConsoleProducer "$@" ;;
    esac ;;
  consumer-groups) tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@" ;;
  topics) tool org.apache.kafka.tools.TopicCommand "$@" ;;
  transactions) tool org.apache.kafka.tools.TransactionsCommand "$@" ;;
  class) [ $# -ge 1 ] || usage; tool "$@" ;;
  *) usage ;;
esac
