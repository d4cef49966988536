#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, combined broker+controller, one node),
# or a cluster of such nodes, for txstream's tests and local runs, from the
# jars on Maven Central: no Docker, no tarball, nothing downloaded into the
# repository.
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
#
#   kafka.sh cluster-start DIR [N] [key=value ...]
#                                    a cluster of N (default 3) nodes, each broker and
#                                    controller (one KRaft quorum of N voters), in
#                                    DIR/node-1..N; node i listens on 127.0.0.i, its own
#                                    loopback address (TXSTREAM_KAFKA_HOSTS: others).
#                                    Replication factor min(N,3) for every topic, the
#                                    internal ones too; min.insync.replicas RF-1. Starts
#                                    all nodes, waits until each serves, prints the
#                                    bootstrap list (host:port,host:port,...). A node is
#                                    then an ordinary DIR for start, run, stop, kill and
#                                    addr (DIR/node-2 etc.).
#   kafka.sh cluster-stop DIR        stop every node of the cluster in DIR (SIGTERM to all)
#   kafka.sh cluster-init DIR [N] [--new-ports]
#                                    only write the nodes' identities (DIR/node-i/node.conf:
#                                    node id, host, ports, voters, cluster id); kept across
#                                    calls, --new-ports picks other free ports
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
#   TXSTREAM_KAFKA_HOSTS    cluster-init: the nodes' addresses, comma-separated (default
#                           127.0.0.1,127.0.0.2,...); e.g. addresses on a veth that a
#                           test's network namespace reaches
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

# port_in_use PORT [HOST]: something accepts connections there (on HOST,
# default 127.0.0.1, or on every address).
port_in_use() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# free_port [HOST]: a port nobody listens on, outside Linux's ephemeral range
# so that outgoing connections do not take it meanwhile.
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    if ! port_in_use "$p" "${1:-127.0.0.1}"; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# node_conf DIR: a cluster node's identity (written by cluster-init) into
# NODE_ID, HOST, VOTERS, CLUSTER_ID, NODES; a lone broker's defaults where
# DIR has no node.conf.
node_conf() {
  NODE_ID=1 HOST=127.0.0.1 VOTERS='' CLUSTER_ID='' NODES=1
  [ -f "$1/node.conf" ] || return 0
  local k v
  while IFS='=' read -r k v; do
    case "$k" in
      NODE_ID) NODE_ID="$v" ;;
      HOST) HOST="$v" ;;
      VOTERS) VOTERS="$v" ;;
      CLUSTER_ID) CLUSTER_ID="$v" ;;
      NODES) NODES="$v" ;;
    esac
  done <"$1/node.conf"
}

# addr_of DIR: host:port of the broker in DIR.
addr_of() {
  [ -f "$1/port" ] || die "no broker in $1"
  node_conf "$1"
  echo "$HOST:$(cat "$1/port")"
}

# java_cmd DIR VERSION [tool]: the JVM command line (JAVA_CMD) for the
# broker in DIR, or for a short-lived tool such as the storage format.
java_cmd() {
  local dir="$1" v="$2" what="${3:-broker}" libs
  libs="$(libs_dir "$v")"
  # shellcheck disable=SC2206
  local heap=(${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m})
  # shellcheck disable=SC2206
  local extra=(${KAFKA_OPTS:-})
  local log=(-Dlog4j2.configurationFile="$dir/log4j2.properties")
  case "$v" in 3.*) log=(-Dlog4j.configuration="file:$dir/log4j.properties") ;; esac
  # The client JIT only (C1) for a tool, and for a cluster's nodes: several
  # JVMs starting at once on a small machine spend most of their start-up
  # in the optimising compiler (a 3-node start on 2 busy cores: ~35 s ->
  # ~18 s). KAFKA_OPTS comes later, so -XX:TieredStopAtLevel=4 there wins.
  local jit=()
  if [ "$what" = tool ] || [ -f "$dir/node.conf" ]; then jit=(-XX:TieredStopAtLevel=1); fi
  JAVA_CMD=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    "${jit[@]}" -Djava.awt.headless=true "${log[@]}" "${extra[@]}" -cp "$libs/*")
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
# Sets PORT, CPORT, VERSION (and node_conf's variables).
prepare() {
  local dir="$1" want="${2:-0}"
  shift 2 || shift $#
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  DIR="$dir"
  VERSION="$(version_of "$dir")"
  fetch "$VERSION" >/dev/null
  node_conf "$dir"
  case "$want" in ''|*[!0-9]*) die "PORT must be a number, got '$want'" ;; esac
  if [ "$want" = 0 ] && [ -f "$dir/port" ]; then want="$(cat "$dir/port")"; fi
  if [ "$want" = 0 ]; then want="$(free_port "$HOST")"; fi
  PORT="$want"
  if [ -f "$dir/controller-port" ]; then CPORT="$(cat "$dir/controller-port")"; else CPORT="$(free_port "$HOST")"; fi
  [ "$CPORT" != "$PORT" ] || CPORT="$(free_port "$HOST")"
  [ -n "$VOTERS" ] || VOTERS="$NODE_ID@$HOST:$CPORT"
  # Replication: every topic on min(nodes, 3) brokers, and acks=all writes
  # need all but one of them (a lone broker: 1 and 1).
  local rf=$((NODES < 3 ? NODES : 3)) isr=1
  [ "$rf" -lt 2 ] || isr=$((rf - 1))
  echo "$VERSION" >"$dir/version"
  echo "$PORT" >"$dir/port"
  echo "$CPORT" >"$dir/controller-port"
  write_logging "$dir"

  local props="$dir/server.properties"
  cat >"$props" <<EOF
