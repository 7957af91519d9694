"""The PostgreSQL schema, as ordered forward migrations.

``evflow_schema.version`` holds the number of migrations applied. Migrations run at start under
an advisory lock, so two processes starting at once never both migrate; a store written by a
newer evflow (a higher version than we know) is refused rather than guessed at.

Types: instants are ``timestamptz``, except the audit trail's ``time``, which is
``double precision`` because the record's hash covers that exact value (a copy from SQLite
must verify unchanged). Parameters, triggers and headers are ``jsonb``. An event's ``data`` and
``extensions`` are ``json``: kept as received, key order and all, and ``jsonb`` would refuse a
``\\u0000`` inside a string, failing the batch it arrived in.
"""

from __future__ import annotations

MIGRATION_LOCK = 0x65766F6D  # pg_advisory_lock key taken while migrating ("evom")

MIGRATIONS: list[str] = [
    # 1: the first schema, as SQLite's after its second migration
    """
    CREATE TABLE events (
        seq bigserial PRIMARY KEY,
        uid text NOT NULL UNIQUE,
        id text NOT NULL,
        dedup_key text NOT NULL UNIQUE,
        type text NOT NULL,
        source text NOT NULL,
        subject text,
        time timestamptz NOT NULL,
        data json,
        extensions json,
        received_at timestamptz NOT NULL,
        status text NOT NULL DEFAULT 'pending'
    );
    CREATE INDEX events_id ON events (id);
    CREATE INDEX events_pending ON events (seq) WHERE status = 'pending';
    CREATE INDEX events_source ON events (source, seq);
    CREATE TABLE duplicates (
        source text PRIMARY KEY,
        count bigint NOT NULL
    );
    CREATE TABLE dead_letters (
        id text PRIMARY KEY,
        source text NOT NULL,
        reason text NOT NULL,
        payload bytea,
        headers jsonb,
        dedup_key text UNIQUE,
        received_at timestamptz NOT NULL
    );
    CREATE INDEX dead_letters_received ON dead_letters (received_at);
    CREATE TABLE cursors (
        name text PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE runs (
        id text PRIMARY KEY,
        flow text NOT NULL,
        flow_version text NOT NULL,
        params jsonb NOT NULL,
        state text NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        trigger jsonb,
        created_at timestamptz NOT NULL,
        started_at timestamptz,
        ended_at timestamptz,
        waiting text,
        error text
    );
    CREATE INDEX runs_created ON runs (created_at);
    CREATE INDEX runs_flow ON runs (flow, created_at);
    CREATE INDEX runs_unfinished ON runs (state) WHERE state IN ('queued', 'running');
    CREATE TABLE tasks (
        run_id text NOT NULL,
        name text NOT NULL,
        node text NOT NULL,
        map_index integer,
        state text NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        queued_at timestamptz,
        started_at timestamptz,
        ended_at timestamptz,
        waiting text,
        error text,
        traceback text,
        result bytea,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE attempts (
        run_id text NOT NULL,
        task text NOT NULL,
        attempt integer NOT NULL,
        state text NOT NULL,
        started_at timestamptz,
        ended_at timestamptz,
        error text,
        PRIMARY KEY (run_id, task, attempt)
    );
    CREATE TABLE logs (
        seq bigserial PRIMARY KEY,
        run_id text NOT NULL,
        task text NOT NULL,
        attempt integer NOT NULL,
        time timestamptz NOT NULL,
        level text NOT NULL,
        message text NOT NULL
    );
    CREATE INDEX logs_task ON logs (run_id, task, seq);
    CREATE TABLE audit (
        seq bigint PRIMARY KEY,
        time double precision NOT NULL,
        kind text NOT NULL,
        subject text NOT NULL,
        actor text,
        data bytea,
        prev_hash text NOT NULL,
        hash text NOT NULL
    );
    CREATE INDEX audit_subject ON audit (subject);
    CREATE INDEX audit_time ON audit (time);
    -- The chain's head, one row: every writer locks it, so the chain stays one line even
    -- with several processes writing.
    CREATE TABLE audit_head (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        seq bigint NOT NULL,
        hash text NOT NULL
    );
    INSERT INTO audit_head (seq, hash)
        VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');
    """,
]

