#!/usr/bin/env bash
# What the benchmark scripts (bench.sh, bench-rebuild.sh, bench-serving-rebuild.sh)
# share, sourced by each. `bench_setup` builds Parley and parley-load in release and
# sets $root, $parley and $load; points PARLEY_BENCH_POSTGRES_URL at a throwaway
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

    if [[ -z ${PARLEY_BENCH_POSTGRES_URL:-} ]]; then
        # shellcheck source=scripts/pg-throwaway.sh
        source scripts/pg-throwaway.sh
        pg_throwaway_start # sets traps that stop the cluster on exit
        PARLEY_BENCH_POSTGRES_URL=$PARLEY_TEST_POSTGRES_URL
    fi
    local var
    while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(PARLEY_[A-Z_]*\)=.*/\1/p' | grep -v '^PARLEY_BENCH_POSTGRES_URL$')
}
