package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/outbox/redisstream"
)

// scenarioResult is what a run found, comparing the stream with the
// table; add sums runs.
type scenarioResult struct {
	Runs                         int
	Requests, OK, Failed, Unsure int // writes asked for, by answer
	Rows, Delivered              int // events in the table; stream entries
	Lost, Duplicates             int // rows never delivered; extra copies
	OrderViolations              int // first copies out of write order
	Phantoms, Missing, Pending   int // entries of no row; answered writes not in the table; rows not synced
	Kills, BrokerRestarts        int
	Drained, WorstDrained        time.Duration // after the last write (-1: not within the wait)
	NotDrained                   int           // runs that never drained within the wait
	Examples                     []string
}

func (r scenarioResult) String() string {
	s := fmt.Sprintf("%d requests (200: %d, other: %d, no answer: %d); %d events in the table, %d stream entries; lost %d, duplicates %d, order violations %d, phantoms %d, answered-but-missing %d, pending %d",
		r.Requests, r.OK, r.Failed, r.Unsure, r.Rows, r.Delivered, r.Lost, r.Duplicates, r.OrderViolations, r.Phantoms, r.Missing, r.Pending)
	if r.Runs > 0 {
		s = fmt.Sprintf("%d runs: %s; %d instance kills, %d broker restarts; slowest drain %v, %d runs not drained in time",
			r.Runs, s, r.Kills, r.BrokerRestarts, r.WorstDrained.Round(time.Millisecond), r.NotDrained)
	}
	return s
}

func (r *scenarioResult) add(o scenarioResult) {
	r.Runs++
	r.Requests += o.Requests
	r.OK += o.OK
	r.Failed += o.Failed
	r.Unsure += o.Unsure
	r.Rows += o.Rows
	r.Delivered += o.Delivered
	r.Lost += o.Lost
	r.Duplicates += o.Duplicates
	r.OrderViolations += o.OrderViolations
	r.Phantoms += o.Phantoms
	r.Missing += o.Missing
	r.Pending += o.Pending
	r.Kills += o.Kills
	r.BrokerRestarts += o.BrokerRestarts
	if o.Drained < 0 {
		r.NotDrained++
	}
	r.WorstDrained = max(r.WorstDrained, o.Drained)
}

