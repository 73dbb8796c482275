#!/usr/bin/env bash
# Local stack for logingest, on loopback only: etcd 3.4, tansu (Kafka API), osmem-server (ES API).
#
#   scripts/stack.sh start    install if needed (install-stack.sh), start all three, wait until ready
#   scripts/stack.sh stop     stop what start started (TERM, then KILL after a deadline); no-op if nothing runs
#   scripts/stack.sh status   one line per server; exit 0 only if all three run and answer
#   scripts/stack.sh env      print export lines for logingest (eval "$(scripts/stack.sh env)")
#
# Ports: LOGINGEST_STACK_ETCD_PORT (2379), LOGINGEST_STACK_ETCD_PEER_PORT (etcd port + 1),
#        LOGINGEST_STACK_KAFKA_PORT (9092), LOGINGEST_STACK_ES_PORT (9200).
# Timeouts (seconds): LOGINGEST_STACK_START_TIMEOUT (30), LOGINGEST_STACK_STOP_TIMEOUT (10).
# State: .stack/run/{etcd,tansu,osmem}.{pid,port,log} and .stack/run/etcd/ (data dir).
# tansu and osmem keep everything in memory, so `start` also wipes the etcd data dir to keep the
# registry consistent with the (empty) broker; set LOGINGEST_STACK_KEEP_ETCD_DATA=1 to keep it.
# Servers are started in their own session (setsid) and outlive this script.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
STACK_DIR=$ROOT_DIR/.stack
BIN_DIR=$STACK_DIR/bin
RUN_DIR=$STACK_DIR/run

HOST=127.0.0.1
START_TIMEOUT=${LOGINGEST_STACK_START_TIMEOUT:-30}
STOP_TIMEOUT=${LOGINGEST_STACK_STOP_TIMEOUT:-10}
SERVERS=(etcd tansu osmem)

say() { echo "stack: $*" >&2; }
die() { echo "stack: error: $*" >&2; exit 1; }

# ---- ports ------------------------------------------------------------------------------
check_port_value() {
    case $2 in
        '' | *[!0-9]*) die "$1 must be a port number, got '$2'" ;;
    esac
    [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || die "$1 must be in 1..65535, got '$2'"
}

# A port given in the environment wins; otherwise the port of a running server (recorded at
# start), so that `env`/`status` match a stack started with custom ports; otherwise the default.
resolve_port() { # VAR_NAME SERVER DEFAULT
    local var=$1 server=$2 def=$3 val
    val=${!var:-}
    if [ -z "$val" ] && [ -f "$RUN_DIR/$server.port" ] && server_pid "$server" >/dev/null; then
        val=$(cat "$RUN_DIR/$server.port")
    fi
    val=${val:-$def}
    check_port_value "$var" "$val"
    echo "$val"
}

# ---- processes ----------------------------------------------------------------------------
server_exe() {
    case $1 in
        etcd) command -v etcd || echo /usr/bin/etcd ;;
        tansu) echo "$BIN_DIR/tansu" ;;
        osmem) echo "$BIN_DIR/osmem-server" ;;
    esac
}

# Prints the pid of our running server NAME and succeeds, or fails. "Ours" means: the pid in
# .stack/run/NAME.pid is alive, not a zombie, and runs the expected executable.
server_pid() {
    local name=$1 pidfile=$RUN_DIR/$1.pid pid exe want state
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    [ -d "/proc/$pid" ] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 1
    [ "$state" != Z ] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    want=$(readlink -f "$(server_exe "$name")")
    [ "$exe" = "$want" ] || return 1
    echo "$pid"
}

# Who listens on a TCP port (any address), as printed by ss; empty if nobody.
port_listener() {
    ss -Hltnp "sport = :$1" 2>/dev/null || true
}

