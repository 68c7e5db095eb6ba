#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the test suite.
#
# Sourced by scripts/test.sh, which calls `pg_throwaway_start`. That function
# creates a temporary cluster on a free 127.0.0.1 port, installs EXIT/INT/TERM/
# HUP traps that stop it again, and exports
#   PARLEY_TEST_POSTGRES_URL=postgres://parley@127.0.0.1:PORT/postgres
# (trust auth; `parley` is the bootstrap superuser).
#
# Can also be run directly to wrap a command:
#   scripts/pg-throwaway.sh sh -c 'psql "$PARLEY_TEST_POSTGRES_URL" -c "select 1"'
# The cluster is stopped and its directory removed when the command exits.
#
# When run as root, initdb/postgres (which refuse to run as root) are run as
# the `postgres` system user, or as a `parleytest` system user created on demand.

# Set by pg_throwaway_start; read by pg_throwaway_stop.
PG_THROWAWAY_DIR=""
PG_THROWAWAY_USER=""
PG_THROWAWAY_PG_CTL=""

_pg_throwaway_log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Sets PG_THROWAWAY_BINDIR to a directory holding initdb and pg_ctl
# (PATH first, then the highest /usr/lib/postgresql/*/bin). Returns 1 if none.
_pg_throwaway_find_bins() {
    local initdb pg_ctl dir
    PG_THROWAWAY_BINDIR=""
    initdb=$(command -v initdb 2>/dev/null || true)
    pg_ctl=$(command -v pg_ctl 2>/dev/null || true)
    if [[ -n $initdb && -n $pg_ctl ]]; then
        # Use the directory of the real pg_ctl so initdb/pg_ctl/postgres match.
        dir=$(dirname "$(readlink -f "$pg_ctl")")
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            PG_THROWAWAY_BINDIR=$dir
        else
            PG_THROWAWAY_BINDIR=$(dirname "$pg_ctl")
        fi
        return 0
    fi
    while IFS= read -r dir; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            PG_THROWAWAY_BINDIR=$dir
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    return 1
}

# Runs a command as the cluster owner (only differs from "$@" when root).
_pg_throwaway_as_owner() {
    if [[ -n $PG_THROWAWAY_USER ]]; then
        (cd / && runuser -u "$PG_THROWAWAY_USER" -- "$@")
    else
        "$@"
    fi
}

# Prints a free TCP port on 127.0.0.1 (never 5432).
_pg_throwaway_free_port() {
    local port i
    if command -v python3 >/dev/null 2>&1 &&
        port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null) && [[ $port =~ ^[0-9]+$ && $port != 5432 ]]; then
        echo "$port"
        return 0
    fi
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

pg_throwaway_stop() {
    local dir=$PG_THROWAWAY_DIR pid
    [[ -n $dir ]] || return 0
    PG_THROWAWAY_DIR=""
    if [[ -f $dir/data/postmaster.pid ]]; then
        _pg_throwaway_as_owner "$PG_THROWAWAY_PG_CTL" -D "$dir/data" \
            -m immediate -w stop >/dev/null 2>&1 || true
        # Fallback: if our postmaster is still there, kill it by its pid.
        if [[ -f $dir/data/postmaster.pid ]]; then
            pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null || true)
            if [[ $pid =~ ^[0-9]+$ ]]; then
                kill -KILL "$pid" 2>/dev/null || true
                sleep 1
            fi
        fi
    fi
    rm -rf -- "$dir" 2>/dev/null || true
}

