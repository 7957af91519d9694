"""The SQLite schema, as ordered forward migrations.

``PRAGMA user_version`` holds the number of migrations applied. A store written by a newer
evflow (a higher version than we know) is refused rather than guessed at.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        dedup_key TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT,
        time TEXT NOT NULL,
        data BLOB,
        extensions BLOB,
        received_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        ingest TEXT NOT NULL
    );
    CREATE INDEX events_id ON events(id);
    CREATE INDEX events_pending ON events(status) WHERE status = 'pending';
    CREATE TABLE duplicates (
        source TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    );
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        payload BLOB,
        headers BLOB,
        dedup_key TEXT UNIQUE,
        received_at REAL NOT NULL
    );
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        flow_version TEXT NOT NULL,
        params BLOB NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        trigger BLOB,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        waiting TEXT,
        error TEXT
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE INDEX runs_flow ON runs(flow, created_at);
    CREATE INDEX runs_unfinished ON runs(state) WHERE state IN ('queued', 'running');
    CREATE TABLE tasks (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        node TEXT NOT NULL,
        map_index INTEGER,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        queued_at REAL,
        started_at REAL,
        ended_at REAL,
        waiting TEXT,
        error TEXT,
        traceback TEXT,
        result BLOB,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,
        started_at REAL,
        ended_at REAL,
        error TEXT,
        PRIMARY KEY (run_id, task, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        time REAL NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX logs_task ON logs(run_id, task, seq);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        actor TEXT,
        data BLOB,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_subject ON audit(subject);
    """,
]

MIGRATIONS.append(
    # 2: every event has an identity of evflow's own (the sender's id is unique only within its
    # source). The per-insert token that told a fresh insert from a repeat already was one.
    """
    ALTER TABLE events RENAME COLUMN ingest TO uid;
    CREATE UNIQUE INDEX events_uid ON events(uid);
    """
)

MIGRATIONS.append(
    # 3: leases — named, expiring, fenced by an epoch (the instance that runs a store's work)
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        renewed_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    """
)

MIGRATIONS.append(
    # 4: a run's tasks by node and state, without reading their results and tracebacks (the
    # run page of a large mapped run counts them)
    """
    CREATE INDEX tasks_by_node
        ON tasks(run_id, node, state, attempt, map_index, queued_at, started_at, ended_at);
    """
)

MIGRATIONS.append(
    # 5: the audit trail as many chains, one per writer, each with its head anchored in
    # audit_heads (see store/chains.py). The one chain so far becomes the "legacy" chain, its
    # records' positions their sequence numbers (which its hashes cover); from now on the
    # sequence number only orders the whole trail, given by SQLite as rows arrive.
    """
    ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT 'legacy';
    ALTER TABLE audit ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;
    UPDATE audit SET pos = seq;
    CREATE TABLE audit_heads (
        chain TEXT PRIMARY KEY,
        pos INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_heads (chain, pos, hash)
        VALUES ('system', 0, '0000000000000000000000000000000000000000000000000000000000000000');
    INSERT INTO audit_heads (chain, pos, hash)
        SELECT 'legacy', seq, hash FROM audit ORDER BY seq DESC LIMIT 1;
    """
)

MIGRATIONS.append(
    # 6: retention (store/retention.py). A chain whose oldest records were pruned is anchored:
    # its last pruned record's position and hash, and the sequence number of the system
    # chain's record that last named the anchor.
    """
    CREATE TABLE audit_anchors (
        chain TEXT PRIMARY KEY,
        pos INTEGER NOT NULL,
        hash TEXT NOT NULL,
        named_by INTEGER NOT NULL
    );
    """
)

MIGRATIONS.append(
    # 7: migration 4's index without the churn. Every entry of tasks_by_node moved at each of a
    # task's state changes (state, attempt and times are in its key), one more page written per
    # task in nearly every commit. The instances of mapped tasks, the rows that make a run
    # large, keep the same covering index (partial); a run's own tasks get a narrow one that
    # nothing in it ever updates, so it is written once, when the task is queued.
    """
    DROP INDEX tasks_by_node;
    CREATE INDEX tasks_mapped
        ON tasks(run_id, node, state, attempt, map_index, queued_at, started_at, ended_at)
        WHERE map_index IS NOT NULL;
    CREATE INDEX tasks_plain ON tasks(run_id, node, map_index) WHERE map_index IS NULL;
    """
)

SCHEMA_VERSION = len(MIGRATIONS)
