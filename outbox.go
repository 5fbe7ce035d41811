package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eventsync/outbox/storage"
)

// Outbox is the SDK's one entry point. Save writes events in the caller's
// transaction, Publish sends them at once after commit, and the relay (Run,
// or one pass with SyncPending) delivers whatever that left pending, with
// retries, backoff, a circuit breaker and burial of poison events. Any
// number of Outboxes, in one process or many, may share one Store. It is
// safe for concurrent use.
type Outbox struct {
	store   Store
	pub     Publisher
	cfg     config
	breaker *breaker
	kick    chan struct{}
	running atomic.Bool
	// deferred is set when Publish left events for the relay (held behind
	// an earlier event of their aggregate that was in flight); the next
	// mark kicks the relay so they follow at once, not an interval later.
	deferred atomic.Bool
	errRun   int // store errors in a row; used by Run only
	// storeFailing is set while Run backs off after store errors, so that
	// Publish, whose own claim failed, does not wake it before its time.
	storeFailing atomic.Bool
}

// Result counts what one publication or relay pass did.
type Result struct {
	Claimed  int // events claimed
	Synced   int // acknowledged by the broker and marked synced
	Failed   int // not acknowledged; rescheduled
	Dead     int // not acknowledged and made dead (buried)
	Released int // given back unattempted (the pass was stopped, or held back)

	// BrokerErr is set when the publisher failed the whole batch (the
	// broker unreachable or timing out): with a plain error, or with a
	// *PublishError in which no event was acknowledged and every failure
	// is Unavailable or held back behind one (ErrHeldBack). Such a failure
	// counts an attempt but never makes an event dead; the circuit breaker
	// paces the retries.
	BrokerErr error

	// Outcomes says, for Publish and Transact, what became of each event
	// they were asked to publish, in the order they were given (one per
	// distinct ID): acknowledged, handed to the relay and why, waiting
	// for a retry, or dead. A relay pass leaves it nil.
	Outcomes []Outcome
}

