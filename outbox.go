package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Outbox ties the pieces together: Save writes events in the caller's
// transaction, Publish sends them at once after commit, and the relay
// (Run) delivers whatever that left pending. It is safe for concurrent use.
type Outbox struct {
	store  Store
	worker *Worker
	cfg    config
}

// New returns an Outbox over store and pub. See the With* options for its
// settings and their defaults.
func New(store Store, pub Publisher, opts ...Option) (*Outbox, error) {
	w, err := NewWorker(store, pub, opts...)
	if err != nil {
		return nil, err
	}
	return &Outbox{store: store, worker: w, cfg: w.cfg}, nil
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
// with backoff: it is never a reason to fail the business operation. Publish runs on its own timeout
// (WithTimeout), detached from ctx's cancellation, so a request that ends
// right after commit does not abort its own publication.
func (o *Outbox) Publish(ctx context.Context, events ...*Event) (SyncResult, error) {
	if len(events) == 0 {
		return SyncResult{}, nil
	}
	ids := make([]string, 0, len(events))
	for _, e := range events {
		if e != nil && e.ID != "" {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return SyncResult{}, nil
	}
	if o.worker.breaker.isOpen() {
		return SyncResult{}, ErrBreakerOpen
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.timeout)
	defer cancel()
	claim, err := o.store.Claim(ctx, o.worker.claimRequest(len(ids), ids))
	if err != nil {
		// The events are committed and due: let the relay try them now,
		// not an interval later, unless it is already backing off after
		// store errors of its own (waking it would retry a failing
		// database at the rate of requests).
		if !o.worker.storeFailing.Load() {
			o.worker.Kick()
		}
		return SyncResult{}, fmt.Errorf("outbox: publish: claim: %w (the events stay pending for the relay)", err)
	}
	if len(claim.Events) < len(ids) {
		// Some were not claimable: most likely held behind an earlier event
		// of their aggregate that is being published right now. Wake the
		// relay now and again after the next mark, whichever comes first.
		o.worker.deferred.Store(true)
		o.worker.Kick()
	}
	res, err := o.worker.deliver(ctx, ctx, claim, true)
	if res.BrokerErr != nil {
		// The broker failed the batch, as a whole or event by event: the
		// events are due again at once; let the relay retry them and count
		// toward the breaker.
		o.worker.Kick()
	}
	if err != nil {
		return res, err
	}
	if n := res.Failed + res.Buried + res.Released; n > 0 {
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

// Run runs the relay until ctx ends; see Worker.Run.
func (o *Outbox) Run(ctx context.Context) error { return o.worker.Run(ctx) }

// Worker returns the Outbox's relay, for SyncPending or Kick.
func (o *Outbox) Worker() *Worker { return o.worker }

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
