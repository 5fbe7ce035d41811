package e2e

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// timeline records what the relay did from the first probe that found the
// broker back until the broker first acknowledged a batch: each claim and
// each publish, when it started and how long it took. The time between
// them is the relay's own: waking, deciding, logging.
type timeline struct {
	mu       sync.Mutex
	probes   int // Pings answered, good or bad
	probeOK  time.Time
	firstAck time.Time
	steps    []timedStep
}

type timedStep struct {
	what  string // "claim" or "publish"
	start time.Time
	took  time.Duration
	n     int // events claimed or published
	err   error
}

// record notes a step that started at start, if it falls between the
// first good probe and the first acknowledgement (which ack marks).
func (tl *timeline) record(what string, start time.Time, n int, err error, ack bool) {
	end := time.Now()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.probeOK.IsZero() || !tl.firstAck.IsZero() || start.Before(tl.probeOK) {
		return
	}
	tl.steps = append(tl.steps, timedStep{what: what, start: start, took: end.Sub(start), n: n, err: err})
	if ack {
		tl.firstAck = end
	}
}

// timingPublisher times the broker's answers on a timeline.
type timingPublisher struct {
	inner *redisstream.Publisher
	tl    *timeline
}

func (p *timingPublisher) Publish(ctx context.Context, evs []*outbox.Event) error {
	start := time.Now()
	err := p.inner.Publish(ctx, evs)
	p.tl.record("publish", start, len(evs), err, err == nil)
	return err
}

func (p *timingPublisher) Ping(ctx context.Context) error {
	err := p.inner.Ping(ctx)
	p.tl.mu.Lock()
	p.tl.probes++
	if err == nil && p.tl.probeOK.IsZero() {
		p.tl.probeOK = time.Now()
	}
	p.tl.mu.Unlock()
	return err
}

// timingStore times the relay's claims on a timeline. Embedding keeps the
// store's other methods (Listen on Postgres, Stats) visible to the relay.
type timingStore struct {
	*sqlstore.Store
	tl *timeline
}

func (s timingStore) Claim(ctx context.Context, req storage.ClaimRequest) (*outbox.Claim, error) {
	start := time.Now()
	c, err := s.Store.Claim(ctx, req)
	n := 0
	if c != nil {
		n = len(c.Events)
	}
	s.tl.record("claim", start, n, err, false)
	return c, err
}

// maxRelayIdle bounds the time between the first good probe and the first
// acknowledged event that the relay spends neither in a claim nor in a
// publish. It is what the SDK guarantees: the probe closes the breaker and
// the pass that follows starts at once, on any database. Measured at about
// a millisecond at most; the rest is margin for a loaded machine.
const maxRelayIdle = 100 * time.Millisecond

// maxProbeToAck bounds the whole delay from the first good probe to the
// first acknowledged event, claim and publish included, per database.
// The claim is the database's part, and the ordered claim of a backlog of
// 500 events on 3 aggregates costs SQLite, under -race, 0.3 to 0.9 s on
// a loaded machine (about 50 ms without per-aggregate order, 10 ms
// without -race), against 30 to 110 ms on Postgres and MariaDB.
var maxProbeToAck = map[sqlstore.Dialect]time.Duration{sqlstore.SQLite: 3 * time.Second}

const defaultMaxProbeToAck = time.Second

// The broker goes down while events are committed; the circuit breaker
// opens and the relay stops sending; when the broker is back the first
// successful probe closes the breaker and the backlog drains at once, not
// at the next tick of the (here, hour-long) interval.
//
// From the probe to the first acknowledged event the relay does one claim
// and one publish, back to back: the test asserts that, and that the time
// outside those two stays under maxRelayIdle. The claim's own duration is
// the database's, so the whole delay is only bounded loosely (see
// maxProbeToAck). The test watches the stream, not the table, for the
// drain, so that it never takes SQLite's one connection from the relay.
func TestRecoveryAfterOutage(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		b := newBroker(t)
		inner, err := redisstream.New(b.client)
		mustNoErr(t, err, "redisstream.New")
		tl := &timeline{}
		pub := &timingPublisher{inner: inner, tl: tl}
		ob := newOutbox(t, timingStore{store, tl}, pub,
			outbox.WithInterval(time.Hour), outbox.WithTimeout(5*time.Second), outbox.WithBatchSize(200),
			outbox.WithBreaker(2, 10*time.Millisecond, 50*time.Millisecond))
		stream := b.prefix + "recovery"

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ob.Run(runCtx) }()
		defer func() { stop(); mustNoErr(t, <-done, "Run") }()

		b.proxy.Cut()
		var saved []*outbox.Event
		for range 10 {
			evs := newEvents(stream, 50)
			mustNoErr(t, transactErr(ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, evs...) })), "transact while Redis is down")
			saved = append(saved, evs...)
		}
		waitFor(t, "the breaker to open", func() bool { return ob.Breaker().Open })
		time.Sleep(120 * time.Millisecond) // a few failed probes
		tl.mu.Lock()
		failedProbes := tl.probes
		tl.mu.Unlock()
		if failedProbes == 0 {
			t.Fatal("no probe while the breaker was open")
		}

		restored := time.Now()
		b.proxy.Restore()
		waitFor(t, "the backlog to reach the stream", func() bool {
			n, err := b.direct.XLen(ctx, stream).Result()
			return err == nil && n >= int64(len(saved))
		})
		drained := time.Since(restored)
		waitFor(t, "the backlog to be marked synced", func() bool {
			st, err := store.Stats(ctx, time.Hour)
			return err == nil && st.Pending == 0
		})

		tl.mu.Lock()
		probeOK, firstAck, steps := tl.probeOK, tl.firstAck, slices.Clone(tl.steps)
		tl.mu.Unlock()
		probeToAck := firstAck.Sub(probeOK)
		busy := time.Duration(0)
		var account []string
		for _, s := range steps {
			busy += s.took
			account = append(account, fmt.Sprintf("%s of %d at +%v took %v (err %v)",
				s.what, s.n, s.start.Sub(probeOK).Round(time.Microsecond), s.took.Round(time.Microsecond), s.err))
		}
		idle := probeToAck - busy
		t.Logf("probe ok %v after restore; first event acknowledged %v after that probe (relay idle %v; %s); %d events on the stream %v after restore",
			probeOK.Sub(restored), probeToAck, idle, strings.Join(account, ", "), len(saved), drained)
		if len(steps) != 2 || steps[0].what != "claim" || steps[0].n == 0 || steps[1].what != "publish" || steps[1].n != steps[0].n {
			t.Errorf("from the good probe to the first acknowledgement the relay did: %s; want one claim of the backlog and its publish", strings.Join(account, ", "))
		}
		if idle < 0 || idle > maxRelayIdle {
			t.Errorf("relay idle for %v between the good probe and the first acknowledged event; want under %v", idle, maxRelayIdle)
		}
		limit := cmp.Or(maxProbeToAck[store.Dialect()], defaultMaxProbeToAck)
		if probeToAck < 0 || probeToAck > limit {
			t.Errorf("first event acknowledged %v after the first good probe; want under %v on %s", probeToAck, limit, store.Dialect())
		}
		if got := b.ids(t, stream); !slices.Equal(got, idsOf(saved)) {
			t.Fatalf("stream holds %d events, want the %d committed, in order", len(got), len(saved))
		}
	})
}
