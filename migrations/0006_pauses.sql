-- Paused directions: while a row exists, no worker of any instance claims that object's items of
-- that direction (pollers go on queueing changes; nothing is lost). `hubsync pause` / `resume`.
CREATE TABLE sync_pauses (
    object      text NOT NULL,
    direction   text NOT NULL CHECK (direction IN ('to_hubspot', 'to_sql')),
    paused_at   timestamptz NOT NULL DEFAULT now(),
    paused_by   text NOT NULL,
    PRIMARY KEY (object, direction)
);
COMMENT ON TABLE sync_pauses IS
    'Directions an operator paused (hubsync pause): workers claim none of their items until hubsync resume.';
