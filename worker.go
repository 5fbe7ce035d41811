package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
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
	breaker *breaker
	kick    chan struct{}
	running atomic.Bool
	// deferred is set when Publish left events for the relay (held behind
	// an earlier event of their aggregate that was in flight); the next
	// mark kicks the relay so they follow at once, not an interval later.
	deferred atomic.Bool
	firing   bool // an alert is firing; used by Run only
	errRun   int  // store errors in a row; used by Run only
	// storeFailing is set while Run backs off after store errors, so that
	// Publish, whose own claim failed, does not wake it before its time.
	storeFailing atomic.Bool
}

// SyncResult counts what one relay pass did.
type SyncResult struct {
	Claimed  int // events claimed
	Synced   int // acknowledged by the broker and marked synced
	Failed   int // not acknowledged; rescheduled
	Buried   int // not acknowledged and buried (dead)
	Released int // given back unattempted (the pass was stopped, or held back)

	// BrokerErr is set when the publisher failed the whole batch (the
	// broker unreachable or timing out): with a plain error, or with a
	// *PublishError in which no event was acknowledged and every failure
	// is Unavailable or held back behind one (ErrHeldBack). Such a failure
	// counts an attempt but never buries an event; the circuit breaker
	// paces the retries.
	BrokerErr error
}

// NewWorker returns a relay over store and pub. See the With* options for
// its settings and their defaults.
func NewWorker(store Store, pub Publisher, opts ...Option) (*Worker, error) {
	if isNil(store) || isNil(pub) {
		return nil, fmt.Errorf("%w: store and publisher are required", ErrInvalidConfig)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if _, ok := store.(Purger); cfg.retention > 0 && !ok {
		return nil, fmt.Errorf("%w: Retention is set but the store (%T) cannot purge", ErrInvalidConfig, store)
	}
	if _, ok := store.(StatsReader); cfg.alerts != (Alerts{}) && !ok {
		return nil, fmt.Errorf("%w: Alerts are set but the store (%T) computes no Stats", ErrInvalidConfig, store)
	}
	return &Worker{
		store: store, pub: pub, cfg: cfg,
		breaker: newBreaker(cfg.breakerThreshold, cfg.probeMin, cfg.probeMax),
		kick:    make(chan struct{}, 1),
	}, nil
}

// Run relays events until ctx ends, then returns nil once its current
// batch is marked or released and every goroutine it started has ended.
// It passes at once, then every interval, at once again after any pass that
// delivered events (so a backlog drains at full speed), whenever Kick is
// called, and, if the store is a Notifier, whenever events are committed.
// While the circuit breaker is open it only probes the broker. A pass that
// fails is logged and retried with backoff.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if n, ok := w.store.(Notifier); ok {
		wg.Go(func() {
			if err := n.Listen(ctx, w.Kick); err != nil && ctx.Err() == nil {
				w.cfg.logger.Warn("outbox: cannot listen for commits; relying on the interval", "err", err)
			}
		})
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastPurge, lastAlert time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-w.kick:
		}
		timer.Reset(w.step(ctx))
		if w.cfg.retention > 0 && time.Since(lastPurge) >= RetentionEvery && ctx.Err() == nil {
			lastPurge = time.Now()
			if w.purge(ctx) {
				lastPurge = time.Time{} // more to purge: another turn after the next pass
				w.Kick()
			}
		}
		if w.cfg.alerts.Every > 0 && time.Since(lastAlert) >= w.cfg.alerts.Every && ctx.Err() == nil {
			lastAlert = time.Now()
			w.checkAlerts(ctx)
		}
	}
}

// step runs one turn of Run and returns how long to wait for the next.
func (w *Worker) step(ctx context.Context) time.Duration {
	if w.breaker.isOpen() {
		if d := w.breaker.untilProbe(time.Now()); d > 0 {
			return d // woken early: keep waiting for the probe
		}
		if !w.probe(ctx) {
			return w.breaker.untilProbe(time.Now())
		}
		w.cfg.logger.Info("outbox: broker is back; draining the backlog")
	}
	res, err := w.SyncPending(ctx, w.cfg.batchSize)
	if err != nil {
		if ctx.Err() != nil {
			return w.cfg.interval
		}
		// The database failed: retry with backoff, not a whole interval
		// later, so a short outage does not delay the backlog.
		w.errRun++
		w.storeFailing.Store(true)
		d := min(w.backoff(w.errRun), w.cfg.interval)
		w.cfg.logger.Warn("outbox: relay pass failed", "err", err, "retry_in", d)
		return d
	}
	if w.errRun > 0 {
		w.cfg.logger.Info("outbox: store is back; relay resumed", "failed_passes", w.errRun)
	}
	w.errRun = 0
	w.storeFailing.Store(false)
	switch {
	case res.BrokerErr != nil && w.breaker.isOpen():
		return w.breaker.untilProbe(time.Now())
	case res.BrokerErr != nil:
		// The failed events are due again at once: retry soon, so that a
		// broker back within moments is used at once and one that stays
		// down opens the breaker, doubling the wait up to the interval.
		return min(w.cfg.interval, w.cfg.probeMin<<min(max(w.breaker.snapshot().Failures-1, 0), 16))
	case res.Synced > 0:
		// Work went through: pass again at once while there is more. A
		// batch can be short with much left (an ordered claim leaves out
		// aggregates whose head another relay holds), so only an empty
		// pass makes the relay wait for its interval.
		return 0
	}
	return w.cfg.interval
}

