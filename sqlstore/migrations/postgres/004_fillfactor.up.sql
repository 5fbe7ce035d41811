-- +goose Up
-- Leave room on each heap page so that the lease a claim writes
-- (claim_token, locked_until: no index covers them) is a HOT update that
-- rewrites no index entry. Pages written from now on keep the room; a
-- table that already holds a large backlog gets it back as rows are
-- rewritten or with VACUUM FULL. Vacuum the table early and without
-- throttling: a drain marks thousands of rows a second, and until vacuum
-- removes their old index entries every claim walks past them.
ALTER TABLE outbox_events SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
