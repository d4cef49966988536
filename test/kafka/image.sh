#!/usr/bin/env bash
# A container image of Apache Kafka (one KRaft node, broker and controller)
# built here, with no registry: a Debian root file system made with
# debootstrap (minbase plus openjdk-17-jre-headless) from the Debian mirror
# apt already uses, imported into Docker as a base image, and the broker
# jars that test/kafka/kafka.sh fetches with Maven on top.
#
#   image.sh [build] [VERSION] [TAG]   build the image (default VERSION: kafka.sh's,
#                                      TAG txstream-kafka:VERSION); prints TAG.
#                                      Up to date (same jars, same scripts, same
#                                      base): nothing is rebuilt.
#   image.sh rootfs                    only make (or find) the cached root file
#                                      system tarball; prints its path
#
# Caches (outside the repository): the root file system tarball in
# $TXSTREAM_KAFKA_IMAGE_CACHE (default ~/.cache/txstream/kafka-image), the
# jars in kafka.sh's cache. Docker keeps the imported base image
# (txstream-kafka-base:<suite>-jre17) and the final image. A first build
# downloads and installs the Debian packages (2.5-4 minutes on 2 busy
# cores); later builds reuse the tarball (about 20 s) or find the image
# up to date (under a second).
#
# Needs: root (debootstrap), debootstrap, the docker CLI and a running
# engine, and for the jars Java and Maven (or a filled jar cache).
#
# Environment:
#   TXSTREAM_KAFKA_IMAGE_CACHE  rootfs cache directory
#   TXSTREAM_DEBIAN_MIRROR      Debian mirror (default: the first one in
#                               /etc/apt/sources.list{,.d/*} that serves the suite)
#   TXSTREAM_DEBIAN_SUITE       Debian suite of the image (default bookworm)
#
# The image: docker run -p 9092:9092 txstream-kafka:4.1.2 starts a broker
# that advertises localhost:9092. Settings come from KAFKA_* variables as in
# Apache Kafka's own image (KAFKA_ADVERTISED_LISTENERS -> advertised.listeners;
# see test/kafka/image/kafka-entrypoint).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TXSTREAM_KAFKA_IMAGE_CACHE:-${HOME:-/tmp}/.cache/txstream/kafka-image}"
suite="${TXSTREAM_DEBIAN_SUITE:-bookworm}"
arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
rootfs_tar="$cache/rootfs-$suite-jre17-$arch.tar"
base_tag="txstream-kafka-base:$suite-jre17"

die() { echo "image.sh: $*" >&2; exit 1; }
say() { echo "image.sh: $*" >&2; }

# mirror: the Debian mirror to debootstrap from, checked to serve the suite.
mirror() {
  local cands=() m f
  if [ -n "${TXSTREAM_DEBIAN_MIRROR:-}" ]; then
    cands=("$TXSTREAM_DEBIAN_MIRROR")
  else
    # One-line (deb URL SUITE ...) and deb822 (URIs: URL) sources; Debian's
    # main archive only (not -security, not third-party repositories).
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      while read -r m; do cands+=("$m"); done < <(
        sed -n -e 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]\+\).*/\2/p' \
               -e 's/^[[:space:]]*URIs:[[:space:]]*//p' "$f" | tr ' ' '\n' | grep -v -e '-security' -e '^$' || true)
    done
    cands+=(http://deb.debian.org/debian)
  fi
  local tried=" "
  for m in "${cands[@]}"; do
    m="${m%/}"
    case "$tried" in *" $m "*) continue ;; esac
    tried="$tried$m "
    if curl -fsS --max-time 20 -o /dev/null "$m/dists/$suite/Release" 2>/dev/null; then
      echo "$m"
      return 0
    fi
  done
  die "no Debian mirror serving $suite is reachable (tried:${tried% }); set TXSTREAM_DEBIAN_MIRROR"
}

