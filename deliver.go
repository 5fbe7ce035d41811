package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/eventsync/outbox/storage"
)

// finishTimeout bounds the writes that record a pass's outcome (mark,
// fail, release) once the pass's own context has ended, so a stopping
// relay still records what the broker acknowledged.
const finishTimeout = 5 * time.Second

// outcome is what a published batch's result means for each of its events.
type outcome struct {
	failed    map[string]error // the publisher's verdict: events not acknowledged
	brokerErr error            // set when the broker failed the whole batch
	acked     []string         // to mark synced
	fails     []storage.Failure
	release   []string // to give back unattempted
	dead      []*Event // events of fails that are to be made dead
	// failsRecorded is set once the store took fails: only then are the
	// dead events reported.
	failsRecorded bool
	// acknowledged after an earlier event of the same aggregate failed in
	// this batch: a publisher that does not hold back (logged, not fixed).
	outOfOrder []*Event
}

// classify turns a publisher's result into the writes that record it. It
// does no I/O (its one side effect is the random jitter of the retry
// delays): what it decides is recorded by record. stopping says the
// relay is stopping, so failures that are not permanent are given back
// instead of counting an attempt.
func (o *Outbox) classify(events []*Event, perr error, stopping bool) outcome {
	out := outcome{failed: failuresOf(events, perr)}
	var pe *PublishError
	if perr != nil && (!errors.As(perr, &pe) || outage(events, out.failed)) {
		// The whole batch failed, reported as one error or event by event
		// (as the kafka and natsjs publishers report a broker that is
		// down): the breaker counts it and the relay retries soon.
		out.brokerErr = perr
	}
	out.acked = make([]string, 0, len(events)-len(out.failed))
	var order BatchErrors // which aggregates had an event fail before
	for _, e := range events {
		ferr, bad := out.failed[e.ID]
		switch {
		case !bad:
			out.acked = append(out.acked, e.ID)
			if order.HeldBack(e) && !o.cfg.unordered {
				out.outOfOrder = append(out.outOfOrder, e)
			}
			continue
		case errors.Is(ferr, ErrHeldBack), stopping && !IsPermanent(ferr):
			out.release = append(out.release, e.ID)
		default:
			attempt := e.Delivery.Attempts + 1
			f := storage.Failure{ID: e.ID, Err: errorText(ferr)}
			notItsFault := out.brokerErr != nil || IsUnavailable(ferr)
			switch {
			case IsPermanent(ferr) || (!notItsFault && attempt >= o.cfg.maxAttempts):
				f.Dead = true
				out.dead = append(out.dead, e)
			case !notItsFault:
				f.Delay = o.backoff(attempt)
			} // the broker's fault: due again at once, the breaker paces it
			out.fails = append(out.fails, f)
		}
		order.Fail(e, ferr)
	}
	return out
}

// deliver publishes a claimed batch and records the outcome. ctx bounds the
// publication; if it ends for any cause but a relay pass's timeout (see
// stopped), unacknowledged events are given back rather than failed.
func (o *Outbox) deliver(ctx context.Context, claim *Claim, immediate bool) (Result, error) {
	res := Result{Claimed: len(claim.Events)}
	if len(claim.Events) == 0 {
		return res, nil
	}
	pctx := o.cfg.hooks.beforePublish(ctx, claim.Events, immediate)
	start := time.Now()
	perr := o.pub.Publish(pctx, claim.Events)
	done := PublishDone{Events: claim.Events, Immediate: immediate, Duration: time.Since(start), AckedAt: time.Now()}

	// A pass that has run out of time is the broker's failure, and is
	// recorded as one even if the relay is stopped after that.
	stopping := stopped(ctx)
	out := o.classify(claim.Events, perr, stopping)
	res.BrokerErr = out.brokerErr
	// What follows the publication is told to hooks and logs on a context
	// that the pass's timeout or a stop has not ended.
	hctx := context.WithoutCancel(ctx)
	switch {
	case out.brokerErr != nil:
		if !stopping { // a stop is not the broker's failure
			o.brokerFailed(hctx, out.brokerErr)
		}
	case len(out.failed) < len(claim.Events):
		o.brokerOK(hctx)
	}
	for _, e := range out.outOfOrder {
		o.cfg.logger.Warn("outbox: event acknowledged after an earlier event of its aggregate failed in the same batch",
			"event_id", e.ID, "aggregate_id", e.AggregateID)
	}
	if len(out.dead) > 0 && o.cfg.deadLetterTopic != "" {
		o.publishDeadLetters(ctx, &out)
	}

	err := o.record(hctx, claim.Token, &out, &res)
	for _, f := range out.fails {
		if f.Dead && out.failsRecorded {
			done.Dead = append(done.Dead, f.ID)
		}
	}
	if o.cfg.logger.Enabled(hctx, slog.LevelInfo) {
		o.cfg.logger.Info(fmt.Sprintf("outbox: synced %d (failed %d)", res.Synced, res.Failed+res.Dead),
			"synced", res.Synced, "failed", res.Failed, "dead", res.Dead, "released", res.Released)
	}
	if len(out.failed) > 0 && !stopping {
		o.cfg.logger.Warn("outbox: publish failed; events waiting for a retry", "events", len(out.failed), "err", firstError(out.failed))
	}
	if immediate {
		res.Outcomes = outcomesOf(&out)
	}
	done.Failed, done.BrokerErr = out.failed, out.brokerErr
	o.cfg.hooks.afterPublish(pctx, done)
	return res, err
}

