-- +goose Up
-- When each relay joined, on the database's clock, so that `outbox status`
-- shows how long a relay has been live beside when its membership
-- expires. SQLite adds no column with a default that is not a constant:
-- a trigger (on one line, as Migrate splits statements at line ends)
-- stamps each new row. Rows present before this migration get the
-- migration's time.
ALTER TABLE outbox_events_relays ADD COLUMN joined_at TEXT;
UPDATE outbox_events_relays SET joined_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE joined_at IS NULL;
CREATE TRIGGER IF NOT EXISTS outbox_events_relays_joined AFTER INSERT ON outbox_events_relays BEGIN UPDATE outbox_events_relays SET joined_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE owner = NEW.owner; END;
