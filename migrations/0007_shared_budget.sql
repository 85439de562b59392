-- The HubSpot budget every hubsync instance on this queue database shares. HubSpot counts its
-- rolling 10 s limit per app and its daily limit per account, not per process, so instances take
-- their request slots from one log here instead of pacing themselves alone.
--
-- A lane's log holds the slot times (this server's clock) granted within the last window,
-- future reservations included. A grant takes the lane row's lock, so grants are serialised.

CREATE TABLE rate_lanes (
    lane     text PRIMARY KEY,
    -- Granted slot times within the last window, ascending; the last may lie ahead.
    slots    timestamptz[] NOT NULL DEFAULT '{}',
    -- Grants of every instance since the lane was created (the daily budget's shared count).
    granted  bigint NOT NULL DEFAULT 0
);
INSERT INTO rate_lanes (lane) VALUES ('standard'), ('search');
COMMENT ON TABLE rate_lanes IS
    'HubSpot request slots granted to every hubsync instance within the last window, per limit (standard 10 s window, search).';

-- Instances that share the budget, with their heartbeat and what they report for operators.
CREATE TABLE rate_instances (
    instance        text PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- shared: takes slots from rate_lanes; local: PostgreSQL unreachable at its last report, it
    -- paced itself on its own share.
    mode            text NOT NULL DEFAULT 'shared' CHECK (mode IN ('shared', 'local')),
    granted         bigint NOT NULL DEFAULT 0,
    search_granted  bigint NOT NULL DEFAULT 0,
    -- Standard-lane grants within its last minute.
    recent_grants   integer NOT NULL DEFAULT 0,
    -- Seconds its callers spent waiting for slots, summed over callers.
    waited_seconds  double precision NOT NULL DEFAULT 0
);
COMMENT ON TABLE rate_instances IS
    'hubsync processes sharing the HubSpot budget: heartbeat, mode, grants and wait time. A row whose heartbeat stopped is removed after an hour.';

-- Each instance's own share of a lane: what it may spend per window while it cannot reach this
-- database. The shares of instances that may be alive never add up to more than the limit.
CREATE TABLE rate_shares (
    instance  text NOT NULL REFERENCES rate_instances ON DELETE CASCADE,
    lane      text NOT NULL,
    share     integer NOT NULL CHECK (share >= 0),
    PRIMARY KEY (instance, lane)
);
COMMENT ON TABLE rate_shares IS
    'Requests per window each instance may send on its own while PostgreSQL is unreachable.';

-- One slot on p_lane for p_instance. Instances whose heartbeat is older than p_stale but newer
-- than p_hold may be spending their own share unseen, so those shares are held back from the
-- log. The slot is the earliest time at which no window of p_span holds more than the room and
-- that lies a window ÷ room after the latest slot (first come, first served, evenly spaced, so
-- a request that reaches HubSpot a little early or late still finds room). A slot further than
-- p_ahead away is not taken: the caller comes back after wait_us with slot NULL.
CREATE FUNCTION hubsync_rate_grant(
    p_lane text, p_limit integer, p_span interval, p_ahead interval,
    p_instance text, p_stale interval, p_hold interval)
RETURNS TABLE (wait_us bigint, slot timestamptz, granted bigint, held integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t      timestamptz := clock_timestamp();
    log    timestamptz[];
    n      integer;
    room   integer;
    at     timestamptz;
    total  bigint;
    kept   integer;
BEGIN
    -- A grant must not wait for the disk: the lane's row lock is held until commit. A crash of
    -- this server may forget the last grants; the instances then pace alone, quiet for longer
    -- than a window, before they take slots from it again.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT l.slots INTO log FROM rate_lanes l WHERE l.lane = p_lane FOR UPDATE;
    log := ARRAY(SELECT x FROM unnest(log) AS x WHERE x > t - p_span ORDER BY x);
    SELECT coalesce(sum(s.share), 0)::integer INTO kept
      FROM rate_shares s JOIN rate_instances i ON i.instance = s.instance
     WHERE s.lane = p_lane AND s.instance <> p_instance
       AND i.heartbeat_at <= t - p_stale AND i.heartbeat_at > t - p_hold;
    room := p_limit - kept;
    IF room <= 0 THEN
        RETURN QUERY SELECT (extract(epoch FROM p_stale) * 1e6)::bigint, NULL::timestamptz,
                            NULL::bigint, kept;
        RETURN;
    END IF;
    n := coalesce(array_length(log, 1), 0);
    at := t;
    IF n > 0 THEN
        -- Evenly spaced: a window's room spread over the window, not spent at once.
        at := greatest(at, log[n] + p_span / room);
    END IF;
    IF n >= room THEN
        at := greatest(at, log[n - room + 1] + p_span);
    END IF;
    IF at > t + p_ahead THEN
        RETURN QUERY SELECT (extract(epoch FROM (at - p_ahead - t)) * 1e6)::bigint + 1,
                            NULL::timestamptz, NULL::bigint, kept;
        RETURN;
    END IF;
    UPDATE rate_lanes l SET slots = log || at, granted = l.granted + 1
     WHERE l.lane = p_lane RETURNING l.granted INTO total;
    RETURN QUERY SELECT greatest(0, (extract(epoch FROM (at - clock_timestamp())) * 1e6)::bigint),
                        at, total, kept;
END
$$;

-- p_instance reports in: its heartbeat, mode and figures; the slots it granted on its own while
-- it could not reach this database (as ages before now, per lane) join the log; its share of
-- each lane is recomputed so that the shares of live instances (heartbeat newer than p_hold)
-- never exceed the limit. Heartbeats are serialised by an advisory lock.
CREATE FUNCTION hubsync_rate_heartbeat(
    p_instance text, p_mode text, p_lanes text[], p_limits integer[], p_hold interval,
    p_granted bigint, p_search_granted bigint, p_recent integer, p_waited double precision,
    p_local_lanes text[], p_local_ages_us bigint[])
RETURNS TABLE (lane text, share integer, instances integer, recent_total bigint, granted bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t       timestamptz;
    i       integer;
    live    integer;
    others  integer;
    mine    integer;
    pushed  timestamptz[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtext('hubsync_rate_heartbeat'));
    t := clock_timestamp();
    INSERT INTO rate_instances AS r (instance, heartbeat_at, mode, granted, search_granted,
                                     recent_grants, waited_seconds)
    VALUES (p_instance, t, p_mode, p_granted, p_search_granted, p_recent, p_waited)
    ON CONFLICT (instance) DO UPDATE
       SET heartbeat_at = t, mode = p_mode, granted = p_granted,
           search_granted = p_search_granted, recent_grants = p_recent,
           waited_seconds = p_waited;
    DELETE FROM rate_instances r WHERE r.heartbeat_at < t - interval '1 hour';
    SELECT count(*)::integer INTO live FROM rate_instances r WHERE r.heartbeat_at > t - p_hold;
    FOR i IN 1 .. coalesce(array_length(p_lanes, 1), 0) LOOP
        INSERT INTO rate_lanes AS l (lane) VALUES (p_lanes[i]) ON CONFLICT ON CONSTRAINT rate_lanes_pkey DO NOTHING;
        pushed := ARRAY(
            SELECT t - make_interval(secs => a.age / 1e6)
              FROM unnest(p_local_lanes, p_local_ages_us) AS a(lane, age)
             WHERE a.lane = p_lanes[i]);
        IF coalesce(array_length(pushed, 1), 0) > 0 THEN
            UPDATE rate_lanes l
               SET slots = ARRAY(SELECT x FROM unnest(l.slots || pushed) AS x ORDER BY x),
                   granted = l.granted + array_length(pushed, 1)
             WHERE l.lane = p_lanes[i];
        END IF;
        SELECT coalesce(sum(s.share), 0)::integer INTO others
          FROM rate_shares s JOIN rate_instances r ON r.instance = s.instance
         WHERE s.lane = p_lanes[i] AND s.instance <> p_instance AND r.heartbeat_at > t - p_hold;
        mine := greatest(0, least(p_limits[i] / live, p_limits[i] - others));
        INSERT INTO rate_shares AS s (instance, lane, share) VALUES (p_instance, p_lanes[i], mine)
        ON CONFLICT ON CONSTRAINT rate_shares_pkey DO UPDATE SET share = mine;
        RETURN QUERY
            SELECT p_lanes[i], mine, live,
                   (SELECT coalesce(sum(r.recent_grants), 0)::bigint FROM rate_instances r
                     WHERE r.heartbeat_at > t - p_hold),
                   (SELECT l.granted FROM rate_lanes l WHERE l.lane = p_lanes[i]);
    END LOOP;
END
$$;

-- p_instance stops cleanly: its row and shares go, so the others need not hold its share back.
CREATE FUNCTION hubsync_rate_leave(p_instance text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM rate_instances WHERE instance = p_instance;
$$;
