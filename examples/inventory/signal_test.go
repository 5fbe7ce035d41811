package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMainEnv, set to "1", makes TestMain run main: the test binary is
// then the service's binary.
const runMainEnv = "INVENTORY_TEST_RUN_MAIN"

// The built service stops on SIGTERM, as a process manager stops it: it
// answers no more, logs its shutdown and exits 0, its port closed. (Under
// "go run" a SIGTERM reaches go run, not the service: the README says to
// build the binary for that.)
func TestBinaryStopsOnSIGTERM(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cmd := exec.Command(os.Args[0])
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	cmd.Env = append(os.Environ(), runMainEnv+"=1", envHTTPAddr+"="+addr,
		envDatabaseURL+"=sqlite:"+filepath.Join(t.TempDir(), "inventory.db"), envLogLevel+"=info", "REDIS_URL=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service never answered on %s:\n%s", addr, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20 s after SIGTERM:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "relay stopped; closing the database") {
		t.Errorf("no clean shutdown in the log:\n%s", stderr.String())
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the service exited", addr)
	}
}

// The README promises SIGTERM only of the built binary: under "go run",
// a SIGTERM stops go run and leaves the service it started running.
func TestReadmeOnSignals(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, run, ok := strings.Cut(string(readme), "\n## Run it\n")
	if !ok {
		t.Fatal(`README.md has no "## Run it"`)
	}
	run, _, _ = strings.Cut(run, "\n## ")
	if !strings.Contains(run, "go build -o inventory ./examples/inventory") {
		t.Error(`"Run it" does not show how to build the binary`)
	}
	for _, para := range strings.Split(run, "\n\n") {
		if strings.Contains(para, "SIGTERM") && !strings.Contains(para, "./inventory") {
			t.Errorf("a paragraph promises SIGTERM without naming the built binary ./inventory:\n%s", para)
		}
	}
}
