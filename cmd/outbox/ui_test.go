package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

// lockedBuffer is an output the command writes from its goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// `outbox ui` serves the console behind basic auth, shows the database
// without its password, and stops with its context.
func TestUI(t *testing.T) {
	tg := newTarget(t, sqlstore.Postgres)
	ok(t, tg.args("migrate")...)
	tg.seed(t)
	// A password in the URL and in its parameters: trust authentication
	// ignores both, the page must show neither.
	url := strings.Replace(tg.url, "://root@", "://root:s3cret-pw@", 1) + "&password=s3cret-pw"
	if url == tg.url+"&password=s3cret-pw" {
		t.Skipf("the Postgres URL %s has no root@ to add a password to", tg.url)
	}
	t.Setenv(EnvUIPassword, "open sesame")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errs lockedBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- runContext(ctx, []string{"ui", "--db", url, "--table", tg.table, "--listen", "127.0.0.1:0", "--user", "ops"}, &out, &errs)
	}()
	defer func() {
		cancel()
		select {
		case code := <-exited:
			if code != 0 {
				t.Errorf("outbox ui exited %d: %s", code, errs.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("outbox ui did not stop with its context")
		}
	}()
	addr := regexp.MustCompile(`serving (http://\S+/)`)
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == ""; {
		if m := addr.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("outbox ui did not start: %s %s", out.String(), errs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	get := func(user, pass string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code, _ := get("ops", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("a wrong password: %d, want 401", code)
	}
	code, body := get("ops", "open sesame")
	if code != http.StatusOK || !strings.Contains(body, `id="pending"`) || !strings.Contains(body, "root@") {
		t.Fatalf("overview: %d\n%s", code, body)
	}
	if strings.Contains(body, "s3cret") || strings.Contains(body, "open sesame") {
		t.Fatalf("the page shows a password:\n%s", body)
	}
	if strings.Contains(body, `method="post"`) || !strings.Contains(body, "read only") {
		t.Fatal("the console offers actions without --actions")
	}
}

func TestUIBadFlags(t *testing.T) {
	t.Setenv(EnvUIPassword, "")
	fails(t, 2, "reaches beyond this machine", "ui", "--db", "sqlite:x.db", "--listen", "0.0.0.0:8089")
	fails(t, 2, "needs a password", "ui", "--db", "sqlite:x.db", "--user", "ops")
	fails(t, 2, "--listen", "ui", "--db", "sqlite:x.db", "--listen", "nowhere")
}

func TestUILabel(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://app:pw@db.internal:5432/orders?sslmode=disable&password=pw": "postgres://app@db.internal:5432/orders",
		"mysql://app:pw@db:3306/orders":                                         "mysql://app@db:3306/orders",
		"mysql://app:pw@tcp(db:3306)/orders":                                    "database",
		"sqlite:/var/lib/app.db":                                                "sqlite:/var/lib/app.db",
		"postgres:///orders?host=/tmp&password=pw":                              "postgres:/orders",
	} {
		if got := uiLabel(in); got != want || strings.Contains(got, "pw") {
			t.Errorf("uiLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, ":8089": false, "0.0.0.0:1": false, "10.0.0.1:1": false} {
		if got, err := loopback(addr); err != nil || got != want {
			t.Errorf("loopback(%q) = %v, %v; want %v", addr, got, err, want)
		}
	}
}
