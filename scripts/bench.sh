#!/usr/bin/env bash
# The benchmark of issue 11: in one run on the local stack (private etcd,
# tansu and osmem-server on free ports), side by side:
#   floor         a bare Rust consumer with logingest's librdkafka settings, reading only
#   instant       logingest -> an instantly-answering, honest _bulk endpoint
#   osmem-direct  osmem-server fed directly with the documents logingest writes
#   osmem         logingest -> osmem-server
#   p64           logingest -> instant endpoint, 64 partitions
#   x5            logingest -> instant endpoint, a backlog 5x larger
#   otlp          logingest -> instant endpoint, format otlp_json (OTLP/JSON requests of one
#                 log record each), not in the default selection:
#                 LINES=200000 ROWS=instant,otlp scripts/bench.sh
# and prints a table (docs/s overall and after the first document, CPU
# seconds and µs per document of the measured process, peak RSS, documents
# per request, bytes sent, the sink's and the broker's CPU), the ratios and
# the issue's targets. Release build; logs and configs in target/bench-logs.
#
#   scripts/bench.sh                                  # 1 000 000 lines of 200 B, 4 partitions, every row
#   LINES=100000 ROWS=floor,instant scripts/bench.sh  # a quick run
#   LINES=300000 SIZE=500 PARTITIONS=8 OSMEM_LINES=50000 scripts/bench.sh
#   REPEAT=3 ROWS=floor,instant scripts/bench.sh      # 3 rounds, medians and spread
#   EXTRA_TOML=$'[batch]\nmax_documents = 5000' ROWS=instant scripts/bench.sh
#   PERF=instant ROWS=instant scripts/bench.sh        # perf record of logingest in that row
#   PERF_ARGS='-F 999 --call-graph dwarf' ...        # (callers through DWARF unwinding)
# Other knobs: X5 (5), P64 (64), ROW_TIMEOUT (900 s), DIRECT_BATCH (2000),
# DIRECT_CONCURRENCY (8), RUST_LOG of logingest (info), BENCH_LOG_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-stack.sh
exec cargo bench --quiet --bench bench
