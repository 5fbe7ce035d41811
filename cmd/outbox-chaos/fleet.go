//go:build unix

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// fleet keeps a number of relay processes running.
type fleet struct {
	exe     string
	args    relayArgs
	verbose bool

	mu      sync.Mutex
	procs   []*proc
	started int
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
}

func newFleet(args relayArgs, verbose bool) (*fleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return &fleet{exe: exe, args: args, verbose: verbose}, nil
}

// start launches one more relay.
func (f *fleet) start() error {
	cmd := exec.Command(f.exe, f.args.flags()...)
	cmd.Env = append(os.Environ(), roleEnv+"=relay")
	if f.verbose {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.started++
	f.mu.Unlock()
	return nil
}

// pick returns a random live relay, or nil.
func (f *fleet) pick(rng *rand.Rand) *proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reapLocked()
	if len(f.procs) == 0 {
		return nil
	}
	return f.procs[rng.IntN(len(f.procs))]
}

// reapLocked forgets processes that have exited.
func (f *fleet) reapLocked() {
	live := f.procs[:0]
	for _, p := range f.procs {
		select {
		case <-p.done:
		default:
			live = append(live, p)
		}
	}
	f.procs = live
}

// kill SIGKILLs p and waits until it is gone.
func (f *fleet) kill(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	f.mu.Lock()
	f.reapLocked()
	f.mu.Unlock()
}

// topUp starts relays until n are running (a relay that exited on its own
// is replaced too).
func (f *fleet) topUp(n int) error {
	for {
		f.mu.Lock()
		f.reapLocked()
		live := len(f.procs)
		f.mu.Unlock()
		if live >= n {
			return nil
		}
		if err := f.start(); err != nil {
			return err
		}
	}
}

// resumeAll sends SIGCONT to every relay, in case one is still paused.
func (f *fleet) resumeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// stop asks every relay to stop (SIGTERM: a clean stop that releases its
// batch) and kills those still running after grace.
func (f *fleet) stop(grace time.Duration) {
	f.mu.Lock()
	procs := append([]*proc(nil), f.procs...)
	f.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
	f.mu.Lock()
	f.reapLocked()
	f.mu.Unlock()
}
