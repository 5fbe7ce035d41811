//go:build unix

package main

import (
	"encoding/json"
	"maps"
	"slices"
)

// written is what the writers know about an event they saved.
type written struct {
	aggregate string
	seq       int // position among its aggregate's events, in save order
}

// delivery is one entry read back from the broker, in the broker's order
// (per stream; an aggregate's events all go to one stream).
type delivery struct {
	id        string
	aggregate string
}

// Result is the outcome of a run, printed as one JSON line.
type Result struct {
	Committed       int            `json:"committed"`
	RolledBack      int            `json:"rolled_back"`
	Uncertain       int            `json:"uncertain"` // commit outcome unknown; neither lost nor phantom
	Delivered       int            `json:"delivered"`
	DeliveredUnique int            `json:"delivered_unique"`
	Lost            int            `json:"lost"`
	Duplicates      int            `json:"duplicates"`
	OrderViolations int            `json:"order_violations"`
	Phantoms        int            `json:"phantoms"`
	Pending         int            `json:"pending"`
	Dead            int            `json:"dead"`
	FaultsInjected  int            `json:"faults_injected"`
	Faults          map[string]int `json:"faults"`
	RelaysStarted   int            `json:"relays_started"`
	Seconds         float64        `json:"seconds"`
	DB              string         `json:"db"`
	Broker          string         `json:"broker"`
	Seed            int64          `json:"seed"`
	Idempotent      bool           `json:"idempotent"` // with idempotent publication, duplicates must be 0
	// LostIDs names the first lost events (at most 10), for the run's
	// log to describe before the tables are dropped.
	LostIDs []string `json:"lost_ids,omitempty"`
}

// OK reports whether every guarantee held.
func (r *Result) OK() bool {
	return r.Lost == 0 && r.OrderViolations == 0 && r.Phantoms == 0 && r.Pending == 0 && r.Dead == 0 &&
		(!r.Idempotent || r.Duplicates == 0)
}

// JSON is the result as one line of JSON.
func (r *Result) JSON() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// check compares what reached the broker with what was committed, rolled
// back, or of unknown outcome, and fills the delivery figures of r.
// Streams are checked one by one; within a stream, the first delivery of
// each ID counts and later ones are duplicates.
func check(r *Result, committed, rolledBack, uncertain map[string]written, streams map[string][]delivery) {
	seen := map[string]bool{}
	last := map[string]int{} // aggregate -> highest seq delivered so far
	for _, name := range slices.Sorted(maps.Keys(streams)) {
		for _, d := range streams[name] {
			r.Delivered++
			if seen[d.id] {
				r.Duplicates++
				continue
			}
			seen[d.id] = true
			w, ok := committed[d.id]
			if !ok {
				w, ok = uncertain[d.id]
			}
			if !ok {
				r.Phantoms++ // rolled back, or never written at all
				continue
			}
			if w.aggregate == "" {
				continue
			}
			if prev, ok := last[w.aggregate]; ok && w.seq < prev {
				r.OrderViolations++
				continue
			}
			last[w.aggregate] = w.seq
		}
	}
	r.DeliveredUnique = len(seen)
	r.Committed, r.RolledBack, r.Uncertain = len(committed), len(rolledBack), len(uncertain)
	for _, id := range slices.Sorted(maps.Keys(committed)) {
		if !seen[id] {
			r.Lost++
			if len(r.LostIDs) < 10 {
				r.LostIDs = append(r.LostIDs, id)
			}
		}
	}
}
