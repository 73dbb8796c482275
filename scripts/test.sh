#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the whole test suite against
# real local servers (each test starts its own etcd, tansu and osmem-server on
# free loopback ports). This is what CI runs (.ci/run).
#
#   scripts/test.sh            # lint + unit + integration tests
#   LOGINGEST_FULL=1 scripts/test.sh   # fault tests with their full counts
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-stack.sh
if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "test: installing cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --quiet --all-targets -- -D warnings
echo "test: cargo nextest run"
cargo nextest run --profile ci "$@"
