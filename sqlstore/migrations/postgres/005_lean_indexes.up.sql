-- +goose Up
-- Half of each heap page free: a claim leases every row of a page it takes
-- (a 1,000-event batch spans whole pages), and only with room for all
-- their new versions on the page is every lease a HOT update that writes
-- no index entry. At 70 % about a third of the leases rewrote all the
-- indexes. Pages written from now on keep the room (VACUUM FULL gives it
-- to a table that already holds a large backlog).
ALTER TABLE outbox_events SET (fillfactor = 50);

-- Indexes no statement needs any more, each written by every save and by
-- every mark: claims and the pending list walk outbox_events_claim_idx,
-- order checks outbox_events_undelivered_idx, stats
-- outbox_events_pending_type_idx and outbox_events_synced_idx.
DROP INDEX IF EXISTS outbox_events_pending_idx;
DROP INDEX IF EXISTS outbox_events_aggregate_idx;
DROP INDEX IF EXISTS outbox_events_type_idx;
