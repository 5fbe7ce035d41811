package redisstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// TestClusterMasterKilled kills a master of a Redis Cluster in the middle
// of a relay's work and starts it again: the relay (outbox over sqlstore
// on SQLite, publishing through a redis.ClusterClient) is told of the
// failures as outbox.Unavailable (or whole-batch errors), buries nothing,
// and once the master is back delivers every event, each aggregate in
// the order it was saved, duplicates only of the same ID; what the killed
// master acknowledged before it died is still there. Plain and
// idempotent.
//
// The cluster is the test's own (three masters on free loopback ports,
// append-only file fsynced on every write so that an acknowledged entry
// survives SIGKILL), since a cluster without replicas serves none of a
// dead master's slots until it is back. It runs where
// OUTBOX_TEST_REDIS_CLUSTER is set, the sign that the machine's
// redis-server has cluster mode.
func TestClusterMasterKilled(t *testing.T) {
	clusterSeeds(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("%s is set but redis-server is not on PATH: %v", envRedisCluster, err)
	}
	for name, idempotent := range map[string]bool{"plain": false, "idempotent": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testMasterKilled(t, idempotent)
		})
	}
}

func testMasterKilled(t *testing.T, idempotent bool) {
	ctx := context.Background()
	c := startOwnCluster(t)
	victim := c.nodes[2]
	h := (&clusterHarness{seeds: c.addrs(), prefix: randomPrefix(t)}).open(t)

	// The third pipeline sent to the victim finds it dead: the batch's
	// parts for the two other masters go through, its part fails.
	killed := make(chan struct{})
	var once sync.Once
	var sent atomic.Int32
	client := h.newClient(t, func(o *redis.ClusterOptions) {
		o.DialTimeout = 500 * time.Millisecond
		o.ReadTimeout = 2 * time.Second
		o.NewClient = func(opt *redis.Options) *redis.Client {
			rc := redis.NewClient(opt)
			if opt.Addr != victim.addr() {
				return rc
			}
			rc.AddHook(pipelineHook(func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
				if name := cmds[0].Name(); name == "xadd" || name == "eval" {
					if sent.Add(1) == 3 {
						once.Do(func() { victim.kill(t); close(killed) })
					}
				}
				return next(ctx, cmds)
			}))
			return rc
		}
	})
	opts := []Option{WithStream(func(e *outbox.Event) string { return h.key(e.Topic) })}
	if idempotent {
		opts = append(opts, WithIdempotence(time.Minute), WithDedupKeyPrefix(h.key("dedup:")))
	}
	pub, err := New(client, opts...)
	if err != nil {
		t.Fatal(err)
	}
	watched := &watchedPublisher{Publisher: pub}

	db, err := sqlx.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "outbox.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	store, err := sqlstore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(store, watched,
		outbox.WithInterval(100*time.Millisecond),
		outbox.WithBatchSize(40),
		outbox.WithTimeout(10*time.Second),
		outbox.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
		outbox.WithBreaker(outbox.DefaultBreakerThreshold, 50*time.Millisecond, 500*time.Millisecond),
		outbox.WithMaxAttempts(1000),
	)
	if err != nil {
		t.Fatal(err)
	}

	// 24 streams over the three masters, two aggregates a stream, ten
	// events an aggregate, saved interleaved so every batch spans streams.
	const streams, perAggregate = 24, 10
	var events []*outbox.Event
	for i := range perAggregate {
		for s := range streams {
			for a := range 2 {
				events = append(events, &outbox.Event{
					Topic: fmt.Sprint("s", s), Type: "stock.updated",
					AggregateID: fmt.Sprint("agg-", s, "-", a),
					Payload:     []byte(strconv.Itoa(i)),
				})
			}
		}
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Save(ctx, tx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ob.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	select {
	case <-killed:
	case <-time.After(20 * time.Second):
		t.Fatal("the relay sent no third pipeline to the victim within 20s")
	}
	time.Sleep(1500 * time.Millisecond) // the relay runs into the dead master a while
	victim.start(t)
	back := time.Now()

	waitFor(t, 30*time.Second, "the relay to deliver every event", func() bool {
		st, err := store.Stats(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Dead != 0 {
			t.Fatalf("Stats = %+v: events buried for a dead master", st)
		}
		return st.Pending == 0 && st.Synced == int64(len(events))
	})
	t.Logf("the relay delivered the rest %v after the master came back", time.Since(back).Round(time.Millisecond))

	failures, bad := watched.report()
	if failures == 0 {
		t.Error("no Publish reported a failure while a master was dead")
	}
	for _, err := range bad {
		t.Errorf("a failure that is neither Unavailable nor held back: %v", err)
	}

	// Every event is in its stream, each aggregate in saved order,
	// duplicates only of an ID already there and identical to it.
	onVictim := 0
	for s := range streams {
		stream := h.key(fmt.Sprint("s", s))
		got := readStream(t, h.client, stream)
		seen := map[string]*outbox.Event{}
		next := map[string]int{}
		dups := 0
		for _, e := range got {
			if first, dup := seen[e.ID]; dup {
				dups++
				if !sameEvent(first, e) {
					t.Errorf("stream %s: duplicate of %s differs: %+v vs %+v", stream, e.ID, e, first)
				}
				continue
			}
			seen[e.ID] = e
			if want := strconv.Itoa(next[e.AggregateID]); string(e.Payload) != want {
				t.Errorf("stream %s, aggregate %s: event %s came where %s was due", stream, e.AggregateID, e.Payload, want)
			}
			next[e.AggregateID]++
		}
		if len(seen) != 2*perAggregate {
			t.Errorf("stream %s holds %d distinct events, want %d", stream, len(seen), 2*perAggregate)
		}
		if dups > 0 {
			t.Logf("stream %s: %d duplicates (same IDs)", stream, dups)
		}
		if idempotent && dups > 0 {
			t.Errorf("stream %s: %d duplicates with WithIdempotence", stream, dups)
		}
		if m, err := client.MasterForKey(ctx, stream); err == nil && m.Options().Addr == victim.addr() {
			onVictim++
		}
	}
	if onVictim == 0 {
		t.Error("no stream lies on the killed master")
	}
}

// watchedPublisher passes batches to a Publisher and keeps what its
// failures were.
type watchedPublisher struct {
	*Publisher
	mu       sync.Mutex
	failures int
	bad      []error
}

func (w *watchedPublisher) Publish(ctx context.Context, events []*outbox.Event) error {
	err := w.Publisher.Publish(ctx, events)
	if err == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures++
	var pe *outbox.PublishError
	if !errors.As(err, &pe) {
		return err // the batch as a whole: nothing counts as acknowledged
	}
	for _, ferr := range pe.Failed {
		if !outbox.IsUnavailable(ferr) && !errors.Is(ferr, outbox.ErrHeldBack) {
			w.bad = append(w.bad, ferr)
		}
	}
	return err
}

func (w *watchedPublisher) report() (int, []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failures, w.bad
}

// ownCluster is a Redis Cluster of three masters that one test started
// and stops.
type ownCluster struct{ nodes []*ownNode }

// ownNode is a redis-server process of a test: its port, folder and
// command line (the arguments of redis-server), run by start.
type ownNode struct {
	port, bus int
	dir       string
	args      []string
	mu        sync.Mutex
	cmd       *exec.Cmd
}

func (n *ownNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

func (c *ownCluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr())
	}
	return out
}

// startOwnCluster starts three redis-server processes in cluster mode,
// gives each a third of the slots, and waits until the cluster is ok. They
// are killed when the test ends.
func startOwnCluster(t *testing.T) *ownCluster {
	t.Helper()
	c := &ownCluster{}
	for range 3 {
		n := &ownNode{port: freePort(t), bus: freePort(t), dir: t.TempDir()}
		// Restarted, a node reads its nodes.conf and append-only file.
		n.args = []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(n.port), "--dir", n.dir,
			"--logfile", filepath.Join(n.dir, "redis.log"),
			"--save", "", "--appendonly", "yes", "--appendfsync", "always",
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(n.bus),
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
			"--cluster-require-full-coverage", "no"}
		c.nodes = append(c.nodes, n)
		t.Cleanup(func() { n.kill(t) })
		n.start(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := 0
	for i, n := range c.nodes {
		last := (i + 1) * 16384 / len(c.nodes)
		rc := redis.NewClient(&redis.Options{Addr: n.addr()})
		err := rc.ClusterAddSlotsRange(ctx, first, last-1).Err()
		if err == nil {
			err = rc.Do(ctx, "cluster", "set-config-epoch", i+1).Err()
		}
		if err == nil && i > 0 {
			err = rc.Do(ctx, "cluster", "meet", "127.0.0.1", c.nodes[0].port, c.nodes[0].bus).Err()
		}
		rc.Close()
		if err != nil {
			t.Fatalf("cluster node %s: %v", n.addr(), err)
		}
		first = last
	}
	waitFor(t, 20*time.Second, "the test's own cluster to be ok", func() bool {
		for _, n := range c.nodes {
			rc := redis.NewClient(&redis.Options{Addr: n.addr()})
			info, err := rc.ClusterInfo(ctx).Result()
			rc.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3\r") {
				return false
			}
		}
		return true
	})
	return c
}

// start runs redis-server with the node's arguments and waits until it
// answers.
func (n *ownNode) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command("redis-server", n.args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server on %s: %v", n.addr(), err)
	}
	n.mu.Lock()
	n.cmd = cmd
	n.mu.Unlock()
	rc := redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1})
	defer rc.Close()
	waitFor(t, 10*time.Second, "redis-server on "+n.addr()+" to answer", func() bool {
		return rc.Ping(context.Background()).Err() == nil
	})
}

// kill ends the node's process with SIGKILL, as a crash would, and waits
// for it; a node that is not running is left alone.
func (n *ownNode) kill(t testing.TB) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	if err := n.cmd.Process.Kill(); err != nil {
		t.Errorf("kill redis-server on %s: %v", n.addr(), err)
	}
	_ = n.cmd.Wait() // "signal: killed"
	n.cmd = nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every 50 ms until it holds, failing the test after
// timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
