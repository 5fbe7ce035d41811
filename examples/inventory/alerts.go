package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/eventsync/outbox"
)

// alertRules are thresholds on the outbox table's figures, for a service
// that alerts from its own process rather than from Prometheus (the
// shipped alert rules in examples/monitoring do the same from the
// metrics). A zero threshold is not checked.
type alertRules struct {
	Pending   int64         // fire when more events than this are pending
	OldestAge time.Duration // fire when the oldest pending event is older
	Every     time.Duration // how often to check
}

// alert is a change of an alert's state.
type alert struct {
	Firing bool         // crossed (true) or cleared (false)
	Reason string       // which threshold, with the figures
	Stats  outbox.Stats // what the store reported
}

// watchAlerts checks the store's figures every rules.Every until ctx ends
// and, when a threshold is crossed, logs a warning and calls notify; once
// it clears, it logs and calls notify again.
func watchAlerts(ctx context.Context, stats outbox.StatsReader, rules alertRules, log *slog.Logger, notify func(alert)) {
	tick := time.NewTicker(rules.Every)
	defer tick.Stop()
	firing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(ctx, rules.Every)
		st, err := stats.Stats(sctx, rules.Every)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("outbox: cannot read stats for alerts", "err", err)
			}
			continue
		}
		var reasons []string
		if rules.Pending > 0 && st.Pending > rules.Pending {
			reasons = append(reasons, fmt.Sprintf("%d events pending, over %d", st.Pending, rules.Pending))
		}
		if rules.OldestAge > 0 && st.OldestPendingAge > rules.OldestAge {
			reasons = append(reasons, fmt.Sprintf("oldest pending event is %v old, over %v", st.OldestPendingAge.Round(time.Millisecond), rules.OldestAge))
		}
		if now := len(reasons) > 0; now == firing {
			continue
		} else {
			firing = now
		}
		a := alert{Firing: firing, Stats: st, Reason: strings.Join(reasons, "; ")}
		if firing {
			log.Warn("outbox: alert: "+a.Reason, "pending", st.Pending, "oldest_pending_seconds", st.OldestPendingAge.Seconds())
		} else {
			a.Reason = "back under the thresholds"
			log.Warn("outbox: alert cleared", "pending", st.Pending, "oldest_pending_seconds", st.OldestPendingAge.Seconds())
		}
		notify(a)
	}
}