// probe checks an open breaker's broker and reports whether it closed.
// With a Pinger it pings; otherwise it publishes a batch of one event.
func (w *Worker) probe(ctx context.Context) bool {
	p, ok := w.pub.(Pinger)
	if !ok {
		res, err := w.SyncPending(ctx, 1) // records success or failure on the breaker
		if err != nil || res.Claimed == 0 {
			w.breaker.postpone(time.Now()) // nothing was sent: no answer, try later
		}
		return !w.breaker.isOpen()
	}
	pctx, cancel := context.WithTimeout(ctx, w.cfg.timeout)
	defer cancel()
	if err := p.Ping(pctx); err != nil {
		w.brokerFailed(ctx, err)
		return false
	}
	w.brokerOK(ctx)
	return true
}

// Kick wakes a running relay for an immediate pass. It never blocks.
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Breaker returns the state of the relay's circuit breaker.
func (w *Worker) Breaker() BreakerState { return w.breaker.snapshot() }

// SyncPending runs one relay pass: claim up to batchSize due events
// (the configured batch size if batchSize <= 0), publish them in one batch,
// mark those the broker acknowledged and reschedule or bury the rest. The
// pass is bounded by the configured timeout. It returns what it did, and an
// error when the store failed; publish failures are recorded on the events
// (and in SyncResult.BrokerErr), not returned.
func (w *Worker) SyncPending(ctx context.Context, batchSize int) (SyncResult, error) {
	if batchSize <= 0 {
		batchSize = w.cfg.batchSize
	}
	batchSize = min(batchSize, MaxBatchSize)
	passCtx, cancel := context.WithTimeout(ctx, w.cfg.timeout)
	defer cancel()
	claim, err := w.store.Claim(passCtx, w.claimRequest(batchSize, nil))
	if err != nil {
		return SyncResult{}, fmt.Errorf("outbox: claim: %w", err)
	}
	return w.deliver(ctx, passCtx, claim, false)
}

func (w *Worker) claimRequest(limit int, ids []string) ClaimRequest {
	return ClaimRequest{Limit: limit, Lease: w.cfg.lease, IDs: ids, Unordered: w.cfg.unordered, PassDead: w.cfg.passDead}
}