# Written by test/kafka/kafka.sh: KRaft node $NODE_ID of $NODES, broker and controller, loopback only.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
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
  if [ "$NODES" -gt 1 ]; then
    # A restarted node gets its preferred leaderships back within seconds
    # (default: 5 minutes), as in a production rolling restart.
    echo "leader.imbalance.check.interval.seconds=5" >>"$props"
  fi
  local kv
  for kv in "$@"; do
    case "$kv" in *=*) ;; *) die "expected key=value, got '$kv'" ;; esac
    # A later line wins in java.util.Properties; drop the default for clarity.
    grep -v "^${kv%%=*}=" "$props" >"$props.tmp" || true
    mv "$props.tmp" "$props"
    echo "$kv" >>"$props"
  done

  if [ ! -f "$dir/data/meta.properties" ]; then
    local id="$CLUSTER_ID"
    [ -n "$id" ] || id="$(new_cluster_id)"
    java_cmd "$dir" "$VERSION" tool
    if ! "${JAVA_CMD[@]}" kafka.tools.StorageTool format -t "$id" -c "$props" >"$dir/format.log" 2>&1; then
      cat "$dir/format.log" >&2
      die "formatting $dir/data failed"
    fi
  fi
}

# A cluster id is 16 random bytes, base64url without padding, not starting
# with '-' (the format tool would take it for an option; Kafka's own
# Uuid.randomUuid avoids those too).
new_cluster_id() {
  local id=-
  while [ "${id#-}" != "$id" ]; do id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"; done
  echo "$id"
}

run_fg() {
  prepare "$@"
  java_cmd "$DIR" "$VERSION"
  exec >>"$DIR/server.log" 2>&1
  echo "--- kafka.sh run $(date -Is) version $VERSION node $NODE_ID address $HOST:$PORT controller $CPORT"
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

# launch DIR [PORT] [key=value ...]: start the broker in DIR in the
# background. Sets PID, and OFF and T0 (where and when this start began) for
# await.
launch() {
  local dir="$1"
  shift
  T0=$(date +%s%N)
  touch "$dir/server.log"
  OFF=$(stat -c %s "$dir/server.log")
  # A session of its own: the broker outlives this script and a terminal's
  # ^C. (A background child of a script is no process group leader, so
  # setsid does not fork: $! is the broker's pid.)
  setsid "${BASH_SOURCE[0]}" run "$dir" "$@" </dev/null >/dev/null 2>>"$dir/server.log" &
  PID=$!
  echo "$PID" >"$dir/pid"
}

# await DIR PID OFF T0: wait until the broker serves (returns 0, after
# saying so on stderr) or exits during start-up (returns 1, the last log
# lines on stderr); kill it and die after TXSTREAM_KAFKA_START_TIMEOUT.
await() {
  local dir="$1" pid="$2" off="$3" t0="$4" timeout="${TXSTREAM_KAFKA_START_TIMEOUT:-120}" waited=0
  node_conf "$dir"
  while alive "$pid"; do
    if tail -c +"$((off + 1))" "$dir/server.log" | grep -q "Kafka Server started" &&
      port_in_use "$(cat "$dir/port")" "$HOST"; then
      echo "kafka.sh: Kafka $(cat "$dir/version") node $NODE_ID started in $(( ($(date +%s%N) - t0) / 1000000 )) ms (pid $pid, log $dir/server.log)" >&2
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
  tail -c +"$((off + 1))" "$dir/server.log" | tail -n 40 >&2
  return 1
}

# port_clash DIR OFF: the start whose log began at OFF failed on a taken port.
port_clash() { tail -c +"$(($2 + 1))" "$1/server.log" | grep -q "Address already in use"; }

start() {
  local dir="$1" want="${2:-0}" auto=0
  shift 2 || shift $#
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if running "$dir"; then
    echo "kafka.sh: a broker already runs in $dir (pid $(cat "$dir/pid"))" >&2
    addr_of "$dir"
    return 0
  fi
  # A cluster node keeps the ports its peers know.
  [ "$want" != 0 ] || [ -f "$dir/port" ] || [ -f "$dir/node.conf" ] || auto=1
  local attempt
  for attempt in 1 2 3; do
    launch "$dir" "$want" "$@"
    if await "$dir" "$PID" "$OFF" "$T0"; then
      addr_of "$dir"
      return 0
    fi
    # It exited during start-up. A port taken meanwhile is retried with new
    # ports when they were picked here; anything else is an error.
    if [ "$auto" = 1 ] && port_clash "$dir" "$OFF"; then
      echo "kafka.sh: port taken, retrying with another (attempt $attempt)" >&2
      rm -f "$dir/port" "$dir/controller-port"
      continue
    fi
    break
  done
  die "Kafka exited during start-up (log $dir/server.log)"
}

# cluster_init DIR [N] [--new-ports]: the identities of N nodes in
# DIR/node-1..N (node.conf, port, controller-port); prints the node
# directories. An existing cluster keeps its identities (and its size);
# --new-ports picks other free ports for it (after a port clash).
cluster_init() {
  local dir="$1" n="${2:-3}" renew="${3:-}" i host port cport voters="" id="" hosts=()
  case "$n" in ''|*[!0-9]*|0) die "N must be a positive number, got '$n'" ;; esac
  [ "$n" -le 9 ] || die "at most 9 nodes (127.0.0.1..9)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [ -f "$dir/node-1/node.conf" ]; then
    node_conf "$dir/node-1"
    n="$NODES" id="$CLUSTER_ID"
    if [ "$renew" != --new-ports ]; then
      for i in $(seq 1 "$n"); do echo "$dir/node-$i"; done
      return 0
    fi
  fi
  [ -n "$id" ] || id="$(new_cluster_id)"
  local given=()
  IFS=, read -r -a given <<<"${TXSTREAM_KAFKA_HOSTS:-}"
  [ "${#given[@]}" = 0 ] || [ "${#given[@]}" = "$n" ] || die "TXSTREAM_KAFKA_HOSTS has ${#given[@]} addresses for $n nodes"
  for i in $(seq 1 "$n"); do
    host="127.0.0.$i"
    [ "${#given[@]}" = 0 ] || host="${given[$((i - 1))]}"
    # A node keeps its address when its ports are renewed.
    if [ -f "$dir/node-$i/node.conf" ]; then node_conf "$dir/node-$i"; host="$HOST"; fi
    hosts+=("$host")
    mkdir -p "$dir/node-$i"
    port="$(free_port "$host")"
    cport="$(free_port "$host")"
    while [ "$cport" = "$port" ]; do cport="$(free_port "$host")"; done
    echo "$port" >"$dir/node-$i/port"
    echo "$cport" >"$dir/node-$i/controller-port"
    voters="$voters${voters:+,}$i@$host:$cport"
  done
  for i in $(seq 1 "$n"); do
    printf 'NODE_ID=%s\nHOST=%s\nVOTERS=%s\nCLUSTER_ID=%s\nNODES=%s\n' \
      "$i" "${hosts[$((i - 1))]}" "$voters" "$id" "$n" >"$dir/node-$i/node.conf"
    echo "$dir/node-$i"
  done
}