MIGRATIONS.append(
    # 2: leases — named, expiring, fenced by an epoch; times from the database's clock
    """
    CREATE TABLE leases (
        name text PRIMARY KEY,
        owner text NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        epoch bigint NOT NULL,
        acquired_at timestamptz NOT NULL,
        renewed_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    """
)

MIGRATIONS.append(
    # 3: a run's tasks by node and state, without reading their results and tracebacks (the
    # run page of a large mapped run counts them)
    """
    CREATE INDEX tasks_by_node ON tasks (run_id, node, state, attempt, map_index)
        INCLUDE (queued_at, started_at, ended_at);
    """
)

MIGRATIONS.append(
    # 4: the audit trail as many chains, one per writer, each with its head anchored in
    # audit_heads (see store/chains.py), instead of one chain whose single head every writer
    # locked. The one chain so far becomes the "legacy" chain, its records' positions their
    # sequence numbers (which its hashes cover); from now on the sequence number only orders
    # the whole trail, drawn from a sequence as rows arrive.
    """
    ALTER TABLE audit ADD COLUMN chain text NOT NULL DEFAULT 'legacy';
    ALTER TABLE audit ALTER COLUMN chain DROP DEFAULT;
    ALTER TABLE audit ADD COLUMN pos bigint;
    UPDATE audit SET pos = seq;
    ALTER TABLE audit ALTER COLUMN pos SET NOT NULL;
    CREATE SEQUENCE audit_seq OWNED BY audit.seq;
    SELECT setval('audit_seq', COALESCE(max(seq), 0) + 1, false) FROM audit;
    ALTER TABLE audit ALTER COLUMN seq SET DEFAULT nextval('audit_seq');
    CREATE TABLE audit_heads (
        chain text PRIMARY KEY,
        pos bigint NOT NULL,
        hash text NOT NULL
    );
    INSERT INTO audit_heads (chain, pos, hash)
        VALUES ('system', 0, '0000000000000000000000000000000000000000000000000000000000000000');
    INSERT INTO audit_heads (chain, pos, hash)
        SELECT 'legacy', seq, hash FROM audit_head WHERE seq > 0;
    DROP TABLE audit_head;
    """
)

MIGRATIONS.append(
    # 5: instances — each ``evflow serve`` on the store, its heartbeat on the database's clock
    """
    CREATE TABLE instances (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        version text NOT NULL,
        http text,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now(),
        ttl_s float8 NOT NULL,
        stopped_at timestamptz,
        taken_over_by text
    );
    """
)

MIGRATIONS.append(
    # 6: runs belong to one instance at a time. ``owner`` is the instance driving the run (NULL:
    # handed back, for any instance to take) and ``epoch`` goes up at each claim. A run
    # inserted by an instance is its own: the default reads the instance id that each of its
    # transactions sets. ``cancel_requested`` carries a cancel asked on another instance to the
    # owner.
    """
    ALTER TABLE runs
        ADD COLUMN owner text DEFAULT nullif(current_setting('evflow.instance', true), ''),
        ADD COLUMN epoch bigint NOT NULL DEFAULT 1,
        ADD COLUMN cancel_requested text;
    CREATE INDEX runs_unfinished_by_owner ON runs (owner) WHERE state IN ('queued', 'running');
    -- Which instance ran a task's current try, and each finished try.
    ALTER TABLE tasks ADD COLUMN instance text;
    ALTER TABLE attempts ADD COLUMN instance text;
    -- Places limited across the cluster (a flow's max_active_runs, a cluster pool's slots):
    -- one row per place taken, by an instance for one holder (a run, a task attempt). A place
    -- whose instance died is free again: nothing is counted, so nothing drifts or leaks.
    CREATE TABLE slots (
        name text NOT NULL,
        slot integer NOT NULL,
        instance text NOT NULL,
        holder text NOT NULL,
        taken_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (name, slot)
    );
    """
)

MIGRATIONS.append(
    # 7: retention (store/retention.py). A chain whose oldest records were pruned is anchored:
    # its last pruned record's position and hash, and the sequence number of the system
    # chain's record that last named the anchor.
    """
    CREATE TABLE audit_anchors (
        chain text PRIMARY KEY,
        pos bigint NOT NULL,
        hash text NOT NULL,
        named_by bigint NOT NULL
    );
    """
)

SCHEMA_VERSION = len(MIGRATIONS)
