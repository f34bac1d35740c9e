#!/usr/bin/env bash
# The cache's reconnect lag towards the DB (restore to the DB's first arrival, as `chaos outage
# db --json` reports it) over OUTAGES outages of 10 s, under a herd in which every request misses
# (200/s, unique keys), for each backoff `INITIAL,MAX` given (`--db-reconnect-initial`, `-max`;
# by default gRPC's own, 1s,120s, and the stack's, 100ms,1s), each on a fresh stack. Prints every
# lag, then the median and the maximum.
#   benchmarks/reconnect_lag.sh [OUTAGES] [INITIAL,MAX ...]    e.g. 6 1s,120s 100ms,1s
set -euo pipefail
chaos=${CHAOS:-.venv/bin/chaos}
outages=${1:-6}
shift || true
HERDLAB_STATE_DIR=$(mktemp -d)
export HERDLAB_STATE_DIR
trap '"$chaos" down >/dev/null 2>&1 || true; rm -rf "$HERDLAB_STATE_DIR"' EXIT
[ $# -gt 0 ] || set -- 1s,120s 100ms,1s
for backoff in "$@"; do
    "$chaos" up "--cache-arg=--db-reconnect-initial=${backoff%,*}" \
        "--cache-arg=--db-reconnect-max=${backoff#*,}" >/dev/null
    "$chaos" herd --rate 200/s --duration "$((outages * 25 + 10))s" --keys 1000000 \
        --distribution unique --json >/dev/null 2>&1 &
    herd=$!
    sleep 3
    lags=()
    for _ in $(seq "$outages"); do
        lag=$("$chaos" outage db --for 10s --json | python3 -c \
            'import json, sys; print(json.load(sys.stdin)["reconnect_lag_s"])')
        lags+=("$lag")
        sleep 3
    done
    kill "$herd" 2>/dev/null || true
    wait "$herd" 2>/dev/null || true
    "$chaos" down >/dev/null
    python3 - "$backoff" "${lags[@]}" <<'PY'
import statistics, sys
name, lags = sys.argv[1], [float(x) for x in sys.argv[2:] if x != "None"]
print(f"{name}: lags {sys.argv[2:]} median {statistics.median(lags):.2f}s max {max(lags):.2f}s")
PY
done
