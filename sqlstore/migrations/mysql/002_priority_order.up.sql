-- +goose Up
-- Event priority and the indexes of ordered claims, in one ALTER TABLE,
-- which applies whole or not at all. MySQL 8 has no ADD COLUMN IF NOT
-- EXISTS and DDL commits implicitly: if the ALTER ran but the version was
-- not recorded (a crash in between), Migrate runs only the clauses whose
-- column or index information_schema does not show; with another tool,
-- record the version by hand. MySQL has no partial indexes, so synced_at
-- leads or follows the aggregate: claims and per-aggregate checks then
-- read only undelivered rows, however long an aggregate's history. The
-- existing (synced_at, dead_at, seq) index serves purge and re-queue.
ALTER TABLE outbox_events
    ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0,
    ADD KEY outbox_events_claim_idx (synced_at, dead_at, priority DESC, seq),
    ADD KEY outbox_events_undelivered_idx (aggregate_id, synced_at, seq);
