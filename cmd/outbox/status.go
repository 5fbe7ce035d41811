package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

// statusJSON is the --json form of status.
type statusJSON struct {
	Table                 string           `json:"table"`
	Pending               int64            `json:"pending"`
	PendingByType         map[string]int64 `json:"pending_by_type"`
	OldestPendingSeconds  float64          `json:"oldest_pending_seconds"`
	Dead                  int64            `json:"dead"`
	WindowSeconds         float64          `json:"window_seconds"`
	Synced                int64            `json:"synced"`
	AvgSyncLatencySeconds float64          `json:"avg_sync_latency_seconds"`
	P99SyncLatencySeconds float64          `json:"p99_sync_latency_seconds"`
	PartitionsFree        int              `json:"partitions_free"`           // free or expired: no live owner
	Partitions            []partitionJSON  `json:"partitions"`                // every partition, in order
	Relays                []relayJSON      `json:"relays"`                    // the live relays, by name
	TimePartitions        *timePartsJSON   `json:"time_partitions,omitempty"` // a table partitioned by save time
}

// timePartsJSON is the --json form of a table's time partitions.
type timePartsJSON struct {
	Partitions    int     `json:"partitions"`
	PeriodSeconds float64 `json:"period_seconds"`
	Oldest        string  `json:"oldest"`         // where the oldest partition starts (RFC 3339)
	RunwaySeconds float64 `json:"runway_seconds"` // how far past now the partitions reach; <= 0: saves go to the DEFAULT partition
	DefaultRows   int64   `json:"default_rows"`   // rows in the DEFAULT partition (normally 0)
}