// deliver publishes a claimed batch and records the outcome. ctx tells a
// stop (its end releases unacknowledged events instead of counting an
// attempt); passCtx bounds the publish.
func (w *Worker) deliver(ctx, passCtx context.Context, claim *Claim, immediate bool) (SyncResult, error) {
	res := SyncResult{Claimed: len(claim.Events)}
	if len(claim.Events) == 0 {
		return res, nil
	}
	pctx := w.cfg.hooks.beforePublish(passCtx, claim.Events, immediate)
	start := time.Now()
	perr := w.pub.Publish(pctx, claim.Events)
	done := PublishDone{Events: claim.Events, Immediate: immediate, Duration: time.Since(start), AckedAt: time.Now()}
	failed := failuresOf(claim.Events, perr)
	var pe *PublishError
	if perr != nil && (!errors.As(perr, &pe) || outage(claim.Events, failed)) {
		// The whole batch failed, reported as one error or event by event
		// (as the kafka and natsjs publishers report a broker that is
		// down): the breaker counts it and the relay retries soon.
		res.BrokerErr = perr
	}
	switch {
	case res.BrokerErr != nil:
		if ctx.Err() == nil { // a stop is not the broker's failure
			w.brokerFailed(ctx, res.BrokerErr)
		}
	case len(failed) < len(claim.Events):
		w.brokerOK(ctx)
	}

	stopping := ctx.Err() != nil
	acked := make([]string, 0, len(claim.Events)-len(failed))
	var fails []Failure
	var release []string
	var dead []*Event
	var failedAggregates map[string]bool
	for _, e := range claim.Events {
		ferr, bad := failed[e.ID]
		switch {
		case !bad:
			acked = append(acked, e.ID)
			if e.AggregateID != "" && failedAggregates[e.AggregateID] && !w.cfg.unordered {
				w.cfg.logger.Warn("outbox: event acknowledged after an earlier event of its aggregate failed in the same batch",
					"event_id", e.ID, "aggregate_id", e.AggregateID)
			}
			continue
		case errors.Is(ferr, ErrHeldBack), stopping && !IsPermanent(ferr):
			release = append(release, e.ID)
		default:
			attempt := e.Delivery.Attempts + 1
			f := Failure{ID: e.ID, Err: errorText(ferr)}
			notItsFault := res.BrokerErr != nil || IsUnavailable(ferr)
			switch {
			case IsPermanent(ferr) || (!notItsFault && attempt >= w.cfg.maxAttempts):
				f.Dead = true
				dead = append(dead, e)
			case !notItsFault:
				f.Delay = w.backoff(attempt)
			} // the broker's fault: due again at once, the breaker paces it
			fails = append(fails, f)
		}
		if failedAggregates == nil {
			failedAggregates = map[string]bool{}
		}
		failedAggregates[e.AggregateID] = true
	}
	if len(dead) > 0 && w.cfg.deadLetterTopic != "" {
		w.publishDeadLetters(passCtx, dead, failed, fails)
	}

	// Record the outcome even if ctx has ended: what the broker acknowledged
	// must be marked, or it would be published again.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	var errs []error
	if len(acked) > 0 {
		n, err := retryWrite(fctx, func() (int, error) { return w.store.MarkSynced(fctx, claim.Token, acked) })
		res.Synced = n
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox: mark %d acknowledged events synced (they will be published again when their lease ends): %w", len(acked), err))
		} else if n < len(acked) {
			w.cfg.logger.Warn("outbox: lease lost before mark; another relay took the events", "events", len(acked)-n)
		}
		if n > 0 && w.deferred.CompareAndSwap(true, false) {
			w.Kick()
		}
	}
	if len(fails) > 0 {
		if _, err := retryWrite(fctx, func() (int, error) { return w.store.Fail(fctx, claim.Token, fails) }); err != nil {
			errs = append(errs, fmt.Errorf("outbox: record %d failed attempts: %w", len(fails), err))
		} else {
			for _, f := range fails {
				if f.Dead {
					res.Buried++
				} else {
					res.Failed++
				}
			}
			w.reportDead(ctx, claim.Events, fails, failed)
			for _, f := range fails {
				if f.Dead {
					done.Buried = append(done.Buried, f.ID)
				}
			}
		}
	}
	if len(release) > 0 {
		n, err := retryWrite(fctx, func() (int, error) { return w.store.Release(fctx, claim.Token, release) })
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
		w.cfg.logger.Warn("outbox: publish failed (will retry)", "events", len(failed), "err", firstError(failed))
	}
	done.Failed, done.BrokerErr = failed, res.BrokerErr
	w.cfg.hooks.afterPublish(pctx, done)
	return res, errors.Join(errs...)
}

// retryWrite runs one of the writes that record a batch's outcome, trying
// again twice after a short wait if the database failed: a mark lost to a
// passing error would leave acknowledged events leased, to be published
// again when the lease ends.
func retryWrite(ctx context.Context, write func() (int, error)) (int, error) {
	var n int
	var err error
	for i, wait := range []time.Duration{0, 20 * time.Millisecond, 200 * time.Millisecond} {
		if i > 0 {
			select {
			case <-ctx.Done():
				return n, err
			case <-time.After(wait):
			}
		}
		if n, err = write(); err == nil {
			return n, nil
		}
	}
	return n, err
}

// brokerFailed counts a whole-batch failure on the breaker, and tells
// when that opened it.
func (w *Worker) brokerFailed(ctx context.Context, err error) {
	if w.breaker.failure(time.Now()) {
		w.cfg.logger.Warn("outbox: broker unavailable; circuit breaker open", "err", err)
		w.cfg.hooks.breakerChanged(ctx, w.breaker.snapshot())
	}
}

// brokerOK closes the breaker, and tells when it was open.
func (w *Worker) brokerOK(ctx context.Context) {
	if w.breaker.success() {
		w.cfg.hooks.breakerChanged(ctx, w.breaker.snapshot())
	}
}

