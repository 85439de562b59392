-- Record links: which SQL Server row is which HubSpot record, and the values both sides agreed
-- on after the last successful sync (for diffing, echo suppression and conflict detection).

CREATE TABLE record_links (
    object                  text        NOT NULL,
    sql_key                 text        NOT NULL,
    hubspot_id              text,
    synced                  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    sql_version             bigint,
    hubspot_version         bigint,
    synced_to_hubspot_at    timestamptz,
    synced_to_sql_at        timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (object, sql_key),
    CONSTRAINT record_links_synced_is_object CHECK (jsonb_typeof(synced) = 'object')
);

CREATE UNIQUE INDEX record_links_hubspot_id ON record_links (object, hubspot_id)
    WHERE hubspot_id IS NOT NULL;

COMMENT ON TABLE record_links IS 'One row per synced record: its SQL Server key, its HubSpot id, and the mapped values both sides agreed on after the last sync.';
COMMENT ON COLUMN record_links.object IS 'Configured object name (e.g. contacts).';
COMMENT ON COLUMN record_links.sql_key IS 'SQL Server primary key, as text.';
COMMENT ON COLUMN record_links.hubspot_id IS 'HubSpot record id; NULL until the record exists in HubSpot.';
COMMENT ON COLUMN record_links.synced IS 'HubSpot property values (as mapped) after the last successful sync in either direction; a change equal to these is an echo and is not sent.';
COMMENT ON COLUMN record_links.sql_version IS 'source_version of the SQL Server row at the last sync.';
COMMENT ON COLUMN record_links.hubspot_version IS 'HubSpot lastmodifieddate (epoch ms) at the last sync.';
COMMENT ON COLUMN record_links.synced_to_hubspot_at IS 'Last time a SQL Server change was written to HubSpot.';
COMMENT ON COLUMN record_links.synced_to_sql_at IS 'Last time a HubSpot change was written to SQL Server.';

-- Fields changed on both sides since the last sync, and which side won.
CREATE TABLE sync_conflicts (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object                  text        NOT NULL,
    sql_key                 text        NOT NULL,
    hubspot_id              text,
    field                   text        NOT NULL,
    sql_value               text,
    hubspot_value           text,
    synced_value            text,
    sql_modified_at         timestamptz,
    hubspot_modified_at     timestamptz,
    policy                  text        NOT NULL,
    winner                  text        NOT NULL,
    detected_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_conflicts_winner_valid CHECK (winner IN ('sql', 'hubspot')),
    CONSTRAINT sync_conflicts_policy_valid CHECK (policy IN ('newest_wins', 'sql_wins', 'hubspot_wins'))
);

CREATE INDEX sync_conflicts_record ON sync_conflicts (object, sql_key, detected_at);

COMMENT ON TABLE sync_conflicts IS 'Every field changed on both sides since the last sync: both values, both times, the policy applied and the winner.';
COMMENT ON COLUMN sync_conflicts.field IS 'HubSpot property name of the field.';
COMMENT ON COLUMN sync_conflicts.synced_value IS 'The value both sides had agreed on before the conflicting changes.';
COMMENT ON COLUMN sync_conflicts.policy IS 'newest_wins (by modification time), sql_wins or hubspot_wins.';
COMMENT ON COLUMN sync_conflicts.winner IS 'sql or hubspot: whose value both sides now hold.';
