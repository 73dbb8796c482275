#!/usr/bin/env bash
# Throughput benchmark: logingest draining a Kafka backlog into the search
# server, next to the search server's own ceiling on this machine.
#
#   scripts/bench-throughput.sh                 # 100 000 lines of 200 B, 4 partitions
#   LINES=300000 SIZE=500 PARTITIONS=8 scripts/bench-throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-stack.sh
exec cargo bench --quiet --bench throughput