// checkAlerts compares the store's figures with the thresholds and
// reports a change of state.
func (w *Worker) checkAlerts(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, w.cfg.timeout)
	defer cancel()
	st, err := w.store.(StatsReader).Stats(sctx, w.cfg.alerts.Every)
	if err != nil {
		w.cfg.logger.Warn("outbox: cannot read stats for alerts", "err", err)
		return
	}
	var reasons []string
	if a := w.cfg.alerts; a.Pending > 0 && st.Pending > a.Pending {
		reasons = append(reasons, fmt.Sprintf("%d events pending, over %d", st.Pending, a.Pending))
	}
	if a := w.cfg.alerts; a.OldestAge > 0 && st.OldestPendingAge > a.OldestAge {
		reasons = append(reasons, fmt.Sprintf("oldest pending event is %v old, over %v", st.OldestPendingAge.Round(time.Millisecond), a.OldestAge))
	}
	firing := len(reasons) > 0
	if firing == w.firing {
		return
	}
	w.firing = firing
	a := Alert{Firing: firing, Stats: st, Reason: strings.Join(reasons, "; ")}
	if firing {
		w.cfg.logger.Warn("outbox: alert: "+a.Reason, "pending", st.Pending, "oldest_pending_seconds", st.OldestPendingAge.Seconds())
	} else {
		a.Reason = "back under the thresholds"
		w.cfg.logger.Warn("outbox: alert cleared", "pending", st.Pending, "oldest_pending_seconds", st.OldestPendingAge.Seconds())
	}
	for _, h := range w.cfg.hooks.alert {
		h.Alert(ctx, a)
	}
}

// publishDeadLetters sends a copy of each event about to be buried to the
// dead-letter topic. An event whose copy was not acknowledged is not
// buried yet: its failure in fails becomes an ordinary retry.
func (w *Worker) publishDeadLetters(ctx context.Context, dead []*Event, why map[string]error, fails []Failure) {
	copies := make([]*Event, len(dead))
	for i, e := range dead {
		c := *e
		c.Topic = w.cfg.deadLetterTopic
		c.Headers = maps.Clone(e.Headers)
		if c.Headers == nil {
			c.Headers = map[string]string{}
		}
		c.Headers[HeaderDeadError] = errorText(why[e.ID])
		c.Headers[HeaderDeadTopic] = e.Topic
		copies[i] = &c
	}
	notSent := failuresOf(copies, w.pub.Publish(ctx, copies))
	if len(notSent) == 0 {
		return
	}
	w.cfg.logger.Warn("outbox: dead-letter copies not published; burial postponed", "events", len(notSent), "err", firstError(notSent))
	for i := range fails {
		if _, ok := notSent[fails[i].ID]; ok && fails[i].Dead {
			fails[i].Dead = false
			fails[i].Delay = w.cfg.backoffMax
		}
	}
}

// reportDead logs each burial and calls the OnDead hook.
func (w *Worker) reportDead(ctx context.Context, events []*Event, fails []Failure, why map[string]error) {
	var byID map[string]*Event
	for _, f := range fails {
		if !f.Dead {
			continue
		}
		w.cfg.logger.Error("outbox: event buried", "event_id", f.ID, "err", f.Err)
		if w.cfg.onDead == nil {
			continue
		}
		if byID == nil {
			byID = make(map[string]*Event, len(events))
			for _, e := range events {
				byID[e.ID] = e
			}
		}
		w.cfg.onDead(ctx, byID[f.ID], why[f.ID])
	}
}

// maxPurgeBatches bounds one purge turn of Run, so that a large purge
// backlog never holds up delivery; the rest waits for the next turn.
const maxPurgeBatches = 10

// purge deletes synced events past the retention age, a batch at a time,
// at most maxPurgeBatches batches. It reports whether more may be left.
func (w *Worker) purge(ctx context.Context) (more bool) {
	p := w.store.(Purger)
	total := 0
	for i := 0; ctx.Err() == nil; i++ {
		if i == maxPurgeBatches {
			more = true
			break
		}
		pctx, cancel := context.WithTimeout(ctx, w.cfg.timeout)
		n, err := p.Purge(pctx, w.cfg.retention, w.cfg.batchSize)
		cancel()
		total += n
		if err != nil {
			w.cfg.logger.Warn("outbox: purge failed", "err", err)
			break
		}
		if n < w.cfg.batchSize {
			break
		}
	}
	if total > 0 {
		w.cfg.logger.Info("outbox: purged synced events", "events", total, "older_than", w.cfg.retention)
	}
	return more
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
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > maxErrorLen {
		s = strings.ToValidUTF8(s[:maxErrorLen], "")
	}
	return s
}

// outage reports whether a partly failed batch was in fact an outage:
// the broker acknowledged none of the events, at least one failed as
// Unavailable, and every other one either did too or was held back
// behind such a failure (ErrHeldBack), so that none failed for its own
// sake.
func outage(events []*Event, failed map[string]error) bool {
	unavailable := false
	for _, e := range events {
		err, bad := failed[e.ID]
		switch {
		case !bad:
			return false // acknowledged
		case IsUnavailable(err):
			unavailable = true
		case !errors.Is(err, ErrHeldBack):
			return false
		}
	}
	return unavailable
}

func firstError(m map[string]error) error {
	for _, err := range m {
		return err
	}
	return nil
}
