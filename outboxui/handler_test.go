package outboxui

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

// client returns an HTTP client with a cookie jar that does not follow
// redirects.
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches url and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func post(t *testing.T, c *http.Client, target string, form url.Values, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// Every page renders on a seeded table, with the figures the table holds;
// a bad filter or cursor is a 400, an unknown event a 404.
func TestPages(t *testing.T) {
	b := setup(t, WithActions(true), WithLabel("orders-db"))
	topic := randomName("outboxui-test-") + ":stock"
	dead := b.seed(t, topic)
	c := client(t)
	for _, tc := range []struct {
		path string
		code int
		want []string
	}{
		{"", 200, []string{`id="pending">37<`, `id="dead">6<`, "orders-db", "<svg", "reservation.cancelled", "the latest 720 synced"}},
		{"events", 200, []string{"pen-0000", "pen-0036", "Next attempt"}},
		{"events?state=failed", 200, []string{"pen-0003", "pen-0010", "pen-0020", "connection refused"}},
		{"events?state=dead&type=payment.captured", 200, []string{"dead-0001", "dead-0003", "dead-0005", `id="requeue-view"`}},
		{"events?state=synced", 200, []string{"syn-", `id="next"`}},
		{"event?id=" + dead[0], 200, []string{"OOM command not allowed", "&#34;warehouse&#34;: &#34;ams-1&#34;", "traceparent", `id="requeue"`}},
		{"relays", 200, []string{`id="partitions"`, "No live relay"}},
		{"requeue?state=dead&type=reservation.created", 200, []string{`id="dry-run-count">3<`}},
		{"purge", 200, []string{`name="older_than"`}},
		{"static/style.css", 200, []string{".chart .bar"}},
		{"events?state=nope", 400, []string{"unknown state"}},
		{"events?state=dead&after=x", 400, []string{"bad cursor"}},
		{"events?from=yesterday", 400, []string{"want YYYY-MM-DDTHH:MM"}},
		{"event?id=nope", 404, []string{"not found"}},
		{"nowhere", 404, nil},
	} {
		code, body := get(t, c, b.base+tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d, want %d\n%s", tc.path, code, tc.code, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in the page", tc.path, w)
			}
		}
		// Self-contained and readable with JavaScript off: no script,
		// nothing loaded from another origin.
		if strings.Contains(body, "<script") || regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(body) {
			t.Errorf("GET %s: the page has a script or loads from another origin", tc.path)
		}
	}
	// The dead page of one type lists those events only.
	_, body := get(t, c, b.base+"events?state=dead&type=payment.captured")
	if strings.Contains(body, "dead-0000") {
		t.Error("the type filter let dead-0000 (reservation.created) through")
	}
	// The aggregate, topic and creation-time filters of the form narrow
	// the list too.
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"state=dead&aggregate=order-3", []string{"dead-0003"}},
		{"state=dead&topic=" + url.QueryEscape(topic), dead},
		{"state=dead&topic=elsewhere", nil},
		{"state=dead&from=" + time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04"), nil}, // created 90 minutes ago and more
		{"state=dead&to=" + time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04"), dead},
		{"state=pending&from=" + time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04") + "&type=stock.updated&aggregate=sku-100", []string{"pen-0000", "pen-0009", "pen-0018", "pen-0027", "pen-0036"}},
	} {
		code, body := get(t, c, b.base+"events?"+tc.query)
		got := regexp.MustCompile(`event\?id=([a-z]+-\d+)`).FindAllStringSubmatch(body, -1)
		var ids []string
		for _, m := range got {
			ids = append(ids, m[1])
		}
		slices.Sort(ids)
		if code != 200 || !slices.Equal(ids, tc.want) {
			t.Errorf("GET events?%s: %d, lists %v, want %v", tc.query, code, ids, tc.want)
		}
	}
}

// Pages follow one another by cursor: every pending event once, in order.
func TestPaging(t *testing.T) {
	b := setup(t)
	b.seed(t, "paging")
	c := client(t)
	next := b.base + "events?state=synced"
	seen := map[string]bool{}
	link := regexp.MustCompile(`id="next" href="([^"]+)"`)
	idRe := regexp.MustCompile(`event\?id=(syn-\d+)`)
	for pages := 0; next != ""; pages++ {
		if pages > 20 {
			t.Fatal("more than 20 pages of 50")
		}
		code, body := get(t, c, next)
		if code != 200 {
			t.Fatalf("GET %s: %d", next, code)
		}
		for _, m := range idRe.FindAllStringSubmatch(body, -1) {
			if seen[m[1]] {
				t.Fatalf("%s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		next = ""
		if m := link.FindStringSubmatch(body); m != nil {
			next = b.base + strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(seen) != 720 {
		t.Fatalf("paged through %d synced events, want 720", len(seen))
	}
}

// With actions off, no form posts anywhere, the action pages do not
// exist, and every POST is refused without changing anything.
func TestActionsDisabled(t *testing.T) {
	b := setup(t)
	dead := b.seed(t, "disabled")
	c := client(t)
	for _, path := range []string{"", "events?state=dead", "event?id=" + dead[0]} {
		code, body := get(t, c, b.base+path)
		if code != 200 || strings.Contains(body, `method="post"`) || strings.Contains(body, "requeue") || strings.Contains(body, `href="purge"`) {
			t.Errorf("GET %s (%d) offers an action:\n%s", path, code, body)
		}
	}
	for _, path := range []string{"requeue?state=dead", "purge"} {
		if code, _ := get(t, c, b.base+path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	for _, path := range []string{"requeue", "purge", "event"} {
		code, body := post(t, c, b.base+path, url.Values{"id": {dead[0]}, "older_than": {"1m"}, "csrf": {"x"}}, nil)
		if code != http.StatusForbidden || !strings.Contains(body, "actions are disabled") {
			t.Errorf("POST %s: %d %q, want 403", path, code, body)
		}
	}
	if n := b.count(t, "dead_at IS NOT NULL"); n != 6 {
		t.Fatalf("%d dead events after refused POSTs, want 6", n)
	}
}

// A POST needs the token of its own cookie, from the same origin.
func TestCSRF(t *testing.T) {
	var log syncBuffer
	b := setup(t, WithActions(true), WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	dead := b.seed(t, "csrf")
	c := client(t)
	code, body := get(t, c, b.base+"event?id="+dead[0])
	m := csrfInput.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("event page (%d) has no CSRF field", code)
	}
	token := m[1]
	form := func(tok string) url.Values {
		v := url.Values{"id": {dead[0]}}
		if tok != "" {
			v.Set("csrf", tok)
		}
		return v
	}
	stranger := client(t) // no cookie
	for _, tc := range []struct {
		name   string
		c      *http.Client
		form   url.Values
		header http.Header
	}{
		{"no token", c, form(""), nil},
		{"a wrong token", c, form(token[:len(token)-2] + "xx"), nil},
		{"the token without its cookie", stranger, form(token), nil},
		{"cross-site", c, form(token), http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		{"another origin", c, form(token), http.Header{"Origin": {"https://evil.example"}}},
	} {
		code, body := post(t, tc.c, b.base+"requeue", tc.form, tc.header)
		if code != http.StatusForbidden {
			t.Errorf("%s: %d %q, want 403", tc.name, code, body)
		}
	}
	if n := b.count(t, "dead_at IS NOT NULL"); n != 6 {
		t.Fatalf("%d dead events after refused POSTs, want 6", n)
	}
	resp, err := c.PostForm(b.base+"requeue", form(token))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "event?done=requeued&id="+dead[0]+"&n=1" {
		t.Fatalf("POST with the token: %d to %q, want 303 to the event's page, relative", resp.StatusCode, loc)
	}
	if n := b.count(t, "dead_at IS NOT NULL"); n != 5 {
		t.Fatalf("%d dead events after the requeue, want 5", n)
	}
	logged := log.String()
	if !strings.Contains(logged, "action=requeue id="+dead[0]+" requeued=1") || strings.Count(logged, `msg="outboxui: request refused"`) != 5 {
		t.Fatalf("the log does not tell the requeue and the 5 refusals:\n%s", logged)
	}
}

// syncBuffer is a buffer the handler's goroutines write logs to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Purge deletes the synced events older than the age, nothing else.
func TestPurge(t *testing.T) {
	var log syncBuffer
	b := setup(t, WithActions(true), WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	b.seed(t, "purge")
	old := b.exec(t, `UPDATE %s SET synced_at = now() - interval '40 days' WHERE id LIKE 'syn-00%%'`)
	c := client(t)
	_, body := get(t, c, b.base+"purge")
	token := csrfInput.FindStringSubmatch(body)[1]
	code, _ := post(t, c, b.base+"purge", url.Values{"csrf": {token}, "older_than": {"720h"}}, nil)
	if code != http.StatusSeeOther {
		t.Fatalf("purge: %d, want 303", code)
	}
	if n := b.count(t, "synced_at IS NOT NULL"); n != 720-old {
		t.Fatalf("%d synced left, want %d", n, 720-old)
	}
	if n := b.count(t, "synced_at IS NULL"); n != 43 {
		t.Fatalf("%d pending or dead left, want 43", n)
	}
	if want := fmt.Sprintf("action=purge older_than=720h0m0s purged=%d", old); !strings.Contains(log.String(), want) {
		t.Errorf("the log does not tell the purge (%q):\n%s", want, log.String())
	}
	if code, body := post(t, c, b.base+"purge", url.Values{"csrf": {token}, "older_than": {"10s"}}, nil); code != 400 {
		t.Fatalf("purge of 10s: %d %s, want 400", code, body)
	}
}

func TestShowPayload(t *testing.T) {
	for _, tc := range []struct {
		in, out, format string
	}{
		{`{"a":[1,2]}`, "{\n  \"a\": [\n    1,\n    2\n  ]\n}", "JSON"},
		{"plain text", "plain text", "text"},
		{"\xff\x00\x01", "ff00 01", "bytes (hex)"},
	} {
		out, format := showPayload([]byte(tc.in))
		if out != tc.out || format != tc.format {
			t.Errorf("showPayload(%q) = %q, %q; want %q, %q", tc.in, out, format, tc.out, tc.format)
		}
	}
}

func TestNewOptions(t *testing.T) {
	db := openPostgres(t)
	s := newStore(t, db, randomName("outboxui_test_"))
	if _, err := New(nil); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := New(s, WithCSRFKey([]byte("short"))); err == nil {
		t.Error("a 5-byte CSRF key accepted")
	}
	if _, err := New(s, WithTimeout(-time.Second)); err == nil {
		t.Error("a negative timeout accepted")
	}
}

// The relays page shows a live relay: the partitions it holds, how long
// ago it joined and when it expires, and its name as the owner of its
// partitions with the lease left.
func TestRelaysPage(t *testing.T) {
	b := setup(t)
	b.seed(t, "relays")
	relay, err := sqlstore.New(b.db, sqlstore.WithTable(b.table), sqlstore.WithRelayName("relay-a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := relay.Heartbeat(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := relay.Leave(ctx); err != nil {
			t.Errorf("leave: %v", err)
		}
	})
	code, body := get(t, client(t), b.base+"relays")
	if code != 200 {
		t.Fatalf("GET relays: %d\n%s", code, body)
	}
	row := regexp.MustCompile(`<tr><td>relay-a</td><td class="n">(\d+)</td><td>([^<]+) ago</td><td>([^<]+)</td></tr>`).FindStringSubmatch(body)
	if !strings.Contains(body, "<th>Seen since</th><th>Expires in</th>") || row == nil {
		t.Fatalf("no row of relay-a with its partitions, seen since and expires in:\n%s", body)
	}
	if row[1] != "64" {
		t.Errorf("relay-a holds %s partitions, want all 64", row[1])
	}
	since, err1 := time.ParseDuration(row[2])
	expires, err2 := time.ParseDuration(row[3])
	if err1 != nil || err2 != nil || since > 10*time.Second || expires <= 0 || expires > sqlstore.DefaultMemberTTL {
		t.Errorf("relay-a seen since %q ago, expires in %q; want a few seconds ago, within its time to live", row[2], row[3])
	}
	if n := strings.Count(body, "<td>relay-a</td>"); n != 65 {
		t.Errorf("relay-a named %d times, want once as a relay and as the owner of 64 partitions", n-1)
	}
}

// WithMiddleware wraps the whole console, outermost first: a request the
// middleware refuses never reaches a page.
func TestMiddleware(t *testing.T) {
	var order []string
	mw := func(name string, refuse bool) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				order = append(order, name)
				if refuse && r.Header.Get("X-Operator") == "" {
					http.Error(w, "who are you", http.StatusUnauthorized)
					return
				}
				next.ServeHTTP(w, r)
			})
		}
	}
	b := setup(t, WithMiddleware(mw("outer", false)), WithMiddleware(mw("auth", true)))
	c := client(t)
	if code, body := get(t, c, b.base); code != http.StatusUnauthorized || strings.Contains(body, `id="pending"`) {
		t.Fatalf("without the header: %d\n%s", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, b.base, nil)
	req.Header.Set("X-Operator", "ops")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with the header: %d", resp.StatusCode)
	}
	if got := strings.Join(order, ","); got != "outer,auth,outer,auth" {
		t.Errorf("middleware ran %s, want outer first each time", got)
	}
}
