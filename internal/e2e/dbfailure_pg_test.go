//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// privatePostgres starts a Postgres cluster of its own in a temporary
// directory, on a free port, from the binaries in OUTBOX_TEST_PG_BIN
// (initdb, pg_ctl), and stops and removes it when the test ends. Run as
// root, the server runs as OUTBOX_TEST_PG_USER (defaults to postgres),
// since Postgres refuses to run as root. down stops the server with
// pg_ctl's fast mode (every session terminated, new connections
// refused); up starts it again and returns once it accepts connections.
// The tests share the server, each with a table of its own.
func privatePostgres(t *testing.T) (dsn string, down, up func(*testing.T)) {
	t.Helper()
	bin := os.Getenv("OUTBOX_TEST_PG_BIN")
	if bin == "" {
		t.Skip("set OUTBOX_TEST_PG_BIN to a directory holding Postgres's initdb and pg_ctl (e.g. /usr/lib/postgresql/15/bin) to restart a private server")
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		name := os.Getenv("OUTBOX_TEST_PG_USER")
		if name == "" {
			name = "postgres"
		}
		u, err := user.Lookup(name)
		mustNoErr(t, err, "OUTBOX_TEST_PG_USER: the user to run Postgres as")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "outbox-pg-")
	mustNoErr(t, err, "temp dir")
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		mustNoErr(t, os.Chown(dir, int(cred.Uid), int(cred.Gid)), "chown")
	}
	data := filepath.Join(dir, "data")
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	port := freePort(t)
	start := func(*testing.T) {
		run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "30",
			"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", port, dir), "start")
	}
	stop := func(*testing.T) { run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop") }

	run("initdb", "-D", data, "-U", "root", "-A", "trust", "--no-sync", "--locale=C", "-E", "UTF8")
	start(t)
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		cmd.Run() // already stopped if the test failed while the server was down
	})
	return fmt.Sprintf("postgres://root@127.0.0.1:%d/postgres?sslmode=disable", port), stop, start
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustNoErr(t, err, "free port")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The same scenarios with a Postgres that really stops and starts: the
// server terminates every session, refuses connections while it is down,
// and comes back with none of the old ones.
func TestPostgresRestart(t *testing.T) {
	dsn, down, up := privatePostgres(t)
	open := func(t *testing.T) *outageDB {
		o := openOutageDB(t, "pgx", dsn, dsn)
		// The direct pool goes through the restart too: with no idle
		// connection, none of the test's own reads meets one it killed.
		o.direct.SetMaxIdleConns(0)
		o.down, o.up = down, up
		return o
	}
	t.Run("relay", func(t *testing.T) { relayThroughOutage(t, open(t), time.Second) })
	t.Run("publish", func(t *testing.T) { publishWhileDown(t, open(t)) })
	t.Run("listen", func(t *testing.T) { listenAfterOutage(t, open(t), time.Second) })
}