pg_throwaway_start() {
    local base dir port attempt opts
    if ! _pg_throwaway_find_bins; then
        if [[ $EUID -eq 0 ]]; then
            _pg_throwaway_log "PostgreSQL server binaries not found; installing the postgresql package"
            apt-get update >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
        fi
        if ! _pg_throwaway_find_bins; then
            _pg_throwaway_log "error: PostgreSQL server binaries (initdb, pg_ctl) not found in PATH or /usr/lib/postgresql/*/bin."
            _pg_throwaway_log "Install PostgreSQL (e.g. 'apt-get install postgresql') or set PARLEY_TEST_POSTGRES_URL to a server URL whose role may CREATE DATABASE."
            return 1
        fi
    fi
    PG_THROWAWAY_PG_CTL=$PG_THROWAWAY_BINDIR/pg_ctl

    PG_THROWAWAY_USER=""
    if [[ $EUID -eq 0 ]]; then
        if id -u postgres >/dev/null 2>&1; then
            PG_THROWAWAY_USER=postgres
        else
            id -u parleytest >/dev/null 2>&1 ||
                useradd -r -M -d /nonexistent -s /usr/sbin/nologin parleytest
            PG_THROWAWAY_USER=parleytest
        fi
    fi

    # From here on the traps clean up whatever has been created so far.
    trap pg_throwaway_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    # The path goes into pg_ctl -o, so it must be free of whitespace, and the
    # cluster owner must be able to reach it; otherwise fall back to /tmp.
    base=${TMPDIR:-/tmp}
    [[ $base =~ [[:space:]] ]] && base=/tmp
    dir=$(mktemp -d "$base/parley-pg.XXXXXX")
    PG_THROWAWAY_DIR=$dir
    if [[ -n $PG_THROWAWAY_USER ]]; then
        chown "$PG_THROWAWAY_USER" "$dir"
        if [[ $base != /tmp ]] && ! _pg_throwaway_as_owner test -w "$dir" -a -x "$dir"; then
            rm -rf -- "$dir"
            dir=$(mktemp -d /tmp/parley-pg.XXXXXX)
            PG_THROWAWAY_DIR=$dir
            chown "$PG_THROWAWAY_USER" "$dir"
        fi
    fi

    if ! _pg_throwaway_as_owner "$PG_THROWAWAY_BINDIR/initdb" -D "$dir/data" \
        --auth=trust --username=parley -E UTF8 --no-locale --no-sync \
        >"$dir/initdb.log" 2>&1; then
        _pg_throwaway_log "error: initdb failed:"
        cat "$dir/initdb.log" >&2
        return 1
    fi

    for attempt in 1 2 3 4 5; do
        if ! port=$(_pg_throwaway_free_port); then
            _pg_throwaway_log "error: could not find a free TCP port on 127.0.0.1"
            return 1
        fi
        opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off"
        opts+=" -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        if _pg_throwaway_as_owner "$PG_THROWAWAY_PG_CTL" -D "$dir/data" -o "$opts" \
            -l "$dir/log" -w -t 60 start >"$dir/pg_ctl.log" 2>&1; then
            export PARLEY_TEST_POSTGRES_URL="postgres://parley@127.0.0.1:$port/postgres"
            _pg_throwaway_log "throwaway PostgreSQL ($("$PG_THROWAWAY_BINDIR/postgres" --version 2>/dev/null || echo "$PG_THROWAWAY_BINDIR")) on 127.0.0.1:$port, data in $dir"
            return 0
        fi
        # Someone grabbed the port in between: retry with another one.
        if grep -qiE 'could not (bind|create listen)|address already in use' "$dir/log" 2>/dev/null &&
            [[ $attempt -lt 5 ]]; then
            _pg_throwaway_as_owner "$PG_THROWAWAY_PG_CTL" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
            : >"$dir/log"
            continue
        fi
        break
    done
    _pg_throwaway_log "error: could not start PostgreSQL; server log:"
    cat "$dir/pg_ctl.log" "$dir/log" >&2 2>/dev/null || true
    return 1
}

# Run directly: start a cluster, run "$@" with PARLEY_TEST_POSTGRES_URL set,
# then stop it.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    if [[ $# -eq 0 ]]; then
        echo "usage: $0 COMMAND [ARGS...]" >&2
        exit 2
    fi
    pg_throwaway_start
    status=0
    "$@" || status=$?
    exit "$status"
fi
