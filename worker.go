package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/eventsync/outbox/storage"
)

// Worker is the relay: what drains the events that the publication right
// after commit left pending, with retries, backoff, a circuit breaker and
// burial of poison events. *Outbox is the one implementation; a service
// depends on Worker to run the relay (Run in a goroutine of its own, or one
// pass at a time with SyncPending) or to fake it in its tests.
type Worker interface {
	// Run relays until ctx ends, then returns nil once its batch is marked
	// or released and every goroutine it started has ended.
	Run(ctx context.Context) error
	// SyncPending runs one relay pass of at most batchSize events.
	SyncPending(ctx context.Context, batchSize int) (Result, error)
	// Kick wakes a running relay for an immediate pass; it never blocks.
	Kick()
	// Breaker returns the state of the relay's circuit breaker.
	Breaker() BreakerState
}

var _ Worker = (*Outbox)(nil)

// The causes with which a publication's context ends on its own, told
// apart from a stop of the relay (see stopped).
var (
	errPassTimeout      = errors.New("outbox: relay pass timed out")
	errImmediateTimeout = errors.New("outbox: immediate publication timed out")
)

// stopped reports whether ctx ended because the relay is stopping (or the
// immediate publication ran out of time) rather than because a relay pass
// ran out of time, which is the broker's failure.
func stopped(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), errPassTimeout)
}

// Run relays events until ctx ends, then returns nil once its current
// batch is marked or released and every goroutine it started has ended.
// It passes at once, then every interval, at once again after any pass that
// delivered events (so a backlog drains at full speed), whenever Kick is
// called, and, if the store is a storage.Notifier, whenever events are
// committed. While the circuit breaker is open it only probes the broker.
// A pass that fails is logged and retried with backoff. Run returns
// ErrRunning if the relay of this Outbox is already running.
func (o *Outbox) Run(ctx context.Context) error {
	if !o.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer o.running.Store(false)
	defer o.leave(ctx)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if ow, ok := o.store.(storage.Owner); ok {
		wg.Go(func() { o.beat(ctx, ow) })
	}
	if m, ok := o.store.(storage.Maintainer); ok {
		wg.Go(func() { o.maintain(ctx, m) })
	}
	if n, ok := o.store.(storage.Notifier); ok {
		wg.Go(func() {
			if err := n.Listen(ctx, o.Kick); err != nil && ctx.Err() == nil {
				o.cfg.logger.Warn("outbox: cannot listen for commits; relying on the interval", "err", err)
			}
		})
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	var purge retention
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-o.kick:
		}
		timer.Reset(o.step(ctx))
		if o.cfg.retention > 0 && ctx.Err() == nil && purge.due() {
			if o.purge(ctx) {
				purge.again() // more to purge: another turn after the next pass
				o.Kick()
			}
		}
	}
}

// beat runs a storage.Owner's heartbeat until ctx ends, apart from the
// relay's passes, so that a pass that waits for the broker never costs
// the relay its membership. A heartbeat that took parts wakes the relay:
// their events wait. Failures are logged when they start and end, and
// retried sooner.
func (o *Outbox) beat(ctx context.Context, ow storage.Owner) {
	o.repeat(ctx, "outbox: relay heartbeat failed; its partitions move to other relays if it goes on failing", "outbox: relay heartbeat is back",
		func() (time.Duration, error) {
			next, took, err := ow.Heartbeat(ctx)
			if err != nil {
				next = min(next/4, next)
			}
			if took {
				o.Kick()
			}
			return next, err
		})
}