# cluster_start DIR [N] [key=value ...]: start every node that is not
# running, all at once (a node serves only once a majority of the
# controllers runs), wait for each; print the bootstrap list.
cluster_start() {
  local dir="$1" n=3
  shift
  case "${1:-}" in [0-9]*) n="$1"; shift ;; esac
  local nodes attempt d clash failed list
  for attempt in 1 2 3; do
    mapfile -t nodes < <(cluster_init "$dir" "$n")
    local pids=() offs=() t0s=()
    for d in "${nodes[@]}"; do
      if running "$d"; then
        pids+=("") offs+=("") t0s+=("")
        continue
      fi
      launch "$d" 0 "$@"
      pids+=("$PID") offs+=("$OFF") t0s+=("$T0")
    done
    clash=0 failed=0 list=""
    for i in "${!nodes[@]}"; do
      d="${nodes[$i]}"
      if [ -n "${pids[$i]}" ] && ! await "$d" "${pids[$i]}" "${offs[$i]}" "${t0s[$i]}"; then
        failed=1
        ! port_clash "$d" "${offs[$i]}" || clash=1
      fi
      list="$list${list:+,}$(addr_of "$d")"
    done
    if [ "$failed" = 0 ]; then
      echo "$list"
      return 0
    fi
    for d in "${nodes[@]}"; do stop "$d" 10 KILL; done
    [ "$clash" = 1 ] || break
    echo "kafka.sh: a port was taken; retrying the cluster with other ports (attempt $attempt)" >&2
    cluster_init "$dir" "$n" --new-ports >/dev/null
  done
  die "the cluster in $dir did not start (logs $dir/node-*/server.log)"
}

# cluster_stop DIR: SIGTERM to every node at once (stopping them in turn
# leaves the last ones without a controller quorum to shut down through),
# then wait for each.
cluster_stop() {
  local dir="$1" d
  for d in "$dir"/node-*/; do
    d="${d%/}"
    if running "$d"; then kill -TERM "$(cat "$d/pid")" 2>/dev/null || true; fi
  done
  for d in "$dir"/node-*/; do stop "${d%/}" 30; done
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
  addr) [ $# -ge 1 ] || usage; addr_of "$1" ;;
  cluster-init) [ $# -ge 1 ] || usage; cluster_init "$@" ;;
  cluster-start) [ $# -ge 1 ] || usage; cluster_start "$@" ;;
  cluster-stop) [ $# -ge 1 ] || usage; cluster_stop "$1" ;;
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
