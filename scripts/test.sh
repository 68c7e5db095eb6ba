#!/usr/bin/env bash
# Full local/CI check: formatting, clippy, then the whole test suite against
# SQLite and PostgreSQL.
#
# S3: the attachment tests also run against a throwaway s3s-fs server on a free
# 127.0.0.1 port (scripts/s3-throwaway.sh), unless PARLEY_TEST_S3_ENDPOINT names
# one already (with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or is set to `off`.
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

# shellcheck source=scripts/pg-throwaway.sh
source scripts/pg-throwaway.sh
# shellcheck source=scripts/s3-throwaway.sh
source scripts/s3-throwaway.sh
cleanup() {
    s3_throwaway_stop
    pg_throwaway_stop
}
if [[ -z ${PARLEY_TEST_POSTGRES_URL:-} ]]; then
    pg_throwaway_start # sets traps that stop the cluster on exit
fi
# One EXIT trap for both servers (pg_throwaway_start set its own, for the cluster).
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
if [[ ${PARLEY_TEST_S3_ENDPOINT:-} == off ]]; then
    unset PARLEY_TEST_S3_ENDPOINT
elif [[ -z ${PARLEY_TEST_S3_ENDPOINT:-} ]]; then
    s3_throwaway_start
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
