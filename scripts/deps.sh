#!/bin/sh
# deps.sh - install the Debian packages telgate needs, only when missing.
# Called by `make deps`, which run-all.sh, `make test` and .ci/run call.
set -eu
PKGS="build-essential pkg-config libzmq3-dev libcivetweb-dev liblmdb-dev
libmsgpack-dev libcurl4-openssl-dev libsodium-dev libjansson-dev libcmocka-dev
supervisor python3 python3-pytest python3-zmq python3-nacl python3-msgpack curl"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
