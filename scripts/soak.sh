#!/usr/bin/env bash
# Soak run with faults (issue 4): steady load on 4 topics while the
# Elasticsearch link misbehaves and logingest is killed and restarted; prints
# documents produced, indexed, dead-lettered, missing, extra and redelivered
# (writes of an _id beyond its first, from Elasticsearch's _version).
#
#   scripts/soak.sh                 # 10 minutes
#   DURATION=120 scripts/soak.sh    # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-stack.sh
exec cargo bench --quiet --bench soak
