package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
)

// finishTimeout bounds the writes that record a pass's outcome (mark,
// fail, release) once the pass's own context has ended, so a stopping
// relay still records what the broker acknowledged.
const finishTimeout = 5 * time.Second

// maxErrorLen is how much of a publish error is kept as LastError.
const maxErrorLen = 1000

// Worker is the relay: it claims due events from a Store, publishes them
// in batches and records the outcome. Any number of Workers, in one
// process or many, may share a Store.
type Worker struct {
	store   Store
	pub     Publisher
	cfg     config
	kick    chan struct{}
	running atomic.Bool
}

// SyncResult counts what one relay pass did.
type SyncResult struct {
	Claimed  int // events claimed
	Synced   int // acknowledged by the broker and marked synced
	Failed   int // not acknowledged; rescheduled with backoff
	Buried   int // not acknowledged and buried (dead)
	Released int // given back unattempted because the pass was stopped
}

// NewWorker returns a relay over store and pub. See the With* options for
// its settings and their defaults.
func NewWorker(store Store, pub Publisher, opts ...Option) (*Worker, error) {
	if store == nil || pub == nil {
		return nil, fmt.Errorf("%w: store and publisher are required", ErrInvalidConfig)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return &Worker{store: store, pub: pub, cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// Run relays events until ctx ends, then returns nil once its current
// batch is marked or released. It passes at once, then every interval,
// at once again after a full batch (so a backlog drains at full speed), and
// whenever Kick is called. A pass that fails is logged and retried at the
// next interval. Run starts no goroutine of its own.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.running.Store(false)

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-w.kick:
		}
		res, err := w.SyncPending(ctx, w.cfg.batchSize)
		next := w.cfg.interval
		switch {
		case err != nil:
			if ctx.Err() == nil {
				w.cfg.logger.Warn("outbox: relay pass failed", "err", err)
			}
		case res.Claimed == w.cfg.batchSize && res.Synced == res.Claimed:
			next = 0 // a full batch went through: more is likely waiting
		}
		timer.Reset(next)
	}
}

// Kick wakes a running relay for an immediate pass. It never blocks.
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// SyncPending runs one relay pass: claim up to batchSize due events
// (the configured batch size if batchSize <= 0), publish them in one batch,
// mark those the broker acknowledged and reschedule or bury the rest. The
// pass is bounded by the configured timeout. It returns what it did, and an
// error when the store failed; publish failures are recorded on the events,
// not returned.
func (w *Worker) SyncPending(ctx context.Context, batchSize int) (SyncResult, error) {
	if batchSize <= 0 {
		batchSize = w.cfg.batchSize
	}
	if batchSize > MaxBatchSize {
		batchSize = MaxBatchSize
	}
	passCtx, cancel := context.WithTimeout(ctx, w.cfg.timeout)
	defer cancel()
	claim, err := w.store.Claim(passCtx, ClaimRequest{Limit: batchSize, Lease: w.cfg.lease})
	if err != nil {
		return SyncResult{}, fmt.Errorf("outbox: claim: %w", err)
	}
	return w.deliver(ctx, passCtx, claim)
}

// deliver publishes a claimed batch and records the outcome. ctx tells a
// stop (its end releases unacknowledged events instead of counting an
// attempt); passCtx bounds the publish.
func (w *Worker) deliver(ctx, passCtx context.Context, claim *Claim) (SyncResult, error) {
	res := SyncResult{Claimed: len(claim.Events)}
	if len(claim.Events) == 0 {
		return res, nil
	}
	failed := failuresOf(claim.Events, w.pub.Publish(passCtx, claim.Events))

	stopping := ctx.Err() != nil
	acked := make([]string, 0, len(claim.Events)-len(failed))
	var fails []Failure
	var release []string
	for _, e := range claim.Events {
		ferr, bad := failed[e.ID]
		switch {
		case !bad:
			acked = append(acked, e.ID)
		case stopping && !IsPermanent(ferr):
			release = append(release, e.ID)
		default:
			attempt := e.Delivery.Attempts + 1
			dead := IsPermanent(ferr) || attempt >= w.cfg.maxAttempts
			fails = append(fails, Failure{ID: e.ID, Err: errorText(ferr), Delay: w.backoff(attempt), Dead: dead})
			if dead {
				res.Buried++
			} else {
				res.Failed++
			}
		}
	}

	// Record the outcome even if ctx has ended: what the broker acknowledged
	// must be marked, or it would be published again.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	var errs []error
	if len(acked) > 0 {
		n, err := w.store.MarkSynced(fctx, claim.Token, acked)
		res.Synced = n
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox: mark %d acknowledged events synced (they will be published again when their lease ends): %w", len(acked), err))
		} else if n < len(acked) {
			w.cfg.logger.Warn("outbox: lease lost before mark; another relay took the events", "events", len(acked)-n)
		}
	}
	if len(fails) > 0 {
		if _, err := w.store.Fail(fctx, claim.Token, fails); err != nil {
			errs = append(errs, fmt.Errorf("outbox: record %d failed attempts: %w", len(fails), err))
		}
		for _, f := range fails {
			if f.Dead {
				w.cfg.logger.Error("outbox: event buried", "event_id", f.ID, "err", f.Err)
			}
		}
	}
	if len(release) > 0 {
		n, err := w.store.Release(fctx, claim.Token, release)
		res.Released = n
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox: release %d events: %w", len(release), err))
		}
	}
	if w.cfg.logger.Enabled(ctx, slog.LevelInfo) {
		w.cfg.logger.Info(fmt.Sprintf("outbox: synced %d (failed %d)", res.Synced, res.Failed+res.Buried),
			"synced", res.Synced, "failed", res.Failed, "buried", res.Buried, "released", res.Released)
	}
	if len(failed) > 0 && !stopping {
		var sample error
		for _, e := range failed {
			sample = e
			break
		}
		w.cfg.logger.Warn("outbox: publish failed (will retry)", "events", len(failed), "err", sample)
	}
	return res, errors.Join(errs...)
}

// backoff returns the delay before attempt+1: backoffMin doubled per
// attempt, capped at backoffMax, with equal jitter (a random point in the
// upper half) so relays that failed together do not retry together.
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.backoffMin
	for i := 1; i < attempt && d < w.cfg.backoffMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.backoffMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func errorText(err error) string {
	s := err.Error()
	if len(s) > maxErrorLen {
		s = strings.ToValidUTF8(s[:maxErrorLen], "")
	}
	return s
}
