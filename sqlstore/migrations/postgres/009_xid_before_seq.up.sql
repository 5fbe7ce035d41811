-- +goose Up
-- Watermarks (migration 008) find an event that committed after a front
-- was read past it among the transactions in progress in the front's
-- snapshot. That holds when every event's transaction has its ID before
-- the event takes its seq: then an event with a seq at most the front's
-- took it before the front's snapshot, and if that snapshot did not see
-- it committed, its transaction was in progress then. The seq's default
-- takes the transaction's ID first (txid_current() assigns one if the
-- transaction has none yet; CASE evaluates its condition first).
DO $$ BEGIN EXECUTE format('ALTER TABLE outbox_events ALTER COLUMN seq SET DEFAULT CASE WHEN txid_current() > 0 THEN nextval(%L::regclass) END', pg_get_serial_sequence('outbox_events', 'seq')); END $$;
