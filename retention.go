package outbox

import (
	"context"
	"time"

	"github.com/eventsync/outbox/storage"
)

// retentionEvery is how often the relay purges, with WithRetention.
const retentionEvery = time.Minute

// maxPurgeBatches bounds one purge turn of Run, so that a large purge
// backlog never holds up delivery; the rest waits for the next turn.
const maxPurgeBatches = 10

// retention paces the purge turns of Run.
type retention struct{ last time.Time }

// due reports whether a purge turn is due, and starts one if so.
func (r *retention) due() bool {
	if time.Since(r.last) < retentionEvery {
		return false
	}
	r.last = time.Now()
	return true
}

// again makes the next turn due at once.
func (r *retention) again() { r.last = time.Time{} }

// purge deletes synced events past the retention age, a batch at a time,
// at most maxPurgeBatches batches. It reports whether more may be left.
func (o *Outbox) purge(ctx context.Context) (more bool) {
	p := o.store.(storage.Purger)
	total := 0
	for i := 0; ctx.Err() == nil; i++ {
		if i == maxPurgeBatches {
			more = true
			break
		}
		pctx, cancel := context.WithTimeout(ctx, o.cfg.timeout)
		n, err := p.Purge(pctx, o.cfg.retention, o.cfg.batchSize)
		cancel()
		total += n
		if err != nil {
			o.cfg.logger.Warn("outbox: purge failed", "err", err)
			break
		}
		if n < o.cfg.batchSize {
			break
		}
	}
	if total > 0 {
		o.cfg.logger.Info("outbox: purged synced events", "events", total, "older_than", o.cfg.retention)
	}
	return more
}

// maintain runs a storage.Maintainer's upkeep until ctx ends or it has
// nothing to maintain, apart from the relay's passes. Failures are logged
// when they start and end.
func (o *Outbox) maintain(ctx context.Context, m storage.Maintainer) {
	o.repeat(ctx, "outbox: table maintenance failed; retrying", "outbox: table maintenance is back",
		func() (time.Duration, error) { return m.Maintain(ctx) })
}
