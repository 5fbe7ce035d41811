package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
)

// The scenario's workload: products written one request after the other
// each, every request to a random instance.
const (
	scenarioInstances = 3
	scenarioProducts  = 20
	scenarioUpdates   = 30 // stock updates per product
	// scenarioDrainBound is how soon after the last write, with faults,
	// nothing may be pending any more.
	scenarioDrainBound = 15 * time.Second
)

// envScenarioRuns is how many times each variant runs (default 1).
const envScenarioRuns = "OUTBOX_SCENARIO_RUNS"

// envScenarioWatermarks set to true runs the instances with
// EVENT_SYNC_WATERMARKS=true (delivery recorded per partition).
const envScenarioWatermarks = "OUTBOX_SCENARIO_WATERMARKS"

// TestInventoryScenario runs the service as a user would deploy it: three
// processes of the built binary on ports of their own, over one Postgres
// database (a schema of the test's own) and one Redis stream, with
// PUBLISHER=redis and EVENT_SYNC_INTERVAL=500ms. Each of 20 products gets
// 30 stock updates, one after the other (each waits for the previous
// one's answer), each sent to a random instance; then the stream is
// compared with the events table.
//
//   - clean: nothing fails. No event is lost, none arrives twice, and
//     each product's events arrive in the order they were written.
//   - faults: an instance is SIGKILLed about every second (and started
//     again), and the broker (a redis-server of the test's own) is killed
//     and started again every few seconds. Nothing is lost, order is
//     kept, and nothing is pending 15 s after the last write.
//
// OUTBOX_SCENARIO_RUNS=20 runs each variant 20 times and reports the
// counts. It needs OUTBOX_TEST_POSTGRES, and OUTBOX_TEST_REDIS for the
// clean variant.
func TestInventoryScenario(t *testing.T) {
	pgURL := os.Getenv("OUTBOX_TEST_POSTGRES")
	if pgURL == "" {
		t.Skip("set OUTBOX_TEST_POSTGRES (postgres://...) and OUTBOX_TEST_REDIS (redis://...) to run the service's processes against real servers")
	}
	runs := 1
	if v := os.Getenv(envScenarioRuns); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q is not a positive whole number", envScenarioRuns, v)
		}
		runs = n
	}
	bin := serviceBinary(t)
	for _, faults := range []bool{false, true} {
		name := map[bool]string{false: "clean", true: "faults"}[faults]
		t.Run(name, func(t *testing.T) {
			var sum scenarioResult
			passed := 0
			for i := range runs {
				var res scenarioResult
				ok := t.Run(fmt.Sprintf("run-%02d", i+1), func(t *testing.T) {
					res = runScenario(t, bin, pgURL, faults)
				})
				if ok {
					passed++
				}
				sum.add(res)
			}
			t.Logf("%s: %d of %d runs passed; in all: %s", name, passed, runs, sum)
		})
	}
}

// scenario is one run: the database schema, the stream and the
// instances.
type scenario struct {
	t         *testing.T
	db        *sqlx.DB
	schema    string
	stream    string
	redis     *redis.Client // reads the stream
	instances []*instance
	client    *http.Client
}

// runScenario runs the scenario once and checks it.
func runScenario(t *testing.T, bin, pgURL string, faults bool) scenarioResult {
	var broker *privateRedis
	redisURL := os.Getenv("OUTBOX_TEST_REDIS")
	if faults {
		broker = startPrivateRedis(t)
		redisURL = "redis://" + broker.addr + "/0"
	} else if redisURL == "" {
		t.Skip("set OUTBOX_TEST_REDIS (redis://...) to run the scenario without faults")
	}
	s := newScenario(t, pgURL)
	s.connectRedis(redisURL)
	s.startInstances(bin, pgURL, redisURL)

	start := time.Now()
	stopFaults := func() (int, int) { return 0, 0 }
	pause := time.Duration(0)
	if faults {
		stopFaults = s.injectFaults(broker)
		pause = 400 * time.Millisecond // spread the writes over the faults
	}
	w := s.write(pause)
	kills, restarts := stopFaults()
	writing := w.last.Sub(start)

	drained, pendingAt := s.waitDrained(w.last, scenarioDrainBound+10*time.Second)
	if drained < 0 || (faults && drained > scenarioDrainBound) {
		s.logOwnership()
	}
	for _, in := range s.instances {
		if err := in.stop(); err != nil {
			t.Error(err)
		}
	}
	res := s.compare(w)
	res.Kills, res.BrokerRestarts = kills, restarts
	res.Drained = drained
	t.Logf("%s; %d instance kills, %d broker restarts; writes took %v; drained %s after the last write",
		res, kills, restarts, writing.Round(time.Millisecond), scenarioWithin(drained, pendingAt))
	if res.Lost > 0 {
		t.Errorf("%d of %d events in the table never reached the stream (%d still pending)", res.Lost, res.Rows, res.Pending)
	}
	if res.OrderViolations > 0 {
		t.Errorf("%d events reached the stream before an earlier event of their product", res.OrderViolations)
	}
	if res.Phantoms > 0 || res.Missing > 0 {
		t.Errorf("%d stream entries of no event in the table; %d answered writes not in the table", res.Phantoms, res.Missing)
	}
	if !faults {
		if res.Duplicates > 0 {
			t.Errorf("%d events reached the stream more than once, with nothing killed or restarted", res.Duplicates)
		}
		if res.Failed > 0 {
			t.Errorf("%d writes failed, with nothing killed or restarted", res.Failed)
		}
	}
	if faults && (drained < 0 || drained > scenarioDrainBound) {
		t.Errorf("events were still pending %s after the last write; want none within %v", scenarioWithin(drained, pendingAt), scenarioDrainBound)
	}
	if !faults && drained < 0 {
		t.Errorf("events were still pending %s after the last write", scenarioWithin(drained, pendingAt))
	}
	if t.Failed() {
		for _, e := range res.Examples {
			t.Log(e)
		}
		for _, in := range s.instances {
			t.Logf("instance %d (pids %v) logs, last part:\n%s", in.n, in.pids, tail(in.logText(), 6000))
		}
	}
	return res
}