port_open() { # PORT: something accepts a TCP connection on 127.0.0.1:PORT
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

ensure_port_free() { # SERVER PORT
    local who
    who=$(port_listener "$2")
    if [ -n "$who" ] || port_open "$2"; then
        die "port $2 (needed by $1) is already in use by a process not started by this script:
${who:-  (something accepts connections on $HOST:$2)}
Stop it, or pick other ports with LOGINGEST_STACK_ETCD_PORT / LOGINGEST_STACK_ETCD_PEER_PORT / LOGINGEST_STACK_KAFKA_PORT / LOGINGEST_STACK_ES_PORT."
    fi
}

# Starts COMMAND... detached (own session, stdin from /dev/null, output to .stack/run/NAME.log)
# with a clean environment (etcd, etcdctl and tansu read configuration from env vars).
launch() { # NAME COMMAND...
    local name=$1
    shift
    local pidfile=$RUN_DIR/$name.pid log=$RUN_DIR/$name.log
    rm -f "$pidfile"
    : >"$log"
    local envv=(PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8)
    [ -z "${RUST_LOG:-}" ] || envv+=(RUST_LOG="$RUST_LOG")
    # shellcheck disable=SC2016 # $$ and $@ are for the inner bash
    env -i "${envv[@]}" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
        </dev/null >>"$log" 2>&1 &
    # The pid file is written by the child before exec; wait for it briefly.
    local _
    for _ in $(seq 1 100); do
        [ -s "$pidfile" ] && return 0
        sleep 0.02
    done
    die "$name: could not record its pid"
}

log_tail() { # NAME
    echo "---- last lines of $RUN_DIR/$1.log ----" >&2
    tail -n 25 "$RUN_DIR/$1.log" >&2 || true
    echo "----" >&2
}

# ---- readiness probes -----------------------------------------------------------------------
probe_etcd() { # PORT
    ETCDCTL_API=3 timeout 5 etcdctl --endpoints "http://$HOST:$1" --dial-timeout=1s \
        --command-timeout=2s endpoint health >/dev/null 2>&1
}
probe_tansu() { # PORT
    # tansu's CLI retries a refused connection for ~25 s, so check the TCP port first.
    port_open "$1" &&
        timeout 5 "$BIN_DIR/tansu" topic list --broker "tcp://$HOST:$1" >/dev/null 2>&1
}
probe_osmem() { # PORT
    curl -fsS -m 2 -o /dev/null "http://$HOST:$1/" 2>/dev/null
}

wait_ready() { # NAME PORT
    local name=$1 port=$2 start now
    start=$(date +%s%N)
    while :; do
        if "probe_$name" "$port"; then
            now=$(date +%s%N)
            say "$name ready on $HOST:$port (pid $(cat "$RUN_DIR/$name.pid"), $(((now - start) / 1000000)) ms)"
            return 0
        fi
        if ! server_pid "$name" >/dev/null; then
            log_tail "$name"
            say "$name exited before it became ready"
            return 1
        fi
        now=$(date +%s%N)
        if [ $(((now - start) / 1000000000)) -ge "$START_TIMEOUT" ]; then
            log_tail "$name"
            say "$name did not answer on $HOST:$port within ${START_TIMEOUT}s"
            return 1
        fi
        sleep 0.1
    done
}

# ---- commands ---------------------------------------------------------------------------------
load_ports() {
    ETCD_PORT=$(resolve_port LOGINGEST_STACK_ETCD_PORT etcd 2379)
    ETCD_PEER_PORT=${LOGINGEST_STACK_ETCD_PEER_PORT:-}
    if [ -z "$ETCD_PEER_PORT" ] && [ -z "${LOGINGEST_STACK_ETCD_PORT:-}" ] &&
        [ -f "$RUN_DIR/etcd.peer-port" ] && server_pid etcd >/dev/null; then
        ETCD_PEER_PORT=$(cat "$RUN_DIR/etcd.peer-port")
    fi
    ETCD_PEER_PORT=${ETCD_PEER_PORT:-$((ETCD_PORT + 1))}
    check_port_value LOGINGEST_STACK_ETCD_PEER_PORT "$ETCD_PEER_PORT"
    KAFKA_PORT=$(resolve_port LOGINGEST_STACK_KAFKA_PORT tansu 9092)
    ES_PORT=$(resolve_port LOGINGEST_STACK_ES_PORT osmem 9200)
}

port_of() {
    case $1 in
        etcd) echo "$ETCD_PORT" ;;
        tansu) echo "$KAFKA_PORT" ;;
        osmem) echo "$ES_PORT" ;;
    esac
}

