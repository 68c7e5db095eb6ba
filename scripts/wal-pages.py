#!/usr/bin/env python3
"""Which tables and indexes a SQLite write workload writes, page by page.

Counts the frames of DB's write-ahead log by the b-tree their page belongs to (found
through SQLite's `dbstat`), optionally per message. The log only holds what was
written since its last checkpoint: to see a whole run, keep a read transaction open on
the database from before the run until after it (checkpoints cannot pass it), e.g.

    python3 -c 'import sqlite3,time; c=sqlite3.connect("parley.db", isolation_level=None); \\
        c.execute("begin"); c.execute("select 1 from events").fetchone(); time.sleep(3600)' &
    ... run the load, then:
    scripts/wal-pages.py parley.db "$(sqlite3 parley.db "select count(*) from events \\
        where event_type = 'MessagePosted'")"

usage: wal-pages.py DB [MESSAGES]
"""
import collections
import sqlite3
import struct
import sys


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    db = sys.argv[1]
    messages = int(sys.argv[2]) if len(sys.argv) == 3 else 0
    with open(db + "-wal", "rb") as file:
        wal = file.read()
    if len(wal) < 32:
        sys.exit(f"{db}-wal holds no frames")
    page_size, _, salt1, salt2 = struct.unpack(">IIII", wal[8:24])
    frames, commits, offset = [], 0, 32
    while offset + 24 + page_size <= len(wal):
        page, size_after, s1, s2 = struct.unpack(">IIII", wal[offset : offset + 16])
        if (s1, s2) != (salt1, salt2):
            break  # left over from before the log last restarted
        frames.append(page)
        commits += size_after != 0
        offset += 24 + page_size
    if not frames:
        sys.exit(f"{db}-wal holds no frames")
    owner = dict(
        (page, name)
        for name, page in sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
            "SELECT name, pageno FROM dbstat"
        )
    )
    counts = collections.Counter(owner.get(page, "(freed)") for page in frames)
    print(f"{len(frames)} frames of {page_size} bytes in {commits} commits")
    if messages:
        print(f"{len(frames) / messages:.2f} pages per message")
    for name, count in counts.most_common():
        per = f"{count / messages:6.2f}/msg  " if messages else ""
        print(f"{count:9d} {100 * count / len(frames):5.1f}%  {per}{name}")


if __name__ == "__main__":
    main()
