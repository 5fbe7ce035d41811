package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// claimer is how a Store hands events out to relays and records what
// became of them. There are two, chosen once in New: partition ownership
// (owner, the default) and row leases (rowLeases, WithRowLeases). The
// Store's methods call it and never ask which one it is.
type claimer interface {
	// claim is Store.Claim once the request is checked.
	claim(ctx context.Context, req storage.ClaimRequest, cr claimRun) (*outbox.Claim, error)
	// markSynced, release and fail are the Store's methods of those
	// names; fail is given a request that is not empty.
	markSynced(ctx context.Context, token string, ids []string) (int, error)
	release(ctx context.Context, token string, ids []string) (int, error)
	fail(ctx context.Context, token string, failures []storage.Failure) (int, error)

	// heartbeat, leave, rebalancing and owned are storage.Owner's and
	// Store.Owned: membership among the table's relays. Row leases have
	// none (heartbeat returns 0: nothing to beat).
	heartbeat(ctx context.Context) (next time.Duration, took bool, err error)
	leave(ctx context.Context) error
	rebalancing() bool
	owned() []int
	// requeued tells the claimer that dead events were re-queued.
	requeued()
}

// rowLeases claims by leasing rows: each claimed row records the claim's
// token and the end of its lease, and every write is fenced by the token
// in the row. Relays of versions before partition ownership work this
// way, and it needs no partition tables.
type rowLeases struct{ s *Store }

func (r rowLeases) claim(ctx context.Context, req storage.ClaimRequest, cr claimRun) (*outbox.Claim, error) {
	s := r.s
	rows, err := r.leaseRows(ctx, cr, req.Limit, req.IDs)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(rows, func(a, b eventRow) int { return cmpInt64(a.Seq, b.Seq) })
	events, err := s.decodeClaimed(ctx, cr, rows)
	if err != nil {
		return nil, err
	}
	return &outbox.Claim{Token: cr.token, Events: events}, nil
}

// leaseRows leases up to limit due events (of ids if not nil) to cr, a
// chunk of ids at a time, and returns their rows. If a chunk fails, what
// earlier ones leased is given back.
func (r rowLeases) leaseRows(ctx context.Context, cr claimRun, limit int, ids []string) ([]eventRow, error) {
	s := r.s
	if ids == nil {
		return s.d.claim(ctx, s, cr, limit, nil)
	}
	var rows []eventRow
	// The IDs appear twice in an ordered claim (candidates and the rows
	// that may precede them).
	for _, chunk := range chunks(dedupe(ids), (s.sx.maxParams-16)/2) {
		if len(rows) >= limit {
			break
		}
		got, err := s.d.claim(ctx, s, cr, limit-len(rows), chunk)
		if err != nil {
			if len(rows) > 0 {
				// Give back what earlier chunks took; the caller sees
				// only the error.
				s.releaseRows(ctx, cr.token, rows)
			}
			return nil, err
		}
		rows = append(rows, got...)
	}
	return rows, nil
}

func (r rowLeases) markSynced(ctx context.Context, token string, ids []string) (int, error) {
	s := r.s
	now := s.sx.Time(s.now())
	n, err := s.perChunk(ctx, token, ids, 2, func(q *query, chunk []string) {
		q.sql("UPDATE ", s.t.Quoted, " SET synced_at = ", q.arg(now), s.perRow(),
			", claim_token = NULL, locked_until = NULL WHERE claim_token = ", q.arg(token), " AND ", q.in("id", chunk, false))
	})
	if err != nil {
		return n, fmt.Errorf("sqlstore: mark synced: %w", err)
	}
	return n, nil
}

func (r rowLeases) release(ctx context.Context, token string, ids []string) (int, error) {
	s := r.s
	n, err := s.perChunk(ctx, token, ids, 1, func(q *query, chunk []string) {
		q.sql("UPDATE ", s.t.Quoted, " SET claim_token = NULL, locked_until = NULL WHERE claim_token = ",
			q.arg(token), " AND ", q.in("id", chunk, false))
	})
	if err != nil {
		return n, fmt.Errorf("sqlstore: release: %w", err)
	}
	return n, nil
}

func (r rowLeases) fail(ctx context.Context, token string, failures []storage.Failure) (int, error) {
	s := r.s
	now := s.now()
	total := 0
	for _, chunk := range chunks(failures, (s.sx.maxParams-4)/6) {
		q := s.failSet(chunk, now)
		q.sql(s.perRow(), ", claim_token = NULL, locked_until = NULL WHERE claim_token = ", q.arg(token), " AND ", q.in("id", failureIDs(chunk), false))
		n, err := s.exec(ctx, q)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlstore: fail: %w", err)
		}
	}
	return total, nil
}

func (rowLeases) heartbeat(context.Context) (time.Duration, bool, error) { return 0, false, nil }
func (rowLeases) leave(context.Context) error                            { return nil }
func (rowLeases) rebalancing() bool                                      { return false }
func (rowLeases) owned() []int                                           { return nil }
func (rowLeases) requeued()                                              {}
