#!/usr/bin/env python3
"""What a rebuild costs the database alone: the floor under any rebuild of these tables.

    scripts/rebuild-floor.py postgres DATABASE_URL TABLE...
    scripts/rebuild-floor.py sqlite FILE.db TABLE...

Run after `parley projections rebuild --all`, on the database it rebuilt. It times the
database doing, with no application in between, the least any rebuild of those read
models has to do: read the whole log once, as the rebuild's reader reads it, and write
every row the read models hold, each table's rows loaded into a bare copy of it and its
indexes built afterwards. On PostgreSQL the rows are loaded with COPY, each table's
indexes built once its rows are in, two jobs at a time (this machine has two cores; the
log read is one job); on SQLite, whose one writer
works alone, by `INSERT … SELECT` from the rebuilt file. A replay does more (rows
updated many times over, reactions and read markers folded as they come), so the floor
is a lower bound, measured in the same run as the rebuild it is set against. Prints the
floor in seconds; the copies are dropped afterwards.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import threading

# The columns and order the rebuild's reader asks for (store/src/log.rs, `read_after`).
LOG_COLUMNS = ("txid, position, event_id, aggregate_type, aggregate_id, sequence, "
               "event_type, event_version, payload, metadata, hash")
FLOOR_SCHEMA = "parley_floor"
# What a session prints once a job is through (psql stops at the first error instead).
DONE = "rebuild-floor: done"


def psql(url, *args, capture=False):
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", *args], check=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          text=True).stdout


def postgres_floor(url, tables):
    work = tempfile.mkdtemp(prefix="parley-floor-")
    try:
        # A job is (size, name, psql script, the jobs it lets start); a table's indexes
        # are built once its rows are in.
        jobs = [(float("inf"), "the log read",
                 f"\\copy (SELECT {LOG_COLUMNS} FROM events_log ORDER BY txid, position) "
                 "TO '/dev/null'", [])]
        for table in tables:
            path = os.path.join(work, table + ".copy")
            psql(url, "-c", f"\\copy public.{table} TO '{path}'")
            size = os.path.getsize(path)
            builds = []
            for line in psql(url, "-F", "\t", "-c", "SELECT indexname, indexdef FROM pg_indexes "
                             f"WHERE schemaname = 'public' AND tablename = '{table}'",
                             capture=True).splitlines():
                name, definition = line.split("\t", 1)
                definition = definition.replace(f" ON public.{table} ", f" ON {FLOOR_SCHEMA}.{table} ")
                builds.append((size, name, definition + ";", []))
            jobs.append((size, table, f"CREATE TABLE {FLOOR_SCHEMA}.{table} "
                         f"(LIKE public.{table} INCLUDING DEFAULTS);\n"
                         f"\\copy {FLOOR_SCHEMA}.{table} FROM '{path}'", builds))
        psql(url, "-c", f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE", "-c", f"CREATE SCHEMA {FLOOR_SCHEMA}")
        return run_two_at_a_time(url, jobs)
    finally:
        psql(url, "-c", f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        shutil.rmtree(work, ignore_errors=True)


def run_two_at_a_time(url, jobs):
    """Runs the jobs on two sessions, the largest ready one first; returns the seconds taken."""
    ready = sorted(jobs, key=lambda job: job[0], reverse=True)
    lock = threading.Condition()
    running = 0
    failed = []

    def worker():
        nonlocal running
        # One session a worker, as the rebuild keeps its own: a job pays for its work,
        # not for starting psql and a backend.
        session = subprocess.Popen(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt"], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            work(session)
        finally:
            session.stdin.close()
            session.wait()

    def work(session):
        nonlocal running
        while True:
            with lock:
                while not ready and running and not failed:
                    lock.wait()
                if not ready or failed:
                    lock.notify_all()
                    return
                _, name, script, then = ready.pop(0)
                running += 1
            began = time.monotonic()
            session.stdin.write(f"{script}\n\\echo {DONE}\n")
            session.stdin.flush()
            ok = any(line.rstrip("\n") == DONE for line in iter(session.stdout.readline, ""))
            print(f"floor: {name} {time.monotonic() - began:.3f} s", file=sys.stderr)
            with lock:
                running -= 1
                if not ok:
                    failed.append(name)
                    lock.notify_all()
                    return
                ready.extend(then)
                ready.sort(key=lambda job: job[0], reverse=True)
                lock.notify_all()

    began = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if failed:
        sys.exit(f"rebuild-floor: {', '.join(failed)} failed")
    return time.monotonic() - began


def sqlite_floor(path, tables):
    work = tempfile.mkdtemp(prefix="parley-floor-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        con = sqlite3.connect(os.path.join(work, "floor.db"), isolation_level=None)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        con.execute("ATTACH DATABASE ? AS src", (path,))
        schema = dict(con.execute(
            "SELECT name, sql FROM src.sqlite_master WHERE type = 'table'").fetchall())
        indexes = con.execute(
            "SELECT tbl_name, sql FROM src.sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
        began = time.monotonic()
        con.execute("SELECT sum(length(payload) + length(metadata)) FROM src.events").fetchone()
        for table in tables:
            con.execute("BEGIN")
            con.execute(schema[table])
            con.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table}")
            for _, sql in (i for i in indexes if i[0] == table):
                con.execute(sql)
            con.execute("COMMIT")
        elapsed = time.monotonic() - began
        con.close()
        return elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("postgres", "sqlite"):
        sys.exit("usage: rebuild-floor.py postgres DATABASE_URL TABLE... | sqlite FILE.db TABLE...")
    backend, db, tables = sys.argv[1], sys.argv[2], sys.argv[3:]
    floor = postgres_floor(db, tables) if backend == "postgres" else sqlite_floor(db, tables)
    print(f"{floor:.3f}")


if __name__ == "__main__":
    main()
