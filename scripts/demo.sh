#!/usr/bin/env bash
# One command on a fresh machine: installs the local stack, builds logingest,
# starts etcd + Kafka (tansu) + Elasticsearch API (osmem-server) on loopback,
# registers a demo topic in etcd, produces sample log lines, runs logingest
# in the background and shows the documents arriving.
#
#   scripts/demo.sh          # start everything (idempotent)
#   scripts/demo.sh stop     # stop logingest and the stack
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.stack/run
PIDFILE=$RUN/logingest.pid

stop_logingest() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill -TERM "$(cat "$PIDFILE")"
        for _ in $(seq 1 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
        echo "demo: stopped logingest"
    fi
    rm -f "$PIDFILE"
}

if [ "${1:-}" = "stop" ]; then
    stop_logingest
    scripts/stack.sh stop
    exit 0
fi

scripts/install-stack.sh
echo "demo: building logingest (release)"
cargo build --release --quiet --bin logingest --example produce
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
export ETCDCTL_API=3
TANSU=.stack/bin/tansu
BIN=target/release/logingest

"$TANSU" topic create --broker "tcp://$LOGINGEST_KAFKA_BROKERS" --partitions 2 demo >/dev/null 2>&1 || true
"$TANSU" topic create --broker "tcp://$LOGINGEST_KAFKA_BROKERS" --partitions 2 app >/dev/null 2>&1 || true
# The demo topic's lines are nginx access-log lines: its registry value
# carries a VRL program (deploy/transforms/nginx.vrl) that parses them into
# typed fields. `topics add` compiles it before writing; the same value can be
# put with etcdctl:
#   etcdctl put /logingest/topics/demo '{"index": "demo-logs", "transform": ". = merge(., parse_nginx_log!(.message, \"combined\"))"}'
"$BIN" topics add demo --index demo-logs --transform-file deploy/transforms/nginx.vrl
echo "demo: registered topic demo in etcd: $(etcdctl --endpoints "$LOGINGEST_ETCD_ENDPOINTS" get --print-value-only /logingest/topics/demo | head -c 120)..."
target/release/examples/produce --brokers "$LOGINGEST_KAFKA_BROKERS" --topic demo --count 1000 --partitions 2

stop_logingest
mkdir -p "$RUN"
setsid "$BIN" run --config deploy/local.toml >"$RUN/logingest.log" 2>&1 < /dev/null &
echo $! >"$PIDFILE"
echo "demo: logingest running (pid $(cat "$PIDFILE")), log in $RUN/logingest.log"

count() { curl -s "$LOGINGEST_ES_URL/demo-logs/_count" | sed -n 's/.*"count":\([0-9]*\).*/\1/p'; }
for _ in $(seq 1 60); do
    n=$(count); echo "demo: demo-logs holds ${n:-0} documents"
    [ "${n:-0}" -ge 1000 ] && break
    sleep 1
done
[ "$(count)" -ge 1000 ] || { echo "demo: documents did not arrive; see $RUN/logingest.log" >&2; exit 1; }

echo
echo "demo: one document (parsed by the topic's transform):"
curl -s "$LOGINGEST_ES_URL/demo-logs/_search?size=1&q=status:200" ; echo
echo
echo "demo: server errors, searched by status code (a number, not text):"
"$BIN" search demo 'status:>=500' --limit 3 --fields status,request
echo
cat <<MSG
Try it while it runs:
  export ETCDCTL_API=3 $(scripts/stack.sh env | tr '\n' ' ' | sed 's/export //g')
  # search (by status code: the transform made it a number), follow live
  $BIN search demo 'status:404' --limit 3
  curl -s "\$LOGINGEST_ES_URL/demo-logs/_count?q=status:%3E%3D500"
  $BIN tail demo -f
  # try a program on sample lines before putting it into etcd
  head -3 deploy/transforms/sample-nginx.log | $BIN transform test --file deploy/transforms/nginx.vrl --pretty
  # add a topic live (it is indexed within a second of its assignment)
  etcdctl --endpoints \$LOGINGEST_ETCD_ENDPOINTS put /logingest/topics/app ''
  target/release/examples/produce --brokers \$LOGINGEST_KAFKA_BROKERS --topic app --count 100
  curl -s "\$LOGINGEST_ES_URL/app/_count"
  # or the same with the CLI
  $BIN topics ls ; $BIN topics rm app
  # metrics and health
  curl -s 127.0.0.1:9464/metrics | grep logingest_documents
Stop everything: scripts/demo.sh stop
MSG
