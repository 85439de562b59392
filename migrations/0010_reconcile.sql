-- Reconciliation (`hubsync reconcile`, reconcile jobs): each run over both sides with its
-- position (so an interrupted run resumes) and counts, and what it found, record by record.

CREATE TABLE reconcile_runs (
    run_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object          text        NOT NULL,
    dry_run         boolean     NOT NULL,
    job_id          bigint,
    status          text        NOT NULL DEFAULT 'running',
    phase           text        NOT NULL DEFAULT 'sql',
    position        jsonb,
    sql_high        bigint,
    hubspot_high    bigint,
    counts          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    requests        bigint      NOT NULL DEFAULT 0,
    locked_by       text,
    locked_until    timestamptz,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    error           text,
    CONSTRAINT reconcile_runs_status_valid
        CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT reconcile_runs_phase_valid CHECK (phase IN ('sql', 'links', 'hubspot', 'done')),
    CONSTRAINT reconcile_runs_counts_is_object CHECK (jsonb_typeof(counts) = 'object'),
    CONSTRAINT reconcile_runs_finished_at_when_finished
        CHECK ((status = 'running') = (finished_at IS NULL))
);

-- At most one run per object at a time, dry or not.
CREATE UNIQUE INDEX reconcile_runs_one_running ON reconcile_runs (object) WHERE status = 'running';
CREATE INDEX reconcile_runs_latest ON reconcile_runs (object, finished_at DESC);

CREATE TABLE reconcile_findings (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          bigint      NOT NULL REFERENCES reconcile_runs (run_id) ON DELETE CASCADE,
    object          text        NOT NULL,
    kind            text        NOT NULL,
    sql_key         text,
    hubspot_id      text,
    fields          text[]      NOT NULL DEFAULT '{}',
    fix             text        NOT NULL,
    match_hash      bytea,
    found_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reconcile_findings_kind_valid CHECK (kind IN (
        'unlinked', 'missing_in_hubspot', 'unlinked_matchable', 'sql_drift', 'hubspot_drift',
        'orphan_link', 'orphan_contact', 'left_by_policy', 'missing_record'))
);

CREATE INDEX reconcile_findings_run ON reconcile_findings (run_id, kind);
CREATE INDEX reconcile_findings_member ON reconcile_findings (object, sql_key);
CREATE INDEX reconcile_findings_run_member ON reconcile_findings (run_id, sql_key);
CREATE INDEX reconcile_findings_match ON reconcile_findings (run_id, match_hash)
    WHERE match_hash IS NOT NULL;

-- Links in HubSpot id order (ids are decimal strings): a run walks HubSpot's list and the links
-- side by side, so a link whose contact the list no longer shows is found without a set in memory.
CREATE INDEX record_links_hubspot_order ON record_links (object, lpad(hubspot_id, 20, '0'))
    WHERE hubspot_id IS NOT NULL;

COMMENT ON TABLE reconcile_runs IS 'One row per reconciliation run: object, dry run or not, phase and position (an interrupted run resumes from it), counts by kind of drift, HubSpot requests spent.';
COMMENT ON COLUMN reconcile_runs.phase IS 'sql (SQL Server rows), links (links whose row is gone), hubspot (HubSpot list), done.';
COMMENT ON COLUMN reconcile_runs.sql_high IS 'The SQL Server poller''s position at the start: rows changed after it are the poller''s, not drift.';
COMMENT ON COLUMN reconcile_runs.hubspot_high IS 'The HubSpot poller''s high-water mark (epoch ms) at the start: records modified after it are the poller''s, not drift.';
COMMENT ON COLUMN reconcile_runs.counts IS 'Findings by kind, and rows/records read, items queued.';
COMMENT ON TABLE reconcile_findings IS 'What a run found, one row per record and kind: member key, HubSpot id, the differing fields (names only, no values) and the fix queued (or that a dry run would queue).';
COMMENT ON COLUMN reconcile_findings.kind IS 'missing_in_hubspot, unlinked_matchable, sql_drift, hubspot_drift, orphan_link, orphan_contact; left_by_policy for differences the object''s policies keep (not drift); unlinked and missing_record (a link whose HubSpot record the list did not show, asked of HubSpot in batches) while a run is under way.';
COMMENT ON COLUMN reconcile_findings.match_hash IS 'While the run is under way: a salted hash of an unlinked member''s match value, to pair it with an unlinked HubSpot record. Cleared when the run ends.';
