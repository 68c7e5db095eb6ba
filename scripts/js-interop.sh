#!/usr/bin/env bash
# Interoperability with the reference JavaScript GraphQL-over-WebSocket client.
#
# Starts the given Parley binary on a throwaway data directory and a free
# 127.0.0.1 port, then runs tests/js/interop.mjs under Node with the npm package
# `graphql-ws` (protocol graphql-transport-ws). That proves an unmodified
# third-party client gets live `conversationEvents`, resumes by cursor after a
# disconnect with nothing lost or repeated (then continues live), and sees close
# code 4403 for a bad token. Then the GraphQL-over-HTTP specification's own audit
# (graphql-http's `serverAudits`) checks the HTTP transport; every MUST must pass.
# Rate limits are off: the interop test posts faster than any person would.
#
# Usage: scripts/js-interop.sh PATH_TO_PARLEY_BINARY
# Needs node (>= 20) and npm; the npm registry must be reachable for `npm ci`.
# Exits with the test's status.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH_TO_PARLEY_BINARY" >&2
    exit 2
fi
binary=$1
if [[ ! -x $binary ]]; then
    echo "js-interop: $binary is not an executable file (build it with: cargo build --bin parley)" >&2
    exit 2
fi
case $binary in
    /*) ;;
    *) binary="$PWD/$binary" ;;
esac

cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "js-interop: node/npm missing; installing them with apt-get" >&2
        apt-get install -y nodejs npm >&2
    fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "js-interop: node and npm are required (Node 20 or newer); install them and retry" >&2
    exit 1
fi

(cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/parley-js-interop.XXXXXX")
server_pid=

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$data_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

port=$(node -e '
const server = require("net").createServer();
server.listen(0, "127.0.0.1", () => {
    console.log(server.address().port);
    server.close();
});')
base="http://127.0.0.1:$port"

PARLEY_DATA_DIR="$data_dir" \
    PARLEY_LISTEN="127.0.0.1:$port" \
    PARLEY_LOG=warn \
    PARLEY_RATE_LIMITS=off \
    PARLEY_JWT_SECRET=js-interop-test-secret-0123456789abcdefgh \
    "$binary" serve &
server_pid=$!

ready() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$base/readyz" 2>/dev/null
    else
        node -e '
fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
    .then((response) => process.exit(response.ok ? 0 : 1), () => process.exit(1));
' "$base/readyz"
    fi
}

deadline=$((SECONDS + 60))
until ready; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        wait "$server_pid" && server_status=0 || server_status=$?
        server_pid=
        echo "js-interop: parley exited (status $server_status) before becoming ready" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "js-interop: parley not ready on $base/readyz after 60 s" >&2
        exit 1
    fi
    sleep 0.2
done

status=0
node tests/js/interop.mjs "$base" || status=$?
node tests/js/audit.mjs "$base" || status=$?
exit "$status"