// New returns an Outbox over store and pub. See the With* options for its
// settings and their defaults; an invalid one is an error wrapping
// ErrInvalidConfig that names it.
func New(store Store, pub Publisher, opts ...Option) (*Outbox, error) {
	if isNil(store) || isNil(pub) {
		return nil, fmt.Errorf("outbox: %w: store and publisher are required", ErrInvalidConfig)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if _, ok := store.(storage.Purger); cfg.retention > 0 && !ok {
		return nil, fmt.Errorf("outbox: %w: Retention is set but the store (%T) cannot purge", ErrInvalidConfig, store)
	}
	return &Outbox{
		store: store, pub: pub, cfg: cfg,
		breaker: newBreaker(cfg.breakerThreshold, cfg.probeMin, cfg.probeMax),
		kick:    make(chan struct{}, 1),
	}, nil
}

// Save validates events, gives each an ID (a UUIDv7) and CreatedAt when
// they have none, and inserts them through exec, the caller's transaction,
// in one statement. It never commits or rolls back: the events exist iff
// the caller's transaction commits. An invalid event is a *ValidationError
// and nothing is written; a transaction already ended is an error wrapping
// sql.ErrTxDone.
func (o *Outbox) Save(ctx context.Context, exec Executor, events ...*Event) error {
	if isNil(exec) {
		return ErrNilExecutor
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("outbox: save: %w", err)
	}
	if len(events) == 0 {
		return nil
	}
	if err := prepare(events, o.cfg.maxPayload, time.Now()); err != nil {
		return err
	}
	for _, h := range o.cfg.hooks.save {
		h.BeforeSave(ctx, events)
	}
	if err := o.store.Insert(ctx, exec, events); err != nil {
		return fmt.Errorf("outbox: save: %w", err)
	}
	return nil
}

// Publish sends events that Save wrote, once their transaction has
// committed, and marks those the broker acknowledged. Call it right after
// Commit. It claims the events first, so a relay never publishes them too.
// It returns when the broker has answered for what it sent (or its
// timeout passed); it never waits for a relay.
//
// Result.Outcomes says what became of each event (see Fate):
//   - Acknowledged: on the broker when Publish returns, and marked synced.
//   - HandedToRelay: not sent by this call, and not failed: another relay
//     owns the event's partition (OwnedElsewhere), or the event or an
//     earlier event of its aggregate is in flight (InFlight: a relay,
//     possibly this process's own, claimed it first), or the breaker is
//     open (BreakerOpen, with ErrBreakerOpen), or the claim failed
//     (ClaimFailed, with the error). A relay delivers it: within moments
//     when the broker is up and a relay runs (Run), since the relay that
//     owns it is woken or already at work.
//   - WaitingForRetry and Dead: sent and not acknowledged (see Fate); the
//     error then says how many.
//
// A non-nil error means some events were not published now. They are safe
// in the table and a relay delivers them: it is never a reason to fail the
// business operation. Publish runs on its own timeout (WithTimeout),
// detached from ctx's cancellation, so a request that ends right after
// commit does not abort its own publication; an immediate publication that
// runs out of time gives its events back to the relay without counting an
// attempt.
func (o *Outbox) Publish(ctx context.Context, events ...*Event) (Result, error) {
	ids := make([]string, 0, len(events))
	seen := make(map[string]bool, len(events))
	for _, e := range events {
		if e != nil && e.ID != "" && !seen[e.ID] {
			seen[e.ID] = true
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return Result{}, nil
	}
	if o.breaker.isOpen() {
		res := Result{Outcomes: handedAll(ids, BreakerOpen)}
		o.logHandoffs(ctx, res.Outcomes)
		return res, ErrBreakerOpen
	}
	ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), o.cfg.timeout, errImmediateTimeout)
	defer cancel()
	claim, err := o.store.Claim(ctx, o.claimRequest(len(ids), ids))
	if err != nil {
		// The events are committed and due: let the relay try them now,
		// not an interval later, unless it is already backing off after
		// store errors of its own (waking it would retry a failing
		// database at the rate of requests).
		if !o.storeFailing.Load() {
			o.Kick()
		}
		return Result{Outcomes: handedAll(ids, ClaimFailed)}, fmt.Errorf("outbox: publish: claim: %w (the events stay pending for the relay)", err)
	}
	elsewhere := make(map[string]bool, len(claim.Elsewhere))
	for _, id := range claim.Elsewhere {
		elsewhere[id] = true
	}
	if len(claim.Events)+len(elsewhere) < len(ids) {
		// Some were not claimable, and not because another relay owns
		// them: most likely held behind an earlier event of their
		// aggregate that is being published right now. Wake the relay now
		// and again after the next mark, whichever comes first.
		o.deferred.Store(true)
		o.Kick()
	}
	res, err := o.deliver(ctx, claim, true)
	res.Outcomes = ordered(ids, res.Outcomes, elsewhere)
	o.logHandoffs(ctx, res.Outcomes)
	if res.BrokerErr != nil {
		// The broker failed the batch, as a whole or event by event: the
		// events are due again at once; let the relay retry them and count
		// toward the breaker.
		o.Kick()
	}
	if err != nil {
		return res, err
	}
	if n := res.Failed + res.Dead + res.Released; n > 0 {
		return res, fmt.Errorf("outbox: publish: %d of %d events not acknowledged: %s", n, len(claim.Events), notAcked(res))
	}
	return res, nil
}

// notAcked says what became of the events a publication sent or claimed
// and the broker did not acknowledge, in the words of Fate.
func notAcked(res Result) string {
	var parts []string
	for _, p := range []struct {
		n    int
		fate Fate
	}{{res.Failed, WaitingForRetry}, {res.Dead, Dead}, {res.Released, HandedToRelay}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.fate))
		}
	}
	return strings.Join(parts, ", ")
}

// handedAll is the outcome of a Publish that sent nothing, for why.
func handedAll(ids []string, why Handoff) []Outcome {
	out := make([]Outcome, len(ids))
	for i, id := range ids {
		out[i] = Outcome{ID: id, Fate: HandedToRelay, Handoff: why}
	}
	return out
}