start_server() { # NAME
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        etcd)
            if [ "${LOGINGEST_STACK_KEEP_ETCD_DATA:-0}" != 1 ]; then
                rm -rf "$RUN_DIR/etcd"
            fi
            echo "$ETCD_PEER_PORT" >"$RUN_DIR/etcd.peer-port"
            launch etcd etcd --name default --data-dir "$RUN_DIR/etcd" \
                --listen-client-urls "http://$HOST:$ETCD_PORT" \
                --advertise-client-urls "http://$HOST:$ETCD_PORT" \
                --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
                --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
                --initial-cluster "default=http://$HOST:$ETCD_PEER_PORT"
            ;;
        tansu)
            launch tansu "$BIN_DIR/tansu" broker \
                --listener-url "tcp://$HOST:$KAFKA_PORT" \
                --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
                --storage-engine memory://tansu/
            ;;
        osmem)
            launch osmem "$BIN_DIR/osmem-server" -addr "$HOST:$ES_PORT" -no-stdin-watch
            ;;
    esac
    echo "$port" >"$RUN_DIR/$name.port"
}

stop_server() { # NAME -> prints nothing and succeeds if it was not running
    local name=$1 pid start
    if ! pid=$(server_pid "$name"); then
        rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.port" "$RUN_DIR/$name.peer-port"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    start=$(date +%s)
    while server_pid "$name" >/dev/null; do
        if [ $(($(date +%s) - start)) -ge "$STOP_TIMEOUT" ]; then
            say "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            local _
            for _ in $(seq 1 50); do
                server_pid "$name" >/dev/null || break
                sleep 0.1
            done
            server_pid "$name" >/dev/null && die "$name (pid $pid) survived SIGKILL"
            break
        fi
        sleep 0.1
    done
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.port" "$RUN_DIR/$name.peer-port"
    say "stopped $name (pid $pid)"
}

cmd_start() {
    # Installer output (only when it installs something) goes to stderr.
    "$SCRIPT_DIR/install-stack.sh" >&2
    mkdir -p "$RUN_DIR"
    load_ports
    local name pid started=() port
    for name in "${SERVERS[@]}"; do
        port=$(port_of "$name")
        if pid=$(server_pid "$name"); then
            if [ "$(cat "$RUN_DIR/$name.port" 2>/dev/null)" != "$port" ]; then
                die "$name is already running (pid $pid) on port $(cat "$RUN_DIR/$name.port" 2>/dev/null || echo '?'), not $port; run '$0 stop' first"
            fi
            say "$name already running (pid $pid) on $HOST:$port"
            continue
        fi
        started+=("$name")
    done
    # Check every port before launching anything, so a conflict leaves nothing half-started.
    for name in "${started[@]}"; do
        case $name in
            etcd)
                ensure_port_free etcd "$ETCD_PORT"
                ensure_port_free "etcd (peer)" "$ETCD_PEER_PORT"
                ;;
            tansu) ensure_port_free tansu "$KAFKA_PORT" ;;
            osmem) ensure_port_free osmem-server "$ES_PORT" ;;
        esac
    done
    for name in "${started[@]}"; do start_server "$name"; done
    for name in "${started[@]}"; do
        if ! wait_ready "$name" "$(port_of "$name")"; then
            say "stopping the servers this run started: ${started[*]}"
            local s
            for s in "${started[@]}"; do stop_server "$s" 2>/dev/null || true; done
            die "$name failed to start (log: $RUN_DIR/$name.log)"
        fi
    done
}

cmd_stop() {
    [ -d "$RUN_DIR" ] || return 0
    local name
    for name in "${SERVERS[@]}"; do stop_server "$name"; done
}

cmd_status() {
    load_ports
    local name pid port ok=0 url
    for name in "${SERVERS[@]}"; do
        port=$(port_of "$name")
        case $name in
            etcd) url="http://$HOST:$port" ;;
            tansu) url="$HOST:$port" ;;
            osmem) url="http://$HOST:$port" ;;
        esac
        if pid=$(server_pid "$name"); then
            if "probe_$name" "$port"; then
                echo "$name: running (pid $pid) on $url, answering"
            else
                echo "$name: running (pid $pid) on $url, NOT answering"
                ok=1
            fi
        else
            echo "$name: stopped"
            ok=1
        fi
    done
    return $ok
}

cmd_env() {
    load_ports
    echo "export LOGINGEST_ETCD_ENDPOINTS=http://$HOST:$ETCD_PORT"
    echo "export LOGINGEST_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
    echo "export LOGINGEST_ES_URL=http://$HOST:$ES_PORT"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
