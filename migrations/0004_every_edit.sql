-- Writes hubsync is making, recorded before each call to HubSpot or SQL Server and removed when
-- the item that made them settles. After a crash they tell hubsync's own unsettled writes from
-- other people's edits: their echo is no change and no conflict, and a contact created but not
-- linked yet has the values it was created with as the base for the conflict policy.

CREATE TABLE sync_writes (
    object      text        NOT NULL,
    direction   text        NOT NULL,
    record_key  text        NOT NULL,
    item_id     bigint      NOT NULL,
    sql_key     text,
    hubspot_id  text,
    sent        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (object, direction, record_key),
    CONSTRAINT sync_writes_direction_valid CHECK (direction IN ('to_hubspot', 'to_sql')),
    CONSTRAINT sync_writes_sent_is_object CHECK (jsonb_typeof(sent) = 'object')
);

CREATE INDEX sync_writes_hubspot_id ON sync_writes (object, hubspot_id) WHERE hubspot_id IS NOT NULL;
CREATE INDEX sync_writes_sql_key ON sync_writes (object, sql_key) WHERE sql_key IS NOT NULL;

COMMENT ON TABLE sync_writes IS
    'Writes in flight: what hubsync is sending (or sent, if it crashed before settling) to the other side for one record. '
    'Removed when the item settles; rows left by a crash are used, then removed, when the item is taken up again.';
COMMENT ON COLUMN sync_writes.direction IS 'to_hubspot: values sent to HubSpot; to_sql: values written to SQL Server.';
COMMENT ON COLUMN sync_writes.record_key IS 'The queue item''s record_key (SQL key for to_hubspot, HubSpot id for to_sql).';
COMMENT ON COLUMN sync_writes.item_id IS 'The sync_queue item making the write.';
COMMENT ON COLUMN sync_writes.sql_key IS 'SQL Server key of the record, when known.';
COMMENT ON COLUMN sync_writes.hubspot_id IS 'HubSpot id of the record, when known (a created contact''s as soon as HubSpot answers).';
COMMENT ON COLUMN sync_writes.sent IS 'HubSpot property values (as mapped) the record has once the write lands.';

-- Who already holds a match value (the upsert path checks it before sending, once per batch).
CREATE INDEX record_links_synced_email ON record_links (object, (synced->>'email'));

ALTER TABLE sync_conflicts ADD COLUMN decided_by text;
-- A conflict is recorded as soon as it is decided, before the winner is written (a crash after
-- the write would otherwise lose it: the retry finds both sides equal), and again when the item
-- settles; the item, field and three values identify it, so it is stored once.
ALTER TABLE sync_conflicts ADD COLUMN item_id bigint;
CREATE UNIQUE INDEX sync_conflicts_once ON sync_conflicts (
    item_id, field,
    md5(coalesce(sql_value, '') || chr(1) || coalesce(hubspot_value, '') || chr(1) || coalesce(synced_value, '')))
    WHERE item_id IS NOT NULL;
COMMENT ON COLUMN sync_conflicts.item_id IS 'The sync_queue item that found the conflict.';
COMMENT ON COLUMN sync_conflicts.decided_by IS
    'Why the winner won: the policy, the two modification times, or (newest_wins) which time was missing.';
