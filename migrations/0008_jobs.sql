-- Jobs (the job API, `hubsync jobs` and schedules): one row per requested backfill, resync or
-- reconcile. Any instance runs a queued job, claiming it with FOR UPDATE SKIP LOCKED and
-- holding it under a lease it renews; a job whose instance died is claimed again (and resumed)
-- once the lease has passed, or at once by a restart on the same host.

CREATE TABLE sync_jobs (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL,
    object           text        NOT NULL,
    direction        text        NOT NULL DEFAULT 'to_hubspot',
    members          jsonb       NOT NULL DEFAULT '[]',
    dry_run          boolean     NOT NULL DEFAULT false,
    status           text        NOT NULL DEFAULT 'queued',
    requested_by     text        NOT NULL,
    schedule         text,
    scheduled_for    timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    locked_by        text,
    locked_until     timestamptz,
    claims           integer     NOT NULL DEFAULT 0,
    resumes          integer     NOT NULL DEFAULT 0,
    done             bigint      NOT NULL DEFAULT 0,
    total            bigint,
    counts           jsonb       NOT NULL DEFAULT '{}',
    errors           jsonb       NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_jobs_kind_valid CHECK (kind IN ('backfill', 'resync', 'reconcile')),
    CONSTRAINT sync_jobs_direction_valid CHECK (direction IN ('to_hubspot', 'to_sql')),
    CONSTRAINT sync_jobs_status_valid
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT sync_jobs_running_is_held
        CHECK (status <> 'running' OR (locked_by IS NOT NULL AND locked_until IS NOT NULL)),
    CONSTRAINT sync_jobs_finished_has_time
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT sync_jobs_members_array CHECK (jsonb_typeof(members) = 'array'),
    CONSTRAINT sync_jobs_schedule_time CHECK ((schedule IS NULL) = (scheduled_for IS NULL))
);

-- One queued or running job per kind and object: a second request is refused (409), a
-- schedule's overlapping run is skipped.
CREATE UNIQUE INDEX sync_jobs_one_active ON sync_jobs (kind, object)
    WHERE status IN ('queued', 'running');
-- One job per schedule and fire time, however many instances fire it.
CREATE UNIQUE INDEX sync_jobs_one_per_fire ON sync_jobs (schedule, scheduled_for)
    WHERE schedule IS NOT NULL;
CREATE INDEX sync_jobs_claimable ON sync_jobs (id) WHERE status IN ('queued', 'running');
CREATE INDEX sync_jobs_created ON sync_jobs (created_at DESC, id DESC);

COMMENT ON TABLE sync_jobs IS
    'hubsync jobs (backfill, resync, reconcile) started through the job API, `hubsync jobs start` or a schedule. '
    'queued: waiting for an instance; running: held by locked_by until locked_until (renewed while it runs).';
COMMENT ON COLUMN sync_jobs.members IS 'resync: the members'' keys (sql_key) to queue.';
COMMENT ON COLUMN sync_jobs.requested_by IS 'api, cli, or schedule.';
COMMENT ON COLUMN sync_jobs.schedule IS 'The schedule (config `schedules:`) that started the job, with the time it fired for.';
COMMENT ON COLUMN sync_jobs.cancel_requested IS 'Set by a cancel of a running job; its runner stops and marks it cancelled.';
COMMENT ON COLUMN sync_jobs.claims IS 'How often an instance claimed the job: more than 1 means it was resumed after its instance stopped.';
COMMENT ON COLUMN sync_jobs.resumes IS 'How often it was taken over from an instance that stopped while running it (a crash; a clean stop gives it back instead). Past 5 it fails.';
COMMENT ON COLUMN sync_jobs.done IS 'Records handled so far (read, for a backfill).';
COMMENT ON COLUMN sync_jobs.total IS 'Records to handle, when known.';
COMMENT ON COLUMN sync_jobs.counts IS 'Records by outcome: read and queued (backfill), queued and missing (resync), planned actions (dry runs).';
COMMENT ON COLUMN sync_jobs.errors IS 'Why the job failed or was resumed: one entry {at, message} each.';
