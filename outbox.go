package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
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
// Commit. It claims the events first, so a relay never publishes them too;
// an event not yet committed, already published, claimed by a relay, or
// (with per-aggregate order) behind an undelivered earlier event of its
// aggregate is left alone for the relay. While the circuit breaker is open
// it sends nothing and returns ErrBreakerOpen.
//
// The result counts what it claimed and published; events it did not claim
// were left for the relay. A non-nil error means some events were not
// published now. They are safe in the table and the relay delivers them
// with backoff: it is never a reason to fail the business operation.
// Publish runs on its own timeout (WithTimeout), detached from ctx's
// cancellation, so a request that ends right after commit does not abort
// its own publication; an immediate publication that runs out of time
// gives its events back to the relay without counting an attempt.
func (o *Outbox) Publish(ctx context.Context, events ...*Event) (Result, error) {
	ids := make([]string, 0, len(events))
	for _, e := range events {
		if e != nil && e.ID != "" {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return Result{}, nil
	}
	if o.breaker.isOpen() {
		return Result{}, ErrBreakerOpen
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
		return Result{}, fmt.Errorf("outbox: publish: claim: %w (the events stay pending for the relay)", err)
	}
	if len(claim.Events) < len(ids) {
		// Some were not claimable: most likely held behind an earlier event
		// of their aggregate that is being published right now. Wake the
		// relay now and again after the next mark, whichever comes first.
		o.deferred.Store(true)
		o.Kick()
	}
	res, err := o.deliver(ctx, claim, true)
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
		return res, fmt.Errorf("outbox: publish: %d of %d events not acknowledged; the relay will retry them", n, len(claim.Events))
	}
	return res, nil
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
// events fn saved. The error is fn's, or the begin or commit failure;
// a failed publication is not an error here (the relay delivers the events,
// see Publish) and is logged.
func (o *Outbox) Transact(ctx context.Context, db TxBeginner, fn func(tx *Tx) error) error {
	if isNil(db) {
		return fmt.Errorf("outbox: transact: nil database")
	}
	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: begin: %w", err)
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
			return errors.Join(err, fmt.Errorf("outbox: rollback: %w", rbErr))
		}
		return err
	}
	committed = true
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("outbox: commit: %w", err)
	}
	if _, err := o.Publish(ctx, tx.saved...); err != nil {
		o.cfg.logger.Warn("outbox: event saved, publish deferred to the relay", "err", err)
	}
	return nil
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