func (r *scenarioResult) example(format string, args ...any) {
	if len(r.Examples) < 10 {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// row is one event of the table.
type row struct {
	product  string // the aggregate ID
	quantity int    // from the payload: the product's quantity-th update
	pending  bool
}

// compare reads the events table and the stream and checks one against
// the other: every row delivered, every entry a row, every answered write
// a row, and each product's first copies in the order of its updates.
func (s *scenario) compare(w *writes) scenarioResult {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r scenarioResult
	rows := map[string]row{}
	q, err := s.db.QueryContext(ctx, "SELECT id, aggregate_id, payload, CASE WHEN delivered THEN 0 ELSE 1 END FROM "+s.schema+"."+defaultEventsTable+"_delivery")
	if err != nil {
		t.Fatalf("read the events table: %v", err)
	}
	defer q.Close()
	for q.Next() {
		var id, agg string
		var payload []byte
		var pending int
		if err := q.Scan(&id, &agg, &payload, &pending); err != nil {
			t.Fatalf("scan: %v", err)
		}
		var body struct {
			Quantity int `json:"quantity"`
		}
		if err := json.Unmarshal(payload, &body); err != nil {
			t.Fatalf("event %s: payload %q: %v", id, payload, err)
		}
		rows[id] = row{product: agg, quantity: body.Quantity, pending: pending == 1}
		if pending == 1 {
			r.Pending++
		}
	}
	if err := q.Err(); err != nil {
		t.Fatalf("read the events table: %v", err)
	}
	r.Rows = len(rows)

	w.mu.Lock()
	r.OK, r.Failed, r.Unsure = len(w.answers), w.failed, w.unsure
	r.Requests = r.OK + r.Failed + r.Unsure
	for _, id := range slices.Sorted(maps.Keys(w.answers)) {
		if _, ok := rows[id]; !ok {
			r.Missing++
			r.example("event %s (quantity %d) was answered 200 and is not in the table", id, w.answers[id])
		}
	}
	w.mu.Unlock()

	msgs, err := s.redis.XRange(ctx, s.stream, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", s.stream, err)
	}
	r.Delivered = len(msgs)
	seen := map[string]bool{}
	last := map[string]int{}
	for _, m := range msgs {
		id, _ := m.Values[redisstream.FieldID].(string)
		ev, ok := rows[id]
		if !ok {
			r.Phantoms++
			r.example("stream entry %s is event %q, which is not in the table", m.ID, id)
			continue
		}
		if seen[id] {
			r.Duplicates++
			r.example("event %s (%s, quantity %d) arrived again at %s", id, ev.product, ev.quantity, m.ID)
			continue
		}
		seen[id] = true
		if prev, ok := last[ev.product]; ok && ev.quantity < prev {
			r.OrderViolations++
			r.example("%s: quantity %d (event %s) arrived at %s after quantity %d", ev.product, ev.quantity, id, m.ID, prev)
			continue
		}
		last[ev.product] = ev.quantity
	}
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		if !seen[id] {
			r.Lost++
			r.example("event %s (%s, quantity %d, pending %v) never arrived", id, rows[id].product, rows[id].quantity, rows[id].pending)
		}
	}
	return r
}

// waitDrained waits until no event is pending and returns how long after
// last that was; after limit it returns -1 and how many were pending.
func (s *scenario) waitDrained(last time.Time, limit time.Duration) (time.Duration, int) {
	for {
		var n int
		if err := s.db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+s.schema+"."+defaultEventsTable+"_delivery WHERE NOT delivered").Scan(&n); err != nil {
			s.t.Fatalf("count pending: %v", err)
		}
		if n == 0 {
			return time.Since(last), 0
		}
		if time.Since(last) > limit {
			return -1, n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scenarioWithin prints what waitDrained returned.
func scenarioWithin(d time.Duration, pending int) string {
	if d < 0 {
		return fmt.Sprintf("%v (%d still pending then)", scenarioDrainBound+10*time.Second, pending)
	}
	return d.Round(time.Millisecond).String()
}

// logOwnership logs who holds the partitions, telling the live
// instances (whose relay names hold their process IDs) from dead ones.
func (s *scenario) logOwnership() {
	t := s.t
	live := map[string]bool{}
	for _, in := range s.instances {
		in.mu.Lock()
		if in.up && in.cmd != nil {
			live[strconv.Itoa(in.cmd.Process.Pid)] = true
		}
		in.mu.Unlock()
	}
	rows, err := s.db.QueryContext(context.Background(), "SELECT COALESCE(owner, ''), CASE WHEN lease_until > now() THEN 1 ELSE 0 END FROM "+s.schema+"."+defaultEventsTable+"_partitions")
	if err != nil {
		t.Logf("read partitions: %v", err)
		return
	}
	defer rows.Close()
	var byLive, byDead, free int
	for rows.Next() {
		var owner string
		var leased int
		if err := rows.Scan(&owner, &leased); err != nil {
			t.Logf("read partitions: %v", err)
			return
		}
		switch {
		case owner == "" || leased == 0:
			free++
		case ownerPidLive(owner, live):
			byLive++
		default:
			byDead++
		}
	}
	t.Logf("partitions: %d leased by live instances, %d still leased by killed ones, %d free or expired", byLive, byDead, free)
}

// ownerPidLive reports whether a default relay name (host-pid-random)
// names one of the live process IDs.
func ownerPidLive(owner string, live map[string]bool) bool {
	parts := strings.Split(owner, "-")
	if len(parts) < 3 {
		return false
	}
	return live[parts[len(parts)-2]]
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
