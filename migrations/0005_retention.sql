-- Retention of personal data. A rejected or dead item that is still its record's newest keeps
-- its reasons (errors, last_error, field and rule names) and its record key for operators, but
-- once it is older than queue.rejected_payload_retention its payload values are dropped (each
-- column or property kept with a null value) and the values quoted in its reasons are masked.
-- sync_conflicts rows are deleted after queue.conflict_retention.

ALTER TABLE sync_queue ADD COLUMN payload_dropped_at timestamptz;
COMMENT ON COLUMN sync_queue.payload_dropped_at IS
    'When the payload values of this rejected or dead item were dropped after retention (keys and reasons kept); such an item cannot be retried: the record must change again at its source, or be backfilled.';

-- The retention pass looks for rejected and dead items whose values are still stored.
CREATE INDEX sync_queue_payload_retention
    ON sync_queue (finished_at) WHERE state IN ('rejected', 'dead') AND payload_dropped_at IS NULL;

-- Pruning conflicts past retention, oldest first.
CREATE INDEX sync_conflicts_detected ON sync_conflicts (detected_at);
