-- +goose Up
-- Stats, in one ALTER TABLE, which applies whole or not at all (re-runs:
-- see 002). MySQL has no partial indexes: the pending events by type with their oldest
-- creation time are the (NULL, NULL) range of the first index, and the
-- events synced within a window a range of the second, which covers the
-- latency (created_at) so that no row is read.
ALTER TABLE outbox_events
    ADD KEY outbox_events_pending_type_idx (synced_at, dead_at, event_type, created_at),
    ADD KEY outbox_events_synced_latency_idx (synced_at, created_at);
