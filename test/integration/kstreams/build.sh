#!/usr/bin/env bash
# Builds the Kafka Streams peer (README.md) with Maven into a cache outside
# the repository and prints the path of its classpath file: one line, the
# application's jar first, then its dependencies in ~/.m2, ':'-separated
# (java -cp "$(cat FILE)" io.github.txstream.kstreams.Peer ...).
#
#   build.sh            build once per content of pom.xml and src/ (a hash
#                       names the cache entry), then print the file
#
# Exit status: 0 built or cached; 2 java or mvn missing; 3 Maven could not
# fetch the dependencies or plugins (offline); 1 anything else (a compile
# error). The message is on stderr.
#
# Environment:
#   TXSTREAM_KSTREAMS_CACHE  cache root (default $HOME/.cache/txstream/kstreams)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${TXSTREAM_KSTREAMS_CACHE:-${HOME:-/tmp}/.cache/txstream/kstreams}"

die() { echo "kstreams/build.sh: $2" >&2; exit "$1"; }

command -v java >/dev/null 2>&1 || die 2 "java not found on PATH"

hash="$(cd "$here" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
out="$cache_root/$hash"
if [ -f "$out/classpath" ]; then
  echo "$out/classpath"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || die 2 "mvn not found on PATH (Maven builds the peer once; it is cached in $cache_root)"
mkdir -p "$cache_root"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache_root/.build.lock"
  flock 9
  if [ -f "$out/classpath" ]; then
    echo "$out/classpath"
    exit 0
  fi
fi

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
log="$tmp/mvn.log"
echo "kstreams/build.sh: building the Kafka Streams peer with Maven into $out" >&2
if ! mvn -q -B -f "$here/pom.xml" -Dpeer.build.dir="$tmp/target" \
    package dependency:build-classpath -Dmdep.outputFile="$tmp/deps" -Dmdep.includeScope=runtime >"$log" 2>&1; then
  cat "$log" >&2
  status=1
  if grep -qE 'Could not (resolve|transfer)|Non-resolvable|Unknown host|Connection refused|Network is unreachable|failed to transfer|offline mode' "$log"; then
    status=3
  fi
  rm -rf "$tmp"
  die "$status" "Maven failed (see above)"
fi
jar="$(ls "$tmp"/target/txstream-kstreams-peer-*.jar)"
mkdir -p "$tmp/lib"
mv "$jar" "$tmp/lib/peer.jar"
rm -rf "$tmp/target" "$log"
printf '%s:%s\n' "$out/lib/peer.jar" "$(cat "$tmp/deps")" >"$tmp/classpath"
rm -f "$tmp/deps"
rm -rf "$out"
mv "$tmp" "$out"
echo "$out/classpath"
