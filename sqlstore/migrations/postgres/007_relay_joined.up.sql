-- +goose Up
-- When each relay joined, on the database's clock, so that `outbox status`
-- shows how long a relay has been live beside when its membership
-- expires. Rows present before this migration get the migration's time.
ALTER TABLE outbox_events_relays ADD COLUMN IF NOT EXISTS joined_at TIMESTAMPTZ NOT NULL DEFAULT now();
