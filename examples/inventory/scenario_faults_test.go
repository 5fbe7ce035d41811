package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// injectFaults kills a random instance about every second and starts it
// again at once, and kills and restarts the broker every three seconds or
// so, until the returned stop is called; stop returns the counts.
func (s *scenario) injectFaults(broker *privateRedis) (stop func() (kills, restarts int)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var kills, restarts int
	var errMu sync.Mutex
	var errs []error
	fail := func(err error) { errMu.Lock(); errs = append(errs, err); errMu.Unlock() }
	wg.Go(func() {
		var starts sync.WaitGroup
		defer starts.Wait()
		for {
			select {
			case <-done:
				return
			case <-time.After(700*time.Millisecond + rand.N(600*time.Millisecond)):
			}
			var up []*instance
			for _, in := range s.instances {
				if in.isUp() {
					up = append(up, in)
				}
			}
			if len(up) == 0 {
				continue
			}
			in := up[rand.IntN(len(up))]
			in.kill()
			kills++
			starts.Go(func() {
				if err := in.start(); err != nil {
					fail(err)
				}
			})
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(2500*time.Millisecond + rand.N(time.Second)):
			}
			broker.kill()
			restarts++
			time.Sleep(200*time.Millisecond + rand.N(300*time.Millisecond))
			if err := broker.start(); err != nil {
				fail(err)
				return
			}
		}
	})
	return func() (int, int) {
		close(done)
		wg.Wait()
		for _, err := range errs {
			s.t.Error(err)
		}
		return kills, restarts
	}
}

// privateRedis is a redis-server of the test's own, which it may kill
// and start again: an append-only file fsynced on every write keeps what
// it acknowledged across a SIGKILL.
type privateRedis struct {
	addr string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("the scenario with broker restarts needs redis-server on PATH: %v", err)
	}
	dir := t.TempDir()
	port := freePort(t)
	r := &privateRedis{addr: "127.0.0.1:" + strconv.Itoa(port), args: []string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
		"--save", "", "--appendonly", "yes", "--appendfsync", "always"}}
	t.Cleanup(r.kill)
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs redis-server and waits until it answers PING.
func (r *privateRedis) start() error {
	cmd := exec.Command("redis-server", r.args...)
	cmd.SysProcAttr = scenarioProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server on %s: %w", r.addr, err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	rc := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer rc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if rc.Ping(context.Background()).Err() == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer within 10 s", r.addr)
}

// kill ends redis-server with SIGKILL and waits for it.
func (r *privateRedis) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
