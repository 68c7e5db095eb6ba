#!/usr/bin/env bash
# What clients notice of `parley projections rebuild --all` on PostgreSQL: sendMessage
# latency at a steady rate (parley-load send, open loop) while the rebuild runs, against
# the same load on the same server just before it, in the same run.
#
#   scripts/bench-serving-rebuild.sh                  # a 100,000-message log
#   BENCH_MESSAGES=500000 BENCH_RATE=200 scripts/bench-serving-rebuild.sh
#
# A sendMessage answers once every read model shows the message (read-your-writes), so
# its latency is also how far the live projectors fall behind while the rebuild runs.
# PostgreSQL: PARLEY_BENCH_POSTGRES_URL when set, otherwise a throwaway cluster.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
messages=${BENCH_MESSAGES:-100000}
rate=${BENCH_RATE:-100}
secs=${BENCH_SECS:-40}
bench_setup
work=$(mktemp -d)
name=parley_serving_bench_$$
server=""
cleanup() {
    if [[ -n $server ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    psql "$PARLEY_BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
    if declare -F pg_throwaway_stop >/dev/null; then pg_throwaway_stop; fi
}
trap cleanup EXIT INT TERM

export PARLEY_LOG=warn

psql "$PARLEY_BENCH_POSTGRES_URL" -qc "CREATE DATABASE $name" >/dev/null
db=${PARLEY_BENCH_POSTGRES_URL%/*}/$name
echo "== seeding $messages messages" >&2
PARLEY_DATABASE_URL=$db PARLEY_DATA_DIR=$work "$parley" seed --users 2000 --conversations 4000 --messages "$messages" --seed 1 >&2
events=$(psql "$db" -Atc "SELECT count(*) FROM events")

bench_serve "$work" "$db"

# send LABEL: the load for $secs s; with a second argument, a rebuild --all starts once
# the measured part has begun, and its duration is printed.
send() {
    "$load" send --url "$url" --senders 8 --rate "$rate" --duration "$secs" --warmup 2 \
        --json "$work/$1.json" >"$work/$1.log" 2>&1 &
    local client=$!
    if [[ -n ${2:-} ]]; then
        until grep -q '^sending for' "$work/$1.log"; do sleep 0.1; done
        sleep 5 # the warm-up, and a few measured seconds before the rebuild
        local began ended
        began=$(date +%s.%N)
        PARLEY_DATABASE_URL=$db PARLEY_DATA_DIR=$work "$parley" projections rebuild --all >&2
        ended=$(date +%s.%N)
        python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$began" "$ended" >"$work/rebuild_s"
    fi
    wait "$client"
}
echo "== $rate msg/s for $secs s, no rebuild" >&2
send baseline
echo "== $rate msg/s for $secs s, rebuild --all over $events events meanwhile" >&2
send rebuilding yes

python3 - "$work" "$rate" "$events" "$(cat "$work/rebuild_s")" <<'PY'
import json, sys
work, rate, events, rebuild_s = sys.argv[1:]
fig = lambda label, name: json.load(open(f"{work}/{label}.json"))["figures"][name]["value"]
print()
print("| sendMessage at %s msg/s, PostgreSQL | p50 | p99 | max | errors |" % rate)
print("|---|---|---|---|---|")
for label, title in [("baseline", "no rebuild"), ("rebuilding", f"during rebuild --all ({events} events, {rebuild_s} s)")]:
    print(f"| {title} | {fig(label,'send_p50'):.1f} ms | {fig(label,'send_p99'):.1f} ms | {fig(label,'send_max'):.1f} ms | {fig(label,'errors'):.0f} |")
print(f"| ratio during / before | {fig('rebuilding','send_p50')/fig('baseline','send_p50'):.2f} | {fig('rebuilding','send_p99')/fig('baseline','send_p99'):.2f} | {fig('rebuilding','send_max')/fig('baseline','send_max'):.2f} | |")
PY