# make_rootfs: debootstrap into a temporary directory, trim it, add the
# kafka user and directories, and write the tarball (atomically).
make_rootfs() {
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
  command -v curl >/dev/null 2>&1 || die "curl not found"
  local m t0 dir
  m="$(mirror)"
  t0=$(date +%s)
  dir="$(mktemp -d "$cache/rootfs.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$dir' '$rootfs_tar.tmp'" EXIT
  say "debootstrap $suite (minbase + openjdk-17-jre-headless) from $m into $dir"
  if ! debootstrap --variant=minbase --include=openjdk-17-jre-headless \
      "$suite" "$dir" "$m" >"$dir.log" 2>&1; then
    tail -n 30 "$dir.log" >&2
    [ ! -f "$dir/debootstrap/debootstrap.log" ] || tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
    rm -f "$dir.log"
    die "debootstrap failed"
  fi
  rm -f "$dir.log"
  # Trim what a broker never reads: package caches and lists, docs, man
  # pages, translations.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* \
    "$dir"/var/log/*.log "$dir"/debootstrap
  # The broker's user (uid/gid 1000) and its directories.
  echo 'kafka:x:1000:1000:Apache Kafka:/var/lib/kafka:/usr/sbin/nologin' >>"$dir/etc/passwd"
  echo 'kafka:x:1000:' >>"$dir/etc/group"
  echo 'kafka:*:19000:0:99999:7:::' >>"$dir/etc/shadow"
  mkdir -p "$dir/opt/kafka/libs" "$dir/opt/kafka/bin" "$dir/etc/kafka" "$dir/var/lib/kafka/data"
  chown -R 1000:1000 "$dir/var/lib/kafka" "$dir/etc/kafka"
  "$dir/usr/bin/java" -version >/dev/null 2>&1 || chroot "$dir" java -version >/dev/null 2>&1 ||
    die "java does not run in the new root file system"
  tar --numeric-owner -C "$dir" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$dir"
  trap - EXIT
  say "root file system $rootfs_tar ($(du -h "$rootfs_tar" | cut -f1)) made in $(($(date +%s) - t0)) s"
}

rootfs() {
  mkdir -p "$cache"
  if [ ! -s "$rootfs_tar" ]; then make_rootfs; fi
  echo "$rootfs_tar"
}

# base_image: the root file system as a Docker image (imported once).
base_image() {
  if docker image inspect "$base_tag" >/dev/null 2>&1; then return 0; fi
  rootfs >/dev/null
  local t0
  t0=$(date +%s)
  docker import --change 'ENV PATH=/opt/kafka/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --message "Debian $suite minbase + openjdk-17-jre-headless (test/kafka/image.sh)" \
    "$rootfs_tar" "$base_tag" >/dev/null
  say "imported $base_tag in $(($(date +%s) - t0)) s"
}

build() {
  local version="${1:-}" tag="${2:-}"
  [ -n "$version" ] || version="$(sed -n 's/^default_version=//p' "$here/kafka.sh")"
  [ -n "$tag" ] || tag="txstream-kafka:$version"
  command -v docker >/dev/null 2>&1 || die "docker not found (apt-get install docker.io)"
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
  mkdir -p "$cache"
  # One build at a time (test binaries may build in parallel).
  exec 8>"$cache/.build.lock"
  flock 8

  local t0 libs
  t0=$(date +%s)
  libs="$("$here/kafka.sh" fetch "$version")"
  base_image

  # The inputs of the image: when the existing image was built from the
  # same ones, it is up to date.
  local inputs
  inputs="$( {
    docker image inspect --format '{{.Id}}' "$base_tag"
    echo "$version"
    cat "$here/image/Dockerfile" "$here/image/kafka-entrypoint" "$here/image/kafka-class"
    (cd "$libs" && find . -type f -printf '%p %s\n' | sort)
  } | sha256sum | cut -c1-16)"
  if [ "$(docker image inspect --format '{{index .Config.Labels "org.txstream.inputs"}}' "$tag" 2>/dev/null || true)" = "$inputs" ]; then
    say "$tag is up to date"
    echo "$tag"
    return 0
  fi

  local ctx
  ctx="$(mktemp -d "$cache/ctx.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$ctx' '$ctx.log'" EXIT
  mkdir "$ctx/libs"
  # Hard links where the jar cache is on the same file system.
  cp -l "$libs"/*.jar "$ctx/libs/" 2>/dev/null || cp "$libs"/*.jar "$ctx/libs/"
  cp "$here/image/Dockerfile" "$here/image/kafka-entrypoint" "$here/image/kafka-class" "$ctx/"
  echo "$version" >"$ctx/version"
  # The output only on failure (the legacy builder warns that it is one).
  if ! docker build --quiet --build-arg BASE="$base_tag" --label "org.txstream.inputs=$inputs" \
      --label "org.apache.kafka.version=$version" -t "$tag" "$ctx" >"$ctx.log" 2>&1; then
    cat "$ctx.log" >&2
    rm -f "$ctx.log"
    die "docker build of $tag failed"
  fi
  rm -f "$ctx.log"
  rm -rf "$ctx"
  trap - EXIT
  say "built $tag (Kafka $version on Debian $suite) in $(($(date +%s) - t0)) s"
  echo "$tag"
}

cmd="${1:-build}"
case "$cmd" in
  build) shift || true; build "$@" ;;
  rootfs) rootfs ;;
  [0-9]*) build "$@" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' ;;
  *) die "unknown command $cmd (build, rootfs)" ;;
esac
