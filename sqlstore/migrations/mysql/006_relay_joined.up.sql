-- +goose Up
-- When each relay joined, on the database's clock (UTC, as every time of
-- the outbox), so that `outbox status` shows how long a relay has been
-- live beside when its membership expires. Rows present before this
-- migration get the migration's time.
ALTER TABLE outbox_events_relays ADD COLUMN joined_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6));
