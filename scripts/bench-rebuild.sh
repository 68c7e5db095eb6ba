#!/usr/bin/env bash
# Rebuild and export speed on a seeded log, against the database's own bulk-write
# ceiling measured in the same run (parley-load rows: 100-row INSERT statements, one
# transaction per 2,000 rows), on the embedded SQLite default and on PostgreSQL:
#
#   scripts/bench-rebuild.sh                   # about 1,000,000 events per backend
#   BENCH_MESSAGES=100000 scripts/bench-rebuild.sh
#
# Beside the ceiling, the database's own share of the rebuild is timed alone
# (scripts/rebuild-floor.py: the log read once and every read-model row loaded and
# indexed, with no application in between), the floor under any rebuild of those rows.
#
# PostgreSQL: PARLEY_BENCH_POSTGRES_URL (a server URL whose role may CREATE DATABASE)
# when set; otherwise a throwaway cluster. Prints a markdown table.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
messages=${BENCH_MESSAGES:-800000}
users=${BENCH_USERS:-2000}
conversations=${BENCH_CONVERSATIONS:-4000}
bench_setup
work=$(mktemp -d)
created=()
cleanup() {
    for name in "${created[@]}"; do
        psql "$PARLEY_BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
    if declare -F pg_throwaway_stop >/dev/null; then pg_throwaway_stop; fi
}
trap cleanup EXIT INT TERM

export PARLEY_LOG=warn

seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.0f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

# Every table the nine projectors write (the full-text index's own tables aside).
read_model_tables=(users sessions conversations members invitations sanctions messages
    message_edits reactions conversation_activity read_markers attention notifications
    notification_levels moderation_log audit_chain attachments)

rows=()
for backend in sqlite postgres; do
    if [[ $backend == sqlite ]]; then
        mkdir -p "$work/sqlite"
        db="sqlite://$work/sqlite/parley.db?mode=rwc"
        ceiling_db="sqlite://$work/sqlite/ceiling.db"
    else
        name=parley_rebuild_bench_$$
        psql "$PARLEY_BENCH_POSTGRES_URL" -qc "CREATE DATABASE $name" >/dev/null
        created+=("$name")
        db=${PARLEY_BENCH_POSTGRES_URL%/*}/$name
        ceiling_db=$db
    fi
    export PARLEY_DATABASE_URL=$db PARLEY_DATA_DIR=$work/$backend
    mkdir -p "$PARLEY_DATA_DIR"
    echo "== $backend: seeding $messages messages" >&2
    "$parley" seed --users "$users" --conversations "$conversations" --messages "$messages" --seed 1 >&2
    if [[ $backend == postgres ]]; then
        events=$(psql "$db" -Atc "SELECT count(*) FROM events")
    else
        events=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM events").fetchone()[0])' "$work/sqlite/parley.db")
    fi
    ceiling=$("$load" rows --db "$ceiling_db" --duration 10 --json "$work/rows-$backend.json" >/dev/null 2>&1 &&
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["figures"]["rows_per_s"]["value"])' "$work/rows-$backend.json")

    echo "== $backend: rebuild --all over $events events" >&2
    began=$(now)
    "$parley" projections rebuild --all >&2
    rebuild_s=$(seconds "$began" "$(now)")

    # Rows the rebuild wrote: every event adds a link to the audit chain and most add
    # rows to several read models, so rows/s is what compares with the ceiling.
    count_sql="SELECT $(printf '(SELECT count(*) FROM %s)+' "${read_model_tables[@]}")0"
    if [[ $backend == postgres ]]; then
        written=$(psql "$db" -Atc "$count_sql")
    else
        written=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$work/sqlite/parley.db" "$count_sql")
    fi

    # The database's own share of that rebuild, timed alone: the floor under any rebuild.
    echo "== $backend: the database alone (rebuild-floor.py)" >&2
    if [[ $backend == postgres ]]; then
        floor_s=$(python3 "$root/scripts/rebuild-floor.py" postgres "$db" "${read_model_tables[@]}")
    else
        floor_s=$(python3 "$root/scripts/rebuild-floor.py" sqlite "$work/sqlite/parley.db" "${read_model_tables[@]}")
    fi

    echo "== $backend: export" >&2
    began=$(now)
    "$parley" export events --format parquet --output "$work/events-$backend.parquet" >&2
    export_s=$(seconds "$began" "$(now)")
    unset PARLEY_DATABASE_URL PARLEY_DATA_DIR

    rebuild_rate=$(rate "$events" "$rebuild_s")
    export_rate=$(rate "$events" "$export_s")
    written_rate=$(rate "$written" "$rebuild_s")
    floor_rate=$(rate "$events" "$floor_s")
    rows+=("| $backend | $events | $(rate "$ceiling" 1) rows/s | $rebuild_rate events/s ($rebuild_s s) | $(ratio "$rebuild_rate" "$ceiling") | $written rows, $written_rate rows/s | $(ratio "$written_rate" "$ceiling") | $floor_rate events/s ($floor_s s) | $(ratio "$rebuild_rate" "$floor_rate") | $export_rate events/s ($export_s s) | $(ratio "$export_rate" "$ceiling") |")
done

echo
echo "| backend | events | bulk INSERT ceiling | rebuild --all (9 read models) | ratio | rows the rebuild wrote | ratio | the database alone (floor) | rebuild / floor | export (Parquet) | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
