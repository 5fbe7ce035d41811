package multiproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// outcome is what became of a write a relay process was asked for.
type outcome int

const (
	committed outcome = iota // the process said ok: committed
	failed                   // the process said the write failed
	uncertain                // the process died first: committed or not
)

// relayProc is a relay process: this test binary run again with childEnv.
type relayProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited and stdout is read

	inMu  sync.Mutex // one command line at a time
	stdin io.WriteCloser

	mu       sync.Mutex
	cond     *sync.Cond // signalled when inflight falls
	open     bool       // new writes may be sent to it
	gone     bool       // it exited; replies answered uncertain
	inflight int
	replies  map[string]chan outcome
	begun    map[string]bool // IDs of the batches it began publishing
	done     map[string]bool // IDs of the batches it recorded
	ready    chan struct{}
	left     bool
	stderr   bytes.Buffer
	err      error // of Wait
}

// startRelay starts relay process name on the fixture's table and waits
// until it runs.
func (f *fixture) startRelay(name string) *relayProc {
	t := f.t
	t.Helper()
	cfg := f.cfg
	cfg.Name = name
	raw, err := json.Marshal(cfg)
	mustNoErr(t, err, "config")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.SysProcAttr = procAttr()
	r := &relayProc{name: name, cmd: cmd, exited: make(chan struct{}), replies: map[string]chan outcome{},
		begun: map[string]bool{}, done: map[string]bool{}, ready: make(chan struct{}), open: true}
	r.cond = sync.NewCond(&r.mu)
	cmd.Stderr = &lockedWriter{mu: &r.mu, w: &r.stderr}
	out, err := cmd.StdoutPipe()
	mustNoErr(t, err, "stdout")
	r.stdin, err = cmd.StdinPipe()
	mustNoErr(t, err, "stdin")
	mustNoErr(t, cmd.Start(), "start relay %s", name)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			r.line(sc.Text())
		}
		err := cmd.Wait()
		r.mu.Lock()
		r.err = err
		r.open, r.gone = false, true
		for id, ch := range r.replies {
			ch <- uncertain
			delete(r.replies, id)
		}
		r.mu.Unlock()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			_ = cmd.Process.Kill()
			<-r.exited
		}
		if t.Failed() {
			if s := r.stderrText(); s != "" {
				t.Logf("relay %s stderr:\n%s", name, s)
			}
		}
	})
	select {
	case <-r.ready:
	case <-r.exited:
		t.Fatalf("relay %s exited at start: %v\n%s", name, r.err, r.stderrText())
	case <-time.After(20 * time.Second):
		t.Fatalf("relay %s did not start", name)
	}
	return r
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (r *relayProc) line(s string) {
	kind, rest, _ := strings.Cut(s, " ")
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case "ready":
		close(r.ready)
	case "ok", "err":
		id, _, _ := strings.Cut(rest, " ")
		if ch, ok := r.replies[id]; ok {
			delete(r.replies, id)
			if kind == "ok" {
				ch <- committed
			} else {
				fmt.Fprintf(&r.stderr, "write %s failed: %s\n", id, rest)
				ch <- failed
			}
		}
	case "b", "d":
		into := r.begun
		if kind == "d" {
			into = r.done
		}
		for id := range strings.SplitSeq(rest, ",") {
			into[id] = true
		}
	case "left":
		r.left = true
	}
}

func (r *relayProc) stderrText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.String()
}

// write asks the relay to write event id, the seq-th of agg, and waits
// for its answer (uncertain if it dies first). The caller has acquired r.
func (r *relayProc) write(id, agg string, seq int) outcome {
	ch := make(chan outcome, 1)
	r.mu.Lock()
	if r.gone {
		r.mu.Unlock()
		return uncertain
	}
	r.replies[id] = ch // answered by line, or uncertain when it exits
	r.mu.Unlock()
	r.inMu.Lock()
	_, _ = fmt.Fprintf(r.stdin, "w %s %s %d\n", id, agg, seq) // fails only if it is exiting
	r.inMu.Unlock()
	return <-ch
}

// acquire reserves r for one write; it fails once r is closed.
func (r *relayProc) acquire() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.open {
		return false
	}
	r.inflight++
	return true
}

func (r *relayProc) release() {
	r.mu.Lock()
	r.inflight--
	r.cond.Broadcast()
	r.mu.Unlock()
}

// stop closes r to new writes, waits for its writes in flight, then ends
// it gracefully (SIGTERM: Run returns and gives its partitions back) and
// fails the test unless it exits cleanly.
func (r *relayProc) stop(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	r.open = false
	for r.inflight > 0 {
		r.cond.Wait()
	}
	r.mu.Unlock()
	mustNoErr(t, r.cmd.Process.Signal(syscall.SIGTERM), "SIGTERM to %s", r.name)
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("relay %s did not stop within 20 s of SIGTERM", r.name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || !r.left {
		t.Fatalf("relay %s: exit %v (left: %v)\n%s", r.name, r.err, r.left, r.stderr.String())
	}
}

// kill ends r with SIGKILL, writes in flight or not, and waits until it
// is gone.
func (r *relayProc) kill(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	r.open = false
	r.mu.Unlock()
	mustNoErr(t, r.cmd.Process.Signal(syscall.SIGKILL), "SIGKILL to %s", r.name)
	<-r.exited
}

// unfinished returns the IDs of the events of the batches r began to
// publish and did not record: the only ones its death may leave to be
// published again.
func (r *relayProc) unfinished() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for id := range r.begun {
		if !r.done[id] {
			out[id] = true
		}
	}
	return out
}

// fleet is the relay processes the writers may send writes to.
type fleet struct {
	mu    sync.Mutex
	procs []*relayProc
}

func (fl *fleet) add(r *relayProc) {
	fl.mu.Lock()
	fl.procs = append(fl.procs, r)
	fl.mu.Unlock()
}

// remove forgets r (before it is stopped or killed).
func (fl *fleet) remove(r *relayProc) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for i, p := range fl.procs {
		if p == r {
			fl.procs = append(fl.procs[:i], fl.procs[i+1:]...)
			return
		}
	}
}

// live returns the relays of the fleet.
func (fl *fleet) live() []*relayProc {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return append([]*relayProc(nil), fl.procs...)
}

// acquire returns a random relay of the fleet reserved for one write, or
// nil when none is open.
func (fl *fleet) acquire(rng *rand.Rand) *relayProc {
	procs := fl.live()
	rng.Shuffle(len(procs), func(i, j int) { procs[i], procs[j] = procs[j], procs[i] })
	for _, p := range procs {
		if p.acquire() {
			return p
		}
	}
	return nil
}