// outcomesOf says what an immediate publication did with each claimed
// event: acknowledged, waiting for a retry, dead, or given back to the
// relay unattempted.
func outcomesOf(out *outcome) []Outcome {
	res := make([]Outcome, 0, len(out.acked)+len(out.fails)+len(out.release))
	for _, id := range out.acked {
		res = append(res, Outcome{ID: id, Fate: Acknowledged})
	}
	for _, f := range out.fails {
		fate := WaitingForRetry
		if f.Dead && out.failsRecorded {
			fate = Dead
		}
		res = append(res, Outcome{ID: f.ID, Fate: fate, Err: out.failed[f.ID]})
	}
	for _, id := range out.release {
		res = append(res, Outcome{ID: id, Fate: HandedToRelay, Handoff: GivenBack})
	}
	return res
}

// record writes an outcome to the store: marks, failures and releases, each
// in one statement, and counts them in res. ctx is not cancelled (see
// deliver): what the broker acknowledged must be marked even after a stop,
// or it would be published again. The writes are bounded by finishTimeout.
func (o *Outbox) record(ctx context.Context, token string, out *outcome, res *Result) error {
	fctx, cancel := context.WithTimeout(ctx, finishTimeout)
	defer cancel()
	var errs []error
	if len(out.acked) > 0 {
		n, err := retryWrite(fctx, func() (int, error) { return o.store.MarkSynced(fctx, token, out.acked) })
		res.Synced = n
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox: mark %d acknowledged events synced (they will be published again when their lease ends): %w", len(out.acked), err))
		} else if n < len(out.acked) {
			o.cfg.logger.Warn("outbox: lease lost before mark; another relay took the events", "events", len(out.acked)-n)
		}
		if n > 0 && o.deferred.CompareAndSwap(true, false) {
			o.Kick()
		}
	}
	if len(out.fails) > 0 {
		if _, err := retryWrite(fctx, func() (int, error) { return o.store.Fail(fctx, token, out.fails) }); err != nil {
			errs = append(errs, fmt.Errorf("outbox: record %d failed attempts: %w", len(out.fails), err))
		} else {
			out.failsRecorded = true
			for _, f := range out.fails {
				if f.Dead {
					res.Dead++
				} else {
					res.Failed++
				}
			}
			o.reportDead(ctx, out)
		}
	}
	if len(out.release) > 0 {
		n, err := retryWrite(fctx, func() (int, error) { return o.store.Release(fctx, token, out.release) })
		res.Released = n
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox: release %d events: %w", len(out.release), err))
		}
	}
	return errors.Join(errs...)
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

// publishDeadLetters sends a copy of each event about to be made dead to
// the dead-letter topic. An event whose copy was not acknowledged is not
// made dead yet: its failure becomes an ordinary retry.
func (o *Outbox) publishDeadLetters(ctx context.Context, out *outcome) {
	copies := make([]*Event, len(out.dead))
	for i, e := range out.dead {
		c := *e
		c.Topic = o.cfg.deadLetterTopic
		c.Headers = maps.Clone(e.Headers)
		if c.Headers == nil {
			c.Headers = map[string]string{}
		}
		c.Headers[HeaderDeadError] = errorText(out.failed[e.ID])
		c.Headers[HeaderDeadTopic] = e.Topic
		copies[i] = &c
	}
	notSent := failuresOf(copies, o.pub.Publish(ctx, copies))
	if len(notSent) == 0 {
		return
	}
	o.cfg.logger.Warn("outbox: dead-letter copies not published; burial postponed", "events", len(notSent), "err", firstError(notSent))
	for i := range out.fails {
		if _, ok := notSent[out.fails[i].ID]; ok && out.fails[i].Dead {
			out.fails[i].Dead = false
			out.fails[i].Delay = o.cfg.backoffMax
		}
	}
}

// reportDead logs each event made dead and tells the DeadHooks.
func (o *Outbox) reportDead(ctx context.Context, out *outcome) {
	byID := make(map[string]*Event, len(out.dead))
	for _, e := range out.dead {
		byID[e.ID] = e
	}
	for _, f := range out.fails {
		if !f.Dead {
			continue
		}
		o.cfg.logger.Error("outbox: event dead", "event_id", f.ID, "err", f.Err)
		o.cfg.hooks.eventDead(ctx, byID[f.ID], out.failed[f.ID])
	}
}

// errorText is the part of err kept as an event's last error.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > storage.MaxErrorLength {
		s = strings.ToValidUTF8(s[:storage.MaxErrorLength], "")
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
