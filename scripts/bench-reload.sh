#!/usr/bin/env bash
# Reload benchmark (issue 3): registry put -> first document searchable, its
# own part (apply + first ack) and broker share, registry del -> tasks
# stopped, and the worst pause of a steady topic meanwhile. Each run starts a
# private etcd, tansu and osmem-server on free loopback ports and the release
# logingest binary; prints a table of p50/p95/max.
#
#   scripts/bench-reload.sh             # 20 add/remove cycles (a few minutes: ~5 s broker rounds)
#   RUNS=5 scripts/bench-reload.sh      # fewer cycles
#   KAFKA_OPTIONS="fetch.wait.max.ms=100" scripts/bench-reload.sh   # extra librdkafka properties
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-stack.sh
export RUNS=${RUNS:-20}
echo "bench-reload: RUNS=$RUNS cargo bench --bench reload"
exec cargo bench --bench reload
