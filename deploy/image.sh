#!/bin/sh
# Build the txstream image FROM scratch from prebuilt static binaries.
#
#   deploy/image.sh [BIN_DIR] [TAG]      (default: bin txstream:latest)
#
# The build context is assembled in a temporary directory: the consumer,
# producer and devbroker binaries from BIN_DIR (build them with
# CGO_ENABLED=0, as `make build` does), deploy/image/rootfs and the host's CA
# bundle (CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt), so that no
# certificate is kept in the repository. No base image is pulled.
set -eu
bin=${1:-bin}
tag=${2:-txstream:latest}
here=$(cd "$(dirname "$0")" && pwd)
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM
for b in consumer producer devbroker; do
	if [ ! -x "$bin/$b" ]; then
		echo "image.sh: $bin/$b missing: run 'make build' first" >&2
		exit 1
	fi
	if command -v ldd >/dev/null 2>&1 && ldd "$bin/$b" >/dev/null 2>&1; then
		echo "image.sh: $bin/$b is dynamically linked: build with CGO_ENABLED=0" >&2
		exit 1
	fi
	cp "$bin/$b" "$ctx/$b"
done
cp -R "$here/image/rootfs" "$ctx/rootfs"
mkdir "$ctx/state"
if [ -f "$ca" ]; then
	cp "$ca" "$ctx/ca-certificates.crt"
else
	echo "image.sh: warning: no CA bundle at $ca; TLS to brokers needs --tls-ca" >&2
	: >"$ctx/ca-certificates.crt"
fi
cp "$here/Dockerfile" "$ctx/Dockerfile"
docker build --quiet -t "$tag" "$ctx"
