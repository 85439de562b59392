-- Backfills (`hubsync backfill`): one row per object and direction, the position reached, so an
-- interrupted backfill resumes where it stopped.

CREATE TABLE sync_backfills (
    object        text        NOT NULL,
    direction     text        NOT NULL,
    cursor_value  jsonb,
    total         bigint,
    rows_read     bigint      NOT NULL DEFAULT 0,
    enqueued      bigint      NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (object, direction),
    CONSTRAINT sync_backfills_direction_valid CHECK (direction IN ('to_hubspot', 'to_sql')),
    CONSTRAINT sync_backfills_counts_non_negative CHECK (rows_read >= 0 AND enqueued >= 0)
);

COMMENT ON TABLE sync_backfills IS
    'hubsync backfills (initial load / full resync): how far the last one of each object and direction got. '
    'A row with finished_at NULL is resumed by the next `hubsync backfill` of that object and direction.';
COMMENT ON COLUMN sync_backfills.cursor_value IS 'Position after the last page queued: SQL Server change cursor (to_hubspot) or last HubSpot record id (to_sql).';
COMMENT ON COLUMN sync_backfills.total IS 'Rows in the SQL Server table when the backfill started (to_hubspot); NULL when unknown.';
COMMENT ON COLUMN sync_backfills.rows_read IS 'Records read so far.';
COMMENT ON COLUMN sync_backfills.enqueued IS 'Items queued or refreshed so far.';
COMMENT ON COLUMN sync_backfills.finished_at IS 'When every record had been queued; NULL while running or interrupted.';
