-- hubsync work queue: one row per change to sync, its state, attempts and outcome.

CREATE TABLE sync_queue (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object          text        NOT NULL,
    direction       text        NOT NULL,
    record_key      text        NOT NULL,
    operation       text        NOT NULL DEFAULT 'upsert',
    payload         jsonb       NOT NULL,
    source_version  bigint      NOT NULL,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL DEFAULT 10,
    rescues         integer     NOT NULL DEFAULT 0,
    run_after       timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    locked_until    timestamptz,
    batch_id        text,
    errors          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    last_error      text,
    outcome         text,
    hubspot_id      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    finished_at     timestamptz,
    CONSTRAINT sync_queue_direction_valid CHECK (direction IN ('to_hubspot', 'to_sql')),
    CONSTRAINT sync_queue_operation_valid CHECK (operation IN ('upsert', 'archive')),
    CONSTRAINT sync_queue_state_valid
        CHECK (state IN ('pending', 'running', 'done', 'rejected', 'dead', 'superseded', 'discarded')),
    CONSTRAINT sync_queue_lease_only_when_running
        CHECK ((state = 'running') = (locked_until IS NOT NULL AND locked_by IS NOT NULL)),
    CONSTRAINT sync_queue_finished_at_when_finished
        CHECK ((state IN ('pending', 'running')) = (finished_at IS NULL)),
    CONSTRAINT sync_queue_errors_is_array CHECK (jsonb_typeof(errors) = 'array'),
    CONSTRAINT sync_queue_attempts_non_negative CHECK (attempts >= 0 AND rescues >= 0)
);

-- Coalescing: at most one pending item per record and direction; a newer change replaces it.
CREATE UNIQUE INDEX sync_queue_one_pending_per_record
    ON sync_queue (object, direction, record_key) WHERE state = 'pending';

-- Claim: due pending items in order; stays small however many finished rows the table holds.
CREATE INDEX sync_queue_claim_order
    ON sync_queue (object, direction, run_after, id) WHERE state = 'pending';

-- At most one running item per record and direction: a record is never worked on twice at once.
-- Claim skips records listed here; the rescuer looks for expired leases.
CREATE UNIQUE INDEX sync_queue_one_running_per_record
    ON sync_queue (object, direction, record_key) WHERE state = 'running';
CREATE INDEX sync_queue_running_leases
    ON sync_queue (locked_until) WHERE state = 'running';

-- History per record: enqueue skips changes already queued or synced at that version, and
-- retry/prune find whether an item has been superseded by a newer one.
-- record_key leads so that this large index is never a candidate for scans by object alone.
CREATE INDEX sync_queue_record_history
    ON sync_queue (record_key, object, direction, source_version);

-- Pruning finished items past retention, oldest first.
CREATE INDEX sync_queue_finished
    ON sync_queue (finished_at) WHERE finished_at IS NOT NULL;

-- Operators' questions: what is rejected or dead?
CREATE INDEX sync_queue_needs_attention
    ON sync_queue (object, direction, state) WHERE state IN ('rejected', 'dead');

COMMENT ON TABLE sync_queue IS
    'hubsync work items: one change of one record to sync in one direction, with its state and outcome. '
    'Operators: see the views sync_queue_summary and sync_queue_stuck, and `hubsync queue --help`.';
COMMENT ON COLUMN sync_queue.id IS 'Item number; `hubsync queue retry/discard` take it.';
COMMENT ON COLUMN sync_queue.object IS 'Configured object name from config.yaml (e.g. contacts).';
COMMENT ON COLUMN sync_queue.direction IS 'to_hubspot (SQL Server change to send) or to_sql (HubSpot change to write back).';
COMMENT ON COLUMN sync_queue.record_key IS 'SQL Server primary key (to_hubspot) or HubSpot record id (to_sql), as text.';
COMMENT ON COLUMN sync_queue.operation IS 'upsert (create or update) or archive (the record was deleted at the source).';
COMMENT ON COLUMN sync_queue.payload IS 'Snapshot of the source record when the change was read (column or property values).';
COMMENT ON COLUMN sync_queue.source_version IS 'Version of that snapshot at the source: rowversion, or modification time in epoch microseconds (SQL Server) / milliseconds (HubSpot). A change never replaces a newer one.';
COMMENT ON COLUMN sync_queue.state IS 'pending (waiting), running (a worker holds it), done (synced), rejected (cannot succeed as is: see errors), dead (gave up after max_attempts or max rescues), superseded (a newer change of the same record replaced it), discarded (an operator dropped it).';
COMMENT ON COLUMN sync_queue.attempts IS 'Failed attempts so far (transient failures: timeouts, 429, 5xx, outages).';
COMMENT ON COLUMN sync_queue.max_attempts IS 'Failed attempts after which the item ends dead.';
COMMENT ON COLUMN sync_queue.rescues IS 'Times a worker died or stalled holding this item (lease expired). Not counted as attempts; too many ends the item dead.';
COMMENT ON COLUMN sync_queue.run_after IS 'Not processed before this time (retry backoff).';
COMMENT ON COLUMN sync_queue.locked_by IS 'Worker holding the item while running (instance/worker).';
COMMENT ON COLUMN sync_queue.locked_until IS 'Lease expiry while running; the worker extends it, the rescuer takes back expired ones.';
COMMENT ON COLUMN sync_queue.batch_id IS 'The batch (one HubSpot call or SQL transaction) the item was last processed in; matches batch_id in the logs.';
COMMENT ON COLUMN sync_queue.errors IS 'JSON array, one entry per failure: {at, kind, message, http_status?, field?, rule?}.';
COMMENT ON COLUMN sync_queue.last_error IS 'The newest failure as one line of text.';
COMMENT ON COLUMN sync_queue.outcome IS 'What the worker did: CREATE, UPDATE, SKIP (nothing changed), WRITE (to SQL Server), ARCHIVE, LINK.';
COMMENT ON COLUMN sync_queue.hubspot_id IS 'HubSpot record id once known.';
COMMENT ON COLUMN sync_queue.created_at IS 'When the change was first queued.';
COMMENT ON COLUMN sync_queue.updated_at IS 'Last change to this row.';
COMMENT ON COLUMN sync_queue.claimed_at IS 'When a worker last claimed the item.';
COMMENT ON COLUMN sync_queue.finished_at IS 'When the item reached a final state (done, rejected, dead, superseded, discarded); pruning counts retention from here.';

