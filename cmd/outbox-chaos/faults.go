//go:build unix

package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

// The faults a run injects.
const (
	faultKill   = "kill_relay"  // SIGKILL a relay, start a new one
	faultBroker = "cut_broker"  // drop and refuse the relays' broker connections for a while
	faultDB     = "cut_db"      // drop and refuse the relays' database connections for a while
	faultPause  = "pause_relay" // SIGSTOP a relay past its leases, then SIGCONT
	faultSlow   = "slow_broker" // delay everything through the broker proxy for a while
)

var faultKinds = []string{faultKill, faultBroker, faultDB, faultPause, faultSlow}

// faultRun is the fault schedule in progress.
type faultRun struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts map[string]int
	busy   map[string]bool
}

// wait waits for the faults in effect to end by themselves and returns
// how many of each kind were injected.
func (f *faultRun) wait() map[string]int {
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// injectFaults starts faults on a seeded random schedule until ctx ends:
// after each pause of FaultGapMin..FaultGapMax, a fault of a kind not
// already in effect (the schedule, unlike the timing, depends on the seed
// alone only as far as the faults' own durations allow). Faults of different kinds overlap.
func (r *run) injectFaults(ctx context.Context) *faultRun {
	f := &faultRun{counts: map[string]int{}, busy: map[string]bool{}}
	rng := rand.New(rand.NewPCG(uint64(r.cfg.Seed), 0))
	f.wg.Go(func() {
		for {
			gap := r.cfg.FaultGapMin + time.Duration(rng.Int64N(int64(r.cfg.FaultGapMax-r.cfg.FaultGapMin)+1))
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap):
			}
			f.mu.Lock()
			var free []string
			for _, k := range faultKinds {
				if !f.busy[k] {
					free = append(free, k)
				}
			}
			if len(free) == 0 {
				f.mu.Unlock()
				continue
			}
			kind := free[rng.IntN(len(free))]
			f.busy[kind] = true
			f.counts[kind]++
			f.mu.Unlock()
			// Each fault gets its own random numbers, drawn here, so the
			// schedule depends on the seed alone.
			frng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
			f.wg.Go(func() {
				r.fault(kind, frng)
				f.mu.Lock()
				f.busy[kind] = false
				f.mu.Unlock()
			})
		}
	})
	return f
}

// between returns a random duration in lo..hi.
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// fault injects one fault and ends it.
func (r *run) fault(kind string, rng *rand.Rand) {
	r.log.Info("fault", "kind", kind)
	switch kind {
	case faultKill:
		if p := r.fleet.pick(rng); p != nil {
			r.fleet.kill(p)
		}
		if err := r.fleet.topUp(r.cfg.Relays); err != nil {
			r.log.Error("restart relay", "err", err)
		}
	case faultBroker:
		r.brokerProxy.Cut()
		time.Sleep(between(rng, 300*time.Millisecond, 2*time.Second))
		r.brokerProxy.Restore()
	case faultDB:
		r.dbProxy.Cut()
		time.Sleep(between(rng, 300*time.Millisecond, 2*time.Second))
		r.dbProxy.Restore()
	case faultPause:
		p := r.fleet.pick(rng)
		if p == nil {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		// Past the claim lease and the relay's time to live, so that its
		// partitions move and its late writes meet the fence.
		time.Sleep(max(r.cfg.Lease, sqlstore.DefaultMemberTTL) + between(rng, 300*time.Millisecond, 1500*time.Millisecond))
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	case faultSlow:
		r.brokerProxy.SetDelay(between(rng, 20*time.Millisecond, 150*time.Millisecond))
		time.Sleep(between(rng, time.Second, 3*time.Second))
		r.brokerProxy.SetDelay(0)
	}
}
