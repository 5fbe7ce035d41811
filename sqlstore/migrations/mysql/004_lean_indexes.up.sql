-- +goose Up
-- Indexes no statement needs any more, each written by every save and (all
-- but the type index) by every mark: claims and the pending list use
-- outbox_events_claim_idx, order checks outbox_events_undelivered_idx,
-- stats outbox_events_pending_type_idx.
ALTER TABLE outbox_events
    DROP KEY outbox_events_pending_idx,
    DROP KEY outbox_events_aggregate_idx,
    DROP KEY outbox_events_type_idx;