-- Where each poller has read up to.
CREATE TABLE sync_cursors (
    object          text        NOT NULL,
    direction       text        NOT NULL,
    cursor_value    jsonb       NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_change_at  timestamptz,
    PRIMARY KEY (object, direction),
    CONSTRAINT sync_cursors_direction_valid CHECK (direction IN ('to_hubspot', 'to_sql'))
);

COMMENT ON TABLE sync_cursors IS 'Where each change poller has read up to; advanced in the same transaction that enqueues what it read.';
COMMENT ON COLUMN sync_cursors.object IS 'Configured object name.';
COMMENT ON COLUMN sync_cursors.direction IS 'to_hubspot: the SQL Server change reader; to_sql: the HubSpot change reader.';
COMMENT ON COLUMN sync_cursors.cursor_value IS 'Position at the source (e.g. {"rowversion": "0x00000000000007D1"} or {"modified_at": ..., "key": ...} or {"lastmodifieddate_ms": ...}).';
COMMENT ON COLUMN sync_cursors.updated_at IS 'Last time the poller stored its position (it stores it every poll).';
COMMENT ON COLUMN sync_cursors.last_change_at IS 'Last time the poller found changes.';

-- Operator views -------------------------------------------------------------------------

CREATE VIEW sync_queue_summary AS
SELECT object,
       direction,
       state,
       count(*)                                                  AS items,
       min(created_at)                                           AS oldest_created_at,
       CASE WHEN state = 'pending' THEN now() - min(created_at) END AS oldest_pending_age,
       max(updated_at)                                           AS last_updated_at
FROM sync_queue
GROUP BY object, direction, state;

COMMENT ON VIEW sync_queue_summary IS
    'Items by object, direction and state; oldest_pending_age is how long the oldest waiting change has waited.';

CREATE VIEW sync_queue_stuck AS
SELECT q.id,
       q.object,
       q.direction,
       q.record_key,
       q.state,
       CASE
           WHEN q.state = 'running' THEN 'lease expired: worker ' || q.locked_by || ' stopped renewing'
           WHEN q.state = 'pending' THEN 'pending past due (attempts ' || q.attempts || ')'
           WHEN q.state = 'rejected' THEN 'rejected: fix the record at its source or retry'
           ELSE 'dead: gave up after ' || q.attempts || ' attempts and ' || q.rescues || ' rescues'
       END          AS problem,
       q.last_error,
       q.errors,
       q.attempts,
       q.rescues,
       q.run_after,
       q.locked_by,
       q.locked_until,
       q.hubspot_id,
       q.created_at,
       q.updated_at
FROM sync_queue q
WHERE (q.state = 'running' AND q.locked_until < now())
   OR (q.state = 'pending'
       AND q.run_after < now() - coalesce(nullif(current_setting('hubsync.stuck_after', true), ''), '15 minutes')::interval)
   OR (q.state IN ('rejected', 'dead')
       AND NOT EXISTS (SELECT 1 FROM sync_queue n
                       WHERE n.object = q.object AND n.direction = q.direction
                         AND n.record_key = q.record_key AND n.id > q.id));

COMMENT ON VIEW sync_queue_stuck IS
    'Items that need a look: expired leases, pending far past due (default 15 minutes; SET hubsync.stuck_after = ''1 hour'' to change), and the newest rejected or dead item of each record with its last error.';
