#!/usr/bin/env bash
# Full local/CI check: formatting, clippy, then the whole test suite against
# SQLite and PostgreSQL.
#
# PostgreSQL: if PARLEY_TEST_POSTGRES_URL is set (a server URL such as
# postgres://USER@HOST:PORT/postgres whose role may CREATE DATABASE), it is used
# as is. Otherwise a throwaway cluster is started on a free 127.0.0.1 port and
# removed again when this script exits (see scripts/pg-throwaway.sh).
#
# Extra arguments are passed to the test runner (cargo nextest run, or
# cargo test if cargo-nextest is not installed).
set -euo pipefail

cd "$(dirname "$0")/.."

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -j2 -- -D warnings

if [[ -z ${PARLEY_TEST_POSTGRES_URL:-} ]]; then
    # shellcheck source=scripts/pg-throwaway.sh
    source scripts/pg-throwaway.sh
    pg_throwaway_start # sets traps that stop the cluster on exit
fi
export PARLEY_TEST_POSTGRES_URL
export PARLEY_TEST_BACKENDS=sqlite,postgres

status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace -j2 --no-fail-fast "$@" || status=$?
else
    cargo test --workspace -j2 --no-fail-fast "$@" || status=$?
fi

# Interoperability with the reference JavaScript client (graphql-ws under Node).
cargo build -j2 --bin parley
scripts/js-interop.sh "${CARGO_TARGET_DIR:-target}/debug/parley" || status=$?
exit "$status"