// partitionJSON is the --json form of one partition.
type partitionJSON struct {
	Partition            int     `json:"partition"`
	Owner                string  `json:"owner"` // the owner, or the last one if not live; "" if none
	Live                 bool    `json:"live"`  // the owner's lease holds
	Token                int64   `json:"token"`
	LeaseLeftSeconds     float64 `json:"lease_left_seconds"`
	Pending              int64   `json:"pending"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
}

// relayJSON is the --json form of one live relay.
type relayJSON struct {
	Name             string  `json:"name"`
	Partitions       int     `json:"partitions"`         // whose live lease it holds
	SeenSinceSeconds float64 `json:"seen_since_seconds"` // how long ago it joined
	ExpiresInSeconds float64 `json:"expires_in_seconds"` // how long it counts as live without renewing
}

func statusCommand(fs *flag.FlagSet) body {
	window := fs.Duration("window", time.Hour, "the synced figures cover events synced within this window")
	top := fs.Int("partitions", 10, "show this many partitions, those with the most pending events (0: none; --json lists all)")
	asJSON := fs.Bool("json", false, "print JSON")
	return body{
		check: func(*env, []string) error {
			if *window <= 0 {
				return usagef("--window %v is not positive", *window)
			}
			if *top < 0 {
				return usagef("--partitions %d is negative", *top)
			}
			return nil
		},
		run: func(ctx context.Context, e *env, _ []string) error { return status(ctx, e, *window, *top, *asJSON) },
	}
}

// status prints the table's figures, then its partitions: the live
// relays with the partitions each owns, how many have no live owner, and
// the top partitions by pending events.
func status(ctx context.Context, e *env, window time.Duration, top int, asJSON bool) error {
	st, err := call(ctx, e, e.store.Stats, window)
	if err != nil {
		return err
	}
	parts, err := bounded(ctx, e, e.store.Partitions)
	if err != nil {
		return err
	}
	relays, err := bounded(ctx, e, e.store.Relays)
	if err != nil {
		return err
	}
	members, err := bounded(ctx, e, e.store.Memberships)
	if err != nil {
		return err
	}
	seen := make(map[string]sqlstore.Membership, len(members))
	for _, m := range members {
		seen[m.Name] = m
	}
	free := 0
	for _, p := range parts {
		if !p.Live {
			free++
		}
	}
	if asJSON {
		j := statusJSON{
			Table: e.table, Pending: st.Pending, PendingByType: st.PendingByType,
			OldestPendingSeconds: st.OldestPendingAge.Seconds(), Dead: st.Dead,
			WindowSeconds: window.Seconds(), Synced: st.Synced,
			AvgSyncLatencySeconds: st.AvgSyncLatency.Seconds(), P99SyncLatencySeconds: st.P99SyncLatency.Seconds(),
			PartitionsFree: free, Partitions: make([]partitionJSON, len(parts)), Relays: make([]relayJSON, len(relays)),
		}
		for i, p := range parts {
			j.Partitions[i] = partitionJSON{
				Partition: p.Partition, Owner: p.Owner, Live: p.Live, Token: p.Token,
				LeaseLeftSeconds: p.LeaseLeft.Seconds(), Pending: p.Pending, OldestPendingSeconds: p.OldestPendingAge.Seconds(),
			}
		}
		for i, r := range relays {
			j.Relays[i] = relayJSON{Name: r.Name, Partitions: r.Partitions,
				SeenSinceSeconds: seen[r.Name].Since.Seconds(), ExpiresInSeconds: r.SeenLeft.Seconds()}
		}
		if tp := e.timeParts; tp.Partitioned {
			j.TimePartitions = &timePartsJSON{Partitions: tp.Partitions, PeriodSeconds: tp.Period.Seconds(),
				Oldest: tp.Oldest.Format(time.RFC3339), RunwaySeconds: tp.Runway.Seconds(), DefaultRows: tp.DefaultRows}
		}
		return writeJSON(e, j)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "table\t%s\n", e.table)
	fmt.Fprintf(w, "pending\t%d\n", st.Pending)
	for _, typ := range slices.Sorted(maps.Keys(st.PendingByType)) {
		fmt.Fprintf(w, "  %s\t%d\n", typ, st.PendingByType[typ])
	}
	fmt.Fprintf(w, "oldest pending\t%s\n", roundDuration(st.OldestPendingAge))
	fmt.Fprintf(w, "dead\t%d\n", st.Dead)
	fmt.Fprintf(w, "synced (last %s)\t%d\n", window, st.Synced)
	fmt.Fprintf(w, "avg sync latency\t%s\n", roundDuration(st.AvgSyncLatency))
	fmt.Fprintf(w, "p99 sync latency\t%s\n", roundDuration(st.P99SyncLatency))
	if tp := e.timeParts; tp.Partitioned {
		// The runway: how far ahead the time partitions reach, and what
		// waits in the DEFAULT partition (normally nothing).
		from := tp.Oldest.Format(time.DateOnly)
		if tp.Oldest.IsZero() {
			from = "the old table" // moved into the layout: no lower bound
		}
		fmt.Fprintf(w, "time partitions\t%d of %s from %s, runway %s, %d in the default partition\n",
			tp.Partitions, roundDuration(tp.Period), from, roundDuration(tp.Runway), tp.DefaultRows)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return printPartitions(e, parts, relays, seen, free, top)
}

// printPartitions prints the partitions section of status: a summary
// line, the live relays and the top partitions by pending events.
// A relay's SEEN SINCE is how long ago it joined; EXPIRES IN, how long it
// counts as live without renewing.
func printPartitions(e *env, parts []sqlstore.PartitionStatus, relays []sqlstore.RelayStatus, seen map[string]sqlstore.Membership, free, top int) error {
	e.printf("\npartitions: %d, %d free or expired, %d live %s\n", len(parts), free, len(relays), plural(len(relays), "relay", "relays"))
	if len(relays) > 0 {
		w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "RELAY\tPARTITIONS\tSEEN SINCE\tEXPIRES IN")
		for _, r := range relays {
			since := "-" // joined between the two reads
			if m, ok := seen[r.Name]; ok {
				since = roundDuration(m.Since) + " ago"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", r.Name, r.Partitions, since, roundDuration(r.SeenLeft))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	var lagging []sqlstore.PartitionStatus
	for _, p := range parts {
		if p.Pending > 0 {
			lagging = append(lagging, p)
		}
	}
	if top == 0 || len(lagging) == 0 {
		return nil
	}
	slices.SortStableFunc(lagging, func(a, b sqlstore.PartitionStatus) int { return cmp.Compare(b.Pending, a.Pending) })
	e.printf("\n")
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PARTITION\tPENDING\tOLDEST\tOWNER\tLEASE LEFT")
	for _, p := range lagging[:min(top, len(lagging))] {
		owner := p.Owner
		switch {
		case !p.Live && owner == "":
			owner = "(free)"
		case !p.Live:
			owner = "(expired) " + owner
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\n", p.Partition, p.Pending, roundDuration(p.OldestPendingAge), owner, roundDuration(p.LeaseLeft))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(lagging) > top {
		n := len(lagging) - top
		e.printf("… and %d more %s with pending events (--partitions N, or --json)\n", n, plural(n, "partition", "partitions"))
	}
	return nil
}
