package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serviceBinary builds this package's command into a temporary folder
// of t and returns its path: the scenario runs the service as its users
// do, the binary in processes of its own.
func serviceBinary(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the service: %v", err)
	}
	path := filepath.Join(t.TempDir(), "inventory")
	start := time.Now()
	if out, err := exec.Command(gobin, "build", "-o", path, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the service in %v", time.Since(start).Round(time.Millisecond))
	return path
}

// instance is one process of the service on a port of its own; start
// runs it again on the same port after it died.
type instance struct {
	n    int
	addr string
	env  []string
	bin  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	up     bool         // answered /healthz and not killed since
	logs   bytes.Buffer // of every run, the last 256 KiB
	pids   []int
}

func (in *instance) Write(p []byte) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.logs.Write(p)
	if n := in.logs.Len(); n > 256<<10 {
		in.logs.Next(n - 256<<10)
	}
	return len(p), nil
}

// start runs the service and waits until /healthz answers 200.
func (in *instance) start() error {
	cmd := exec.Command(in.bin)
	cmd.Env = append(os.Environ(), in.env...)
	cmd.Env = append(cmd.Env, envHTTPAddr+"="+in.addr)
	cmd.Stdout, cmd.Stderr = in, in
	cmd.SysProcAttr = scenarioProcAttr()
	fmt.Fprintf(in, "--- instance %d starts\n", in.n)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start instance %d: %w", in.n, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	in.mu.Lock()
	in.cmd, in.exited = cmd, exited
	in.pids = append(in.pids, cmd.Process.Pid)
	in.mu.Unlock()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("instance %d exited at start: %v\n%s", in.n, cmd.ProcessState, tail(in.logText(), 4000))
		default:
		}
		resp, err := client.Get("http://" + in.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				in.mu.Lock()
				in.up = true
				in.mu.Unlock()
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("instance %d did not answer /healthz within 30 s", in.n)
}

// isUp reports whether the instance answers and was not killed since.
func (in *instance) isUp() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.up
}

// kill ends the process with SIGKILL, as a crash would.
func (in *instance) kill() {
	in.mu.Lock()
	in.up = false
	cmd, exited := in.cmd, in.exited
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// stop ends the process with SIGTERM (the service answers what is in
// flight, lets its relay finish and gives its partitions back) and
// reports how it exited; one that does not exit within 20 s is killed.
func (in *instance) stop() error {
	in.mu.Lock()
	in.up = false
	cmd, exited := in.cmd, in.exited
	in.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("instance %d did not stop within 20 s of SIGTERM", in.n)
	}
	if !cmd.ProcessState.Success() {
		return fmt.Errorf("instance %d exited with %v after SIGTERM", in.n, cmd.ProcessState)
	}
	return nil
}

func (in *instance) logText() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.logs.String()
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