// repeat runs step until ctx ends or step has nothing more to do (next
// of 0 or less), waiting next between runs, apart from the relay's
// passes. The first failure of a run of them is logged at Warn with
// warn, the success that ends it at Info with back.
func (o *Outbox) repeat(ctx context.Context, warn, back string, step func() (next time.Duration, err error)) {
	failing := false
	for ctx.Err() == nil {
		next, err := step()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				o.cfg.logger.Warn(warn, "err", err)
			}
			failing = true
		case failing:
			failing = false
			o.cfg.logger.Info(back)
		}
		if next <= 0 {
			return // nothing to do
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// rebalanceWait is how soon a relay that owns less than its fair share
// claims again after a pass that delivered nothing.
const rebalanceWait = 100 * time.Millisecond

// leave gives back what a storage.Owner store owns when Run stops, on a
// context the stop has not ended, bounded by finishTimeout.
func (o *Outbox) leave(ctx context.Context) {
	l, ok := o.store.(storage.Owner)
	if !ok {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if err := l.Leave(lctx); err != nil {
		o.cfg.logger.Warn("outbox: cannot give back the relay's partitions; they move when their leases end", "err", err)
	}
}

// step runs one turn of Run and returns how long to wait for the next.
func (o *Outbox) step(ctx context.Context) time.Duration {
	if o.breaker.isOpen() {
		if d := o.breaker.untilProbe(time.Now()); d > 0 {
			return d // woken early: keep waiting for the probe
		}
		if !o.probe(ctx) {
			return o.breaker.untilProbe(time.Now())
		}
		o.cfg.logger.Info("outbox: broker is back; draining the backlog")
	}
	res, err := o.SyncPending(ctx, o.cfg.batchSize)
	if err != nil {
		if ctx.Err() != nil {
			return o.cfg.interval
		}
		// The database failed: retry with backoff, not a whole interval
		// later, so a short outage does not delay the backlog.
		o.errRun++
		o.storeFailing.Store(true)
		d := min(o.backoff(o.errRun), o.cfg.interval)
		o.cfg.logger.Warn("outbox: relay pass failed", "err", err, "retry_in", d)
		return d
	}
	if o.errRun > 0 {
		o.cfg.logger.Info("outbox: store is back; relay resumed", "failed_passes", o.errRun)
	}
	o.errRun = 0
	o.storeFailing.Store(false)
	switch {
	case res.BrokerErr != nil && o.breaker.isOpen():
		return o.breaker.untilProbe(time.Now())
	case res.BrokerErr != nil:
		// The failed events are due again at once: retry soon, so that a
		// broker back within moments is used at once and one that stays
		// down opens the breaker, doubling the wait up to the interval.
		return min(o.cfg.interval, o.cfg.probeMin<<min(max(o.breaker.snapshot().Failures-1, 0), 16))
	case res.Synced > 0:
		// Work went through: pass again at once while there is more. A
		// batch can be short with much left (an ordered claim leaves out
		// aggregates whose head another relay holds), so only an empty
		// pass makes the relay wait for its interval.
		return 0
	}
	if ow, ok := o.store.(storage.Owner); ok && ow.Rebalancing() {
		// Parts other relays give back are waiting to be taken.
		return min(o.cfg.interval, rebalanceWait)
	}
	return o.cfg.interval
}

// probe checks an open breaker's broker and reports whether it closed.
// With a Pinger it pings; otherwise it publishes a batch of one event.
func (o *Outbox) probe(ctx context.Context) bool {
	p, ok := o.pub.(Pinger)
	if !ok {
		res, err := o.SyncPending(ctx, 1) // records success or failure on the breaker
		if err != nil || res.Claimed == 0 {
			o.breaker.postpone(time.Now()) // nothing was sent: no answer, try later
		}
		return !o.breaker.isOpen()
	}
	pctx, cancel := context.WithTimeout(ctx, o.cfg.timeout)
	defer cancel()
	if err := p.Ping(pctx); err != nil {
		o.brokerFailed(ctx, err)
		return false
	}
	o.brokerOK(ctx)
	return true
}

// Kick wakes a running relay for an immediate pass. It never blocks.
func (o *Outbox) Kick() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Breaker returns the state of the relay's circuit breaker.
func (o *Outbox) Breaker() BreakerState { return o.breaker.snapshot() }

// SyncPending runs one relay pass: claim up to batchSize due events
// (the configured batch size if batchSize <= 0), publish them in one batch,
// mark those the broker acknowledged and reschedule or bury the rest. The
// pass is bounded by the configured timeout. It returns what it did, and an
// error when the store failed; publish failures are recorded on the events
// (and in Result.BrokerErr), not returned. If ctx ends during the pass,
// the events not acknowledged are given back without counting an attempt.
func (o *Outbox) SyncPending(ctx context.Context, batchSize int) (Result, error) {
	if batchSize <= 0 {
		batchSize = o.cfg.batchSize
	}
	batchSize = min(batchSize, MaxBatchSize)
	ctx, cancel := context.WithTimeoutCause(ctx, o.cfg.timeout, errPassTimeout)
	defer cancel()
	claim, err := o.store.Claim(ctx, o.claimRequest(batchSize, nil))
	if err != nil {
		return Result{}, fmt.Errorf("outbox: claim: %w", err)
	}
	return o.deliver(ctx, claim, false)
}

func (o *Outbox) claimRequest(limit int, ids []string) storage.ClaimRequest {
	return storage.ClaimRequest{Limit: limit, Lease: o.cfg.lease, IDs: ids, Unordered: o.cfg.unordered, SkipDead: o.cfg.skipDead}
}

// brokerFailed counts a whole-batch failure on the breaker, and tells
// when that opened it.
func (o *Outbox) brokerFailed(ctx context.Context, err error) {
	if o.breaker.failure(time.Now()) {
		o.cfg.logger.Warn("outbox: broker unavailable; circuit breaker open", "err", err)
		o.cfg.hooks.breakerChanged(ctx, o.breaker.snapshot())
	}
}

// brokerOK closes the breaker, and tells when it was open.
func (o *Outbox) brokerOK(ctx context.Context) {
	if o.breaker.success() {
		o.cfg.hooks.breakerChanged(ctx, o.breaker.snapshot())
	}
}

// backoff returns the delay before attempt+1: backoffMin doubled per
// attempt, capped at backoffMax, with equal jitter (a random point in the
// upper half) so relays that failed together do not retry together.
func (o *Outbox) backoff(attempt int) time.Duration {
	d := o.cfg.backoffMin
	for i := 1; i < attempt && d < o.cfg.backoffMax; i++ {
		d *= 2
	}
	d = min(d, o.cfg.backoffMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
