#!/usr/bin/env bash
# Throwaway S3 server (s3s-fs) for the attachment tests.
#
# Sourced by scripts/test.sh, which calls `s3_throwaway_start` and, on exit,
# `s3_throwaway_stop`. Start builds s3s-fs once into a tool cache outside the
# clone (PARLEY_TOOLS_DIR, default /var/tmp/parley-tools; reused when the binary
# is there), serves a temporary directory on a free 127.0.0.1 port with fresh
# credentials, and exports
#   PARLEY_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
# s3s-fs checks SigV4 signatures, so presigned URLs are really verified.
# Stop ends that server by its PID and removes the directory.

S3_THROWAWAY_DIR=""
S3_THROWAWAY_PID=""
S3S_FS_VERSION=0.14.1

_s3_throwaway_log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Prints a free TCP port on 127.0.0.1.
_s3_throwaway_free_port() {
    local port i
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 30000))
        # A refused connection means nobody listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

s3_throwaway_stop() {
    if [[ -n $S3_THROWAWAY_PID ]]; then
        kill "$S3_THROWAWAY_PID" 2>/dev/null || true
        wait "$S3_THROWAWAY_PID" 2>/dev/null || true
        S3_THROWAWAY_PID=""
    fi
    if [[ -n $S3_THROWAWAY_DIR ]]; then
        rm -rf -- "$S3_THROWAWAY_DIR" 2>/dev/null || true
        S3_THROWAWAY_DIR=""
    fi
}

s3_throwaway_start() {
    local tools bin port attempt key secret
    tools=${PARLEY_TOOLS_DIR:-/var/tmp/parley-tools}
    bin=$tools/bin/s3s-fs
    if [[ ! -x $bin ]] || ! "$bin" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
        _s3_throwaway_log "building s3s-fs $S3S_FS_VERSION into $tools (once)"
        cargo install --locked "s3s-fs@$S3S_FS_VERSION" --features binary --root "$tools" >&2
    fi
    S3_THROWAWAY_DIR=$(mktemp -d "${TMPDIR:-/tmp}/parley-s3.XXXXXX")
    key=parley$RANDOM$RANDOM
    secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    for attempt in 1 2 3 4 5; do
        port=$(_s3_throwaway_free_port) || return 1
        "$bin" --host 127.0.0.1 --port "$port" --access-key "$key" --secret-key "$secret" \
            "$S3_THROWAWAY_DIR" >"$S3_THROWAWAY_DIR.log" 2>&1 &
        S3_THROWAWAY_PID=$!
        for _ in $(seq 1 50); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                export PARLEY_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
                export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret
                export AWS_REGION=us-east-1
                _s3_throwaway_log "s3s-fs $S3S_FS_VERSION on 127.0.0.1:$port, data in $S3_THROWAWAY_DIR"
                rm -f -- "$S3_THROWAWAY_DIR.log"
                return 0
            fi
            kill -0 "$S3_THROWAWAY_PID" 2>/dev/null || break
            sleep 0.1
        done
        # It died (the port was taken in between) or never answered: try another port.
        kill "$S3_THROWAWAY_PID" 2>/dev/null || true
        wait "$S3_THROWAWAY_PID" 2>/dev/null || true
        S3_THROWAWAY_PID=""
        _s3_throwaway_log "s3s-fs did not start (attempt $attempt): $(tail -n 3 "$S3_THROWAWAY_DIR.log" 2>/dev/null)"
    done
    rm -f -- "$S3_THROWAWAY_DIR.log"
    return 1
}
