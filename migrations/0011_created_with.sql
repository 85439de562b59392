-- A contact hubsync created and has not linked yet keeps the values it was created with, apart
-- from the write in flight: after a crash, an update sent to that contact (its own item taken
-- up again, or a newer change of the member) replaces `sent` with its changes only, and the
-- link made later must still merge against everything the create sent.

ALTER TABLE sync_writes ADD COLUMN created_with jsonb;
ALTER TABLE sync_writes ADD CONSTRAINT sync_writes_created_with_is_object
    CHECK (created_with IS NULL OR jsonb_typeof(created_with) = 'object');
COMMENT ON COLUMN sync_writes.created_with IS
    'to_hubspot, a contact created and not linked yet: the values (as mapped) it was created with, '
    'kept across the writes that follow until the item settles; NULL otherwise.';
