#!/usr/bin/env bash
# What the benchmark scripts (bench.sh, bench-rebuild.sh, bench-serving-rebuild.sh)
# share, sourced by each. `bench_setup` builds Parley and parley-load in release and
# sets $root, $parley, $load and the $port and $url a server of `bench_serve` answers
# on; points PARLEY_BENCH_POSTGRES_URL at a throwaway
# cluster (stopped on exit) unless it is set; and clears every other PARLEY_* variable,
# since the server and the CLI read them too and only the script's own flags should
# count.

bench_setup() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    root=$PWD
    local target=${CARGO_TARGET_DIR:-$root/target}
    cargo build --release -j2 -p parley -p parley-load
    parley=$target/release/parley
    load=$target/release/parley-load
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    url=http://127.0.0.1:$port

    if [[ -z ${PARLEY_BENCH_POSTGRES_URL:-} ]]; then
        # shellcheck source=scripts/pg-throwaway.sh
        source scripts/pg-throwaway.sh
        pg_throwaway_start # sets traps that stop the cluster on exit
        PARLEY_BENCH_POSTGRES_URL=$PARLEY_TEST_POSTGRES_URL
    fi
    local var
    while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(PARLEY_[A-Z_]*\)=.*/\1/p' | grep -v '^PARLEY_BENCH_POSTGRES_URL$')
}

# bench_serve DATA_DIR DATABASE_URL: starts `parley serve` with the benchmarks' settings
# (no rate limits, long-lived tokens), its log in DATA_DIR/server.log; sets $server and
# returns once it answers, or exits with its log.
bench_serve() {
    "$parley" serve --listen "127.0.0.1:$port" --data-dir "$1" --database-url "$2" \
        --jwt-secret bench-secret-0123456789abcdef-0123456789abcdef \
        --rate-limits off --max-connections-per-user 5000 --access-token-ttl 86400 \
        --log warn >"$1/server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do
        if curl -fs "$url/healthz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "the server did not come up; its log:" >&2
    cat "$1/server.log" >&2
    exit 1
}
