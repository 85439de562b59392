-- Each member's sync history: one row per operation on a member (CREATE, UPDATE, SKIP, LINK,
-- WRITE, INSERT, ARCHIVE, MERGE, CONFLICT, REJECT, DEAD, ERASE), written in the same transaction
-- that settles its queue item (or ends it dead). No values: property (or column) names, ids,
-- reasons with the values they quote masked. Pruned after queue.retention; `hubsync forget` and
-- an erasure in HubSpot delete a member's rows and leave one ERASE row with ids and counts only.

CREATE TABLE sync_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    object          text        NOT NULL,
    direction       text,
    operation       text        NOT NULL,
    sql_key         text,
    hubspot_id      text,
    old_hubspot_id  text,
    item_id         bigint,
    batch_id        text,
    properties      jsonb       NOT NULL DEFAULT '[]'::jsonb,
    reasons         jsonb,
    message         text,
    CONSTRAINT sync_history_direction_valid CHECK (direction IN ('to_hubspot', 'to_sql')),
    CONSTRAINT sync_history_properties_is_array CHECK (jsonb_typeof(properties) = 'array')
);

-- A member's timeline, by SQL key or by a HubSpot id it had.
CREATE INDEX sync_history_member ON sync_history (object, sql_key, at);
CREATE INDEX sync_history_hubspot_id ON sync_history (object, hubspot_id) WHERE hubspot_id IS NOT NULL;
CREATE INDEX sync_history_old_hubspot_id ON sync_history (object, old_hubspot_id)
    WHERE old_hubspot_id IS NOT NULL;
-- Pruning past retention, oldest first.
CREATE INDEX sync_history_at ON sync_history (at);

COMMENT ON TABLE sync_history IS
    'What hubsync did to each member, one row per operation, without values; `hubsync history --object O --member KEY` prints a member''s timeline. Pruned after queue.retention.';
COMMENT ON COLUMN sync_history.at IS 'When the operation was settled.';
COMMENT ON COLUMN sync_history.object IS 'Configured object name (e.g. contacts).';
COMMENT ON COLUMN sync_history.direction IS 'to_hubspot or to_sql; NULL for an ERASE made by `hubsync forget`.';
COMMENT ON COLUMN sync_history.operation IS 'CREATE, UPDATE, SKIP, LINK, WRITE, INSERT, ARCHIVE, MERGE, CONFLICT, REJECT, DEAD or ERASE.';
COMMENT ON COLUMN sync_history.sql_key IS 'The member''s SQL Server key, when known (NULL for a HubSpot record linked to no member).';
COMMENT ON COLUMN sync_history.hubspot_id IS 'The HubSpot record id (a MERGE: the survivor''s).';
COMMENT ON COLUMN sync_history.old_hubspot_id IS 'MERGE: the id the member''s link held before.';
COMMENT ON COLUMN sync_history.item_id IS 'The sync_queue item settled (it may have been pruned since).';
COMMENT ON COLUMN sync_history.batch_id IS 'The batch, as in the logs'' batch_id.';
COMMENT ON COLUMN sync_history.properties IS 'JSON array of the HubSpot property names sent or written (UPDATE: only the changed ones; CONFLICT: the field). Never values.';
COMMENT ON COLUMN sync_history.reasons IS 'REJECT, DEAD: [{kind, field, rule, message}] with the values messages quote masked; CONFLICT: {policy, winner}; ERASE: what was erased (counts).';
COMMENT ON COLUMN sync_history.message IS 'hubsync''s own words about the operation (masked like the logs).';