// ordered returns the outcome of each of ids, in their order: the one
// deliver gave a claimed event, and for an event not claimed, a handoff
// to the relay that owns its partition (elsewhere) or to whichever holds
// it or its aggregate.
func ordered(ids []string, claimed []Outcome, elsewhere map[string]bool) []Outcome {
	byID := make(map[string]Outcome, len(claimed))
	for _, c := range claimed {
		byID[c.ID] = c
	}
	out := make([]Outcome, len(ids))
	for i, id := range ids {
		c, ok := byID[id]
		switch {
		case ok:
		case elsewhere[id]:
			c = Outcome{ID: id, Fate: HandedToRelay, Handoff: OwnedElsewhere}
		default:
			c = Outcome{ID: id, Fate: HandedToRelay, Handoff: InFlight}
		}
		out[i] = c
	}
	return out
}

// logHandoffs logs, once per reason, the events Publish handed to the
// relay.
func (o *Outbox) logHandoffs(ctx context.Context, outcomes []Outcome) {
	if !o.cfg.logger.Enabled(ctx, slog.LevelInfo) {
		return
	}
	byWhy := map[Handoff][]string{}
	for _, c := range outcomes {
		if c.Fate == HandedToRelay {
			byWhy[c.Handoff] = append(byWhy[c.Handoff], c.ID)
		}
	}
	for why := OwnedElsewhere; why <= GivenBack; why++ {
		if ids := byWhy[why]; len(ids) > 0 {
			o.cfg.logger.Info("outbox: events handed to the relay: "+why.String(), "events", len(ids), "event_ids", ids)
		}
	}
}

// TxBeginner starts a transaction: a *sql.DB, or a *sqlx.DB through the
// BeginTx it gets from *sql.DB.
type TxBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Tx is the transaction Transact hands to its function: the *sql.Tx for
// the business writes, and Save for the events.
type Tx struct {
	*sql.Tx
	o     *Outbox
	saved []*Event
}

// Save writes events in this transaction; Transact publishes them after it
// commits.
func (t *Tx) Save(ctx context.Context, events ...*Event) error {
	if err := t.o.Save(ctx, t.Tx, events...); err != nil {
		return err
	}
	t.saved = append(t.saved, events...)
	return nil
}

// Transact runs fn in a new transaction of db, commits it if fn returns
// nil and rolls it back otherwise (or if fn panics), then publishes the
// events fn saved with Publish, and returns Publish's Result: when it
// returns, the events whose Outcome is Acknowledged are on the broker;
// the others were handed to the relay (and why) or wait for a retry.
// Transact does not wait for a relay. The error is fn's, or the begin or
// commit failure; a failed publication is not an error here (the events
// are committed and a relay delivers them, see Publish) and is logged.
func (o *Outbox) Transact(ctx context.Context, db TxBeginner, fn func(tx *Tx) error) (Result, error) {
	if isNil(db) {
		return Result{}, fmt.Errorf("outbox: transact: nil database")
	}
	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return Result{}, fmt.Errorf("outbox: begin: %w", err)
	}
	tx := &Tx{Tx: sqlTx, o: o}
	committed := false
	defer func() {
		if !committed {
			_ = sqlTx.Rollback() // on panic; fn's error path rolls back below
		}
	}()
	if err := fn(tx); err != nil {
		committed = true // rolled back here; nothing left for the deferred call
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return Result{}, errors.Join(err, fmt.Errorf("outbox: rollback: %w", rbErr))
		}
		return Result{}, err
	}
	committed = true
	if err := sqlTx.Commit(); err != nil {
		return Result{}, fmt.Errorf("outbox: commit: %w", err)
	}
	res, err := o.Publish(ctx, tx.saved...)
	if err != nil {
		o.cfg.logger.Warn("outbox: events committed; not all were published at once (see the result)", "err", err)
	}
	return res, nil
}

// isNil reports whether v is nil or a nil pointer in an interface.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}