// newScenario makes the run's schema (dropped at the end) and its stream
// name.
func newScenario(t *testing.T, pgURL string) *scenario {
	t.Helper()
	db, err := sqlx.Open("pgx", pgURL)
	if err != nil {
		t.Fatalf("OUTBOX_TEST_POSTGRES: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("OUTBOX_TEST_POSTGRES is set but Postgres is unreachable: %v", err)
	}
	suffix := randomHex(t)
	s := &scenario{t: t, db: db, schema: "inv_scenario_" + suffix, stream: "inventory.scenario." + suffix,
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+s.schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := db.ExecContext(context.Background(), "DROP SCHEMA "+s.schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", s.schema, err)
		}
	})
	return s
}

// connectRedis opens the client that reads the stream back, and deletes
// the stream at the end.
func (s *scenario) connectRedis(redisURL string) {
	t := s.t
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("Redis URL: %v", err)
	}
	s.redis = redis.NewClient(opt)
	t.Cleanup(func() {
		if err := s.redis.Del(context.Background(), s.stream).Err(); err != nil {
			t.Errorf("delete stream %s: %v", s.stream, err)
		}
		s.redis.Close()
	})
	if err := s.redis.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s is unreachable: %v", opt.Addr, err)
	}
}

// startInstances starts the three instances and waits until each
// answers.
func (s *scenario) startInstances(bin, pgURL, redisURL string) {
	t := s.t
	sep := "?"
	if strings.Contains(pgURL, "?") {
		sep = "&"
	}
	env := []string{
		envDatabaseURL + "=" + pgURL + sep + "search_path=" + s.schema,
		envPublisher + "=redis",
		envRedisURL + "=" + redisURL,
		envEventsTopic + "=" + s.stream,
		envInterval + "=500ms",
		envLogLevel + "=warn",
	}
	if on, _ := strconv.ParseBool(os.Getenv(envScenarioWatermarks)); on {
		env = append(env, envWatermarks+"=true")
	}
	for n := range scenarioInstances {
		in := &instance{n: n, addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), env: env, bin: bin}
		s.instances = append(s.instances, in)
		t.Cleanup(in.kill)
	}
	// The first alone: instances started at once on an empty schema race
	// in CREATE TABLE IF NOT EXISTS of the business tables (Postgres:
	// duplicate key in pg_type_typname_nsp_index), and the losers exit.
	if err := s.instances[0].start(); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, len(s.instances))
	for _, in := range s.instances[1:] {
		go func() { errs <- in.start() }()
	}
	for range s.instances[1:] {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// writes is what the writers asked for and were told.
type writes struct {
	mu      sync.Mutex
	answers map[string]int // event ID answered 200 -> quantity
	failed  int            // answered, but not 200
	unsure  int            // no answer: the instance died, or the request never reached it
	last    time.Time      // when the last answer (or error) came
}

// write sends every product's updates: one goroutine per product, one
// request after the other, each to a random instance that is up, with
// pause (jittered) between two. Quantity q is the product's q-th update.
func (s *scenario) write(pause time.Duration) *writes {
	w := &writes{answers: map[string]int{}}
	var wg sync.WaitGroup
	for p := range scenarioProducts {
		wg.Go(func() {
			product := fmt.Sprintf("p%02d", p)
			for q := 1; q <= scenarioUpdates; q++ {
				in := s.pickUp()
				id, code, err := s.postStock(in, product, q)
				w.mu.Lock()
				switch {
				case err != nil:
					w.unsure++
				case code != http.StatusOK:
					w.failed++
				default:
					w.answers[id] = q
				}
				w.last = time.Now()
				w.mu.Unlock()
				if pause > 0 {
					time.Sleep(pause/2 + rand.N(pause))
				}
			}
		})
	}
	wg.Wait()
	return w
}

// pickUp returns a random instance that is up, waiting for one if need
// be.
func (s *scenario) pickUp() *instance {
	for {
		var up []*instance
		for _, in := range s.instances {
			if in.isUp() {
				up = append(up, in)
			}
		}
		if len(up) > 0 {
			return up[rand.IntN(len(up))]
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// postStock sets product's stock in store s1 to q through in, and returns
// the event ID of the answer.
func (s *scenario) postStock(in *instance, product string, q int) (string, int, error) {
	body := fmt.Sprintf(`{"store_id":"s1","product_id":%q,"quantity":%d}`, product, q)
	resp, err := s.client.Post("http://"+in.addr+"/stock", "application/json", bytes.NewBufferString(body))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var out struct {
		EventID string `json:"event_id"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return "", 0, err
		}
	}
	return out.EventID, resp.StatusCode, nil
}
