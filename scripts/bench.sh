#!/usr/bin/env bash
# Every row of the performance table in one run: builds Parley and parley-load in
# release, starts a fresh server per scenario on the embedded SQLite default and on
# PostgreSQL, drives it with parley-load, and prints the table with each figure's ratio.
#
#   scripts/bench.sh            # all rows, about 15 minutes after the build
#   BENCH_SECS=10 scripts/bench.sh
#
# PostgreSQL: PARLEY_BENCH_POSTGRES_URL (a server URL whose role may CREATE DATABASE)
# when set; otherwise a throwaway cluster, as the test suite starts one. Reports (JSON)
# and latency plots (SVG) go to BENCH_OUT (default target/bench).
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
secs=${BENCH_SECS:-20}
bench_setup
out=${BENCH_OUT:-$root/target/bench}
mkdir -p "$out"
work=$(mktemp -d)
server=""
pg_name="" # the PostgreSQL database of the running scenario, dropped with it
stop_server() {
    if [[ -n $server ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
    if [[ -n $pg_name ]]; then
        psql "$PARLEY_BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $pg_name WITH (FORCE)" >/dev/null || true
        pg_name=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
    if declare -F pg_throwaway_stop >/dev/null; then pg_throwaway_stop; fi
}
trap cleanup EXIT INT TERM


run=0

# start_server sqlite|postgres: a fresh database each time; sets $server and $db.
start_server() {
    run=$((run + 1))
    local data=$work/run$run
    mkdir -p "$data"
    if [[ $1 == sqlite ]]; then
        db="sqlite://$data/parley.db?mode=rwc"
    else
        pg_name=parley_bench_$$_$run
        psql "$PARLEY_BENCH_POSTGRES_URL" -qc "CREATE DATABASE $pg_name" >/dev/null
        db=${PARLEY_BENCH_POSTGRES_URL%/*}/$pg_name
    fi
    bench_serve "$data" "$db"
}

figure() { # figure FILE NAME [ratio]: a figure of a report, or its ratio
    python3 - "$1" "$2" "${3:-value}" <<'EOF'
import json, sys
fig = json.load(open(sys.argv[1]))["figures"][sys.argv[2]]
print(fig.get(sys.argv[3], float("nan")) if sys.argv[3] == "ratio" else fig["value"])
EOF
}

for backend in postgres sqlite; do
    start_server "$backend"
    ceiling=${db%%\?*}
    "$load" send --url "$url" --server-pid "$server" --senders 32 --duration "$secs" \
        --ceiling-db "$ceiling" --idle-secs 1 \
        --json "$out/send-$backend.json" --plot "$out/send-$backend.svg"
    half=$(python3 -c "print(max(1, round($(figure "$out/send-$backend.json" throughput) / 2)))")
    "$load" send --url "$url" --server-pid "$server" --senders 32 --rate "$half" \
        --duration "$secs" --idle-secs 1 \
        --json "$out/half-$backend.json" --plot "$out/half-$backend.svg"
    stop_server
done

start_server postgres
"$load" fanout --url "$url" --server-pid "$server" --subscribers 1000 --users 10 \
    --interval-ms 100 --compare-baseline --duration "$secs" --idle-secs 1 \
    --json "$out/fanout.json" --plot "$out/fanout.svg"
stop_server

start_server postgres
"$load" deliveries --url "$url" --server-pid "$server" --conversations 10 --subscribers 100 \
    --users 10 --duration "$secs" --idle-secs 1 --json "$out/deliveries.json"
stop_server

# A cold post into 10 vs BENCH_HISTORY (default 1,000,000) messages of history, on
# both backends; most of its time is writing the long history.
PARLEY_BENCH_POSTGRES_URL=$PARLEY_BENCH_POSTGRES_URL cargo bench -j2 --bench history \
    | tee "$out/history.txt"

start_server sqlite
"$load" registrations --url "$url" --server-pid "$server" --count 40 --idle-secs 10 \
    --json "$out/registrations.json"
stop_server

python3 - "$out" <<'EOF'
import json, sys, os
out = sys.argv[1]
def r(name):
    return json.load(open(os.path.join(out, name + ".json")))["figures"]
def v(figs, key):
    return figs[key]["value"]
def ratio(figs, key):
    return figs[key].get("ratio", float("nan"))
rows = []
for backend, label in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
    s = r("send-" + backend)
    rows.append((f"sendMessage, 32 closed-loop clients, {label}",
                 f"{v(s,'throughput'):.0f} msg/s vs ceiling {v(s,'ceiling_tx_per_s'):.0f} tx/s; "
                 f"p50 {v(s,'send_p50'):.1f} ms, p99 {v(s,'send_p99'):.1f} ms",
                 f"{ratio(s,'throughput'):.3f}"))
    h = r("half-" + backend)
    rows.append((f"sendMessage p99 at half that rate, {label}",
                 f"{v(h,'target_rate'):.0f} msg/s offered: p50 {v(h,'send_p50'):.1f} ms, p99 {v(h,'send_p99'):.1f} ms",
                 "target p99 ≤ 20 ms"))
f = r("fanout")
rows.append(("delivery to 1,000 subscribers, PostgreSQL, 1 msg/100 ms",
             f"p50 {v(f,'delivery_p50'):.1f} ms, p99 {v(f,'delivery_p99'):.1f} ms "
             f"(1 subscriber: p50 {v(f,'baseline_delivery_p50'):.1f} ms, p99 {v(f,'baseline_delivery_p99'):.1f} ms)",
             f"{ratio(f,'delivery_p99'):.2f} (p99 vs 1 subscriber)"))
rows.append(("memory per subscribed WebSocket",
             f"{v(f,'memory_per_socket'):.1f} KiB", "—"))
d = r("deliveries")
rows.append(("deliveries per second, one node, PostgreSQL",
             f"{v(d,'deliveries_per_s'):.0f}/s over {v(d,'sockets'):.0f} sockets", "—"))
g = r("registrations")
rows.append(("RSS, 40 concurrent registrations",
             f"idle {v(g,'rss_idle_before'):.0f} MiB, peak {v(g,'rss_peak'):.0f} MiB, "
             f"after idling {v(g,'rss_after_idle'):.0f} MiB", "—"))
for line in open(os.path.join(out, "history.txt")):
    parts = line.split()
    if len(parts) >= 13 and parts[1:3] == ["cold", "post,"]:
        label = "PostgreSQL" if parts[0] == "postgres" else "SQLite"
        rows.append((f"cold post, 10 vs {int(parts[7]):,} messages of history, {label}",
                     f"{parts[5]} ms vs {parts[9]} ms", parts[12]))
print("\n| figure | measured | ratio |\n|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
EOF
