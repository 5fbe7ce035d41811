-- +goose Up
-- Leave room on each heap page so that the lease a claim writes
-- (claim_token, locked_until: no index covers them) is a HOT update that
-- rewrites no index entry. Pages written from now on keep the room; a
-- table that already holds a large backlog gets it back as rows are
-- rewritten or with VACUUM FULL.
ALTER TABLE outbox_events SET (fillfactor = 70);
