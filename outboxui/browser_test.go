package outboxui

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// browser returns a tab of a headless Chromium of its own (a fresh
// profile), closed at cleanup. With OUTBOX_TEST_CHROMIUM unset it runs
// /usr/bin/chromium, and skips the test if there is none; a browser that
// is named but cannot be run fails it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv(envChromium)
	if path == "" {
		path = "/usr/bin/chromium"
		if _, err := os.Stat(path); err != nil {
			t.Skipf("browser tests skipped: no %s (install Debian's chromium, or set %s)", path, envChromium)
		}
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	ctx, cancelTab := chromedp.NewContext(alloc)
	ctx, cancelTime := context.WithTimeout(ctx, 45*time.Second)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// do runs browser steps and fails the test on error.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// run runs one browser step with a result and fails the test on error.
func run[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitText waits up to 10 s for the page (the next one, after a click)
// to hold text.
func waitText(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		if err == nil && strings.Contains(b, text) {
			return
		}
		body = b
	}
	t.Fatalf("the page does not say %q: %q", text, body)
}

// rows counts the rows of the events table on the page.
func rows(t *testing.T, ctx context.Context) int {
	t.Helper()
	return run(t, ctx, "count rows", chromedp.Evaluate[int](`document.querySelectorAll('#events tbody tr').length`))
}

// screenshot writes the page as a PNG named name: into docs/images when
// OUTBOX_UI_SCREENSHOTS is set (to refresh the README's images), else
// into the test's temporary directory. Either way it must decode.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	img := run(t, ctx, "screenshot", chromedp.FullScreenshot(100))
	if _, err := png.Decode(bytes.NewReader(img)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := t.TempDir()
	if os.Getenv(envShots) != "" {
		dir = filepath.Join("..", "docs", "images")
	}
	if err := os.WriteFile(filepath.Join(dir, name), img, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The overview shows what the table holds, a filter narrows the list, an
// event's page shows its payload and last error; screenshots of the
// overview and of an event's page.
func TestBrowserPages(t *testing.T) {
	b := setup(t, WithActions(true), WithLabel("orders-db · outbox_events"), WithBreaker(func() outbox.BreakerState {
		return outbox.BreakerState{Failures: 1}
	}))
	b.seed(t, "stock")
	ctx := browser(t)

	do(t, ctx, "overview", chromedp.Navigate(b.base), chromedp.WaitVisible(chromedp.ID("chart")))
	want := map[string]int64{
		"pending": b.count(t, "synced_at IS NULL AND dead_at IS NULL"),
		"dead":    b.count(t, "synced_at IS NULL AND dead_at IS NOT NULL"),
		"synced":  b.count(t, "synced_at >= date_trunc('minute', now()) - interval '59 minutes'"),
	}
	for id, n := range want {
		if got := run(t, ctx, id, chromedp.Text(chromedp.ID(id))); got != showNumber(n) {
			t.Errorf("overview #%s shows %q, the table holds %d", id, got, n)
		}
	}
	// The oldest pending age and the latency percentiles, against the
	// table's own (the age within the seconds the test takes, the
	// percentiles within their rounding on the page).
	var oldest, p50, p99 float64
	if err := b.db.QueryRow(fmt.Sprintf(`SELECT EXTRACT(EPOCH FROM now() - MIN(created_at)) FROM %q WHERE synced_at IS NULL AND dead_at IS NULL`, b.table)).Scan(&oldest); err != nil {
		t.Fatal(err)
	}
	if err := b.db.QueryRow(fmt.Sprintf(`SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM synced_at - created_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM synced_at - created_at)) FROM %q WHERE synced_at IS NOT NULL`, b.table)).Scan(&p50, &p99); err != nil {
		t.Fatal(err)
	}
	near := func(what, shown string, want float64, tolerance time.Duration) {
		t.Helper()
		d, err := time.ParseDuration(strings.TrimSpace(shown))
		if err != nil || (d-time.Duration(want*float64(time.Second))).Abs() > tolerance {
			t.Errorf("overview %s shows %q, the table holds %.6fs", what, shown, want)
		}
	}
	near("oldest pending", run(t, ctx, "oldest", chromedp.Text(chromedp.ID("oldest"))), oldest, 3*time.Second)
	p50Shown, p99Shown, _ := strings.Cut(run(t, ctx, "latency", chromedp.Text(chromedp.ID("latency"))), "/")
	near("p50", p50Shown, p50, time.Millisecond)
	near("p99", p99Shown, p99, time.Millisecond)
	if got := run(t, ctx, "breaker", chromedp.Text(chromedp.ID("breaker"))); got != "closed" {
		t.Errorf("breaker shows %q", got)
	}
	bars := run(t, ctx, "bars", chromedp.Evaluate[int](`document.querySelectorAll('#chart rect.bar').length`))
	drawn := run(t, ctx, "drawn", chromedp.Evaluate[int](`[...document.querySelectorAll('#chart rect.bar')].filter(r => +r.getAttribute('height') > 0).length`))
	if bars != 60 || drawn < 30 {
		t.Errorf("chart: %d bars, %d drawn; want 60, most of them drawn", bars, drawn)
	}
	screenshot(t, ctx, "console-overview.png")

	// A filter narrows the dead list to one type.
	do(t, ctx, "dead list", chromedp.Navigate(b.base+"events?state=dead"), chromedp.WaitVisible(chromedp.ID("events")))
	if n := rows(t, ctx); int64(n) != want["dead"] {
		t.Fatalf("dead list has %d rows, want %d", n, want["dead"])
	}
	do(t, ctx, "filter", chromedp.SetValue(chromedp.CSS(`input[name=type]`), "payment.captured"), chromedp.Click(chromedp.ID("apply")),
		chromedp.WaitVisible(chromedp.ID("clear")))
	n := rows(t, ctx)
	if want := b.count(t, "dead_at IS NOT NULL AND event_type = 'payment.captured'"); int64(n) != want || n == 0 {
		t.Fatalf("filtered dead list has %d rows, want %d", n, want)
	}
	types := run(t, ctx, "types", chromedp.Evaluate[[]string](`[...document.querySelectorAll('#events tbody tr td:nth-child(3)')].map(td => td.textContent)`))
	if slices.ContainsFunc(types, func(s string) bool { return s != "payment.captured" }) {
		t.Fatalf("filtered list shows types %v", types)
	}

	// An event's page, reached by its link.
	id := run(t, ctx, "first id", chromedp.Text(chromedp.CSS(`#events a.id`)))
	do(t, ctx, "open event", chromedp.Click(chromedp.CSS(`#events a.id`)), chromedp.WaitVisible(chromedp.ID("payload")))
	if got := run(t, ctx, "event id", chromedp.Text(chromedp.ID("event-id"))); got != id {
		t.Fatalf("event page of %q shows %q", id, got)
	}
	payload := run(t, ctx, "payload", chromedp.Text(chromedp.ID("payload")))
	lastErr := run(t, ctx, "last error", chromedp.Text(chromedp.ID("last-error")))
	var dbPayload, dbErr string
	if err := b.db.QueryRow(fmt.Sprintf(`SELECT convert_from(payload, 'UTF8'), last_error FROM %q WHERE id = $1`, b.table), id).Scan(&dbPayload, &dbErr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(payload, `"warehouse": "ams-1"`) || strings.Join(strings.Fields(payload), "") != strings.ReplaceAll(dbPayload, " ", "") {
		t.Errorf("payload shows %q, the table holds %q", payload, dbPayload)
	}
	if lastErr != dbErr {
		t.Errorf("last error shows %q, the table holds %q", lastErr, dbErr)
	}
	screenshot(t, ctx, "console-event.png")
}

// Re-queueing a dead event from its page, and a filtered dead view after
// its dry run, gets the events delivered to Redis by a running relay.
func TestBrowserRequeueDelivers(t *testing.T) {
	rdb := redisClient(t)
	b := setup(t, WithActions(true))
	topic := randomName("outboxui-test-") + ":stock"
	t.Cleanup(func() { rdb.Del(context.Background(), topic) })
	dead := b.seed(t, topic)

	// The relay: its own Store on the table, publishing to Redis.
	relayStore, err := sqlstore.New(b.db, sqlstore.WithTable(b.table))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := redisstream.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	o, err := outbox.New(relayStore, pub, outbox.WithInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	relayCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := o.Run(relayCtx); err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })

	delivered := func(ids ...string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			msgs, err := rdb.XRange(context.Background(), topic, "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, m := range msgs {
				got[fmt.Sprint(m.Values["id"])] = true
			}
			missing := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return got[id] })
			if len(missing) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not delivered to Redis: %v (the stream holds %d entries)", missing, len(msgs))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ctx := browser(t)
	delivered("pen-0000", "pen-0036") // the relay runs
	if n := b.count(t, "dead_at IS NOT NULL"); n != 6 {
		t.Fatalf("%d dead before the requeue, want 6", n)
	}

	do(t, ctx, "event page", chromedp.Navigate(b.base+"event?id="+dead[0]), chromedp.Click(chromedp.ID("requeue")),
		chromedp.WaitVisible(chromedp.ID("notice")))
	if got := run(t, ctx, "notice", chromedp.Text(chromedp.ID("notice"))); !strings.Contains(got, "Re-queued 1 event") {
		t.Fatalf("notice %q", got)
	}
	delivered(dead[0])

	do(t, ctx, "dead view", chromedp.Navigate(b.base+"events?state=dead&type=payment.captured"),
		chromedp.Click(chromedp.ID("requeue-view")), chromedp.WaitVisible(chromedp.ID("dry-run-count")))
	if got := run(t, ctx, "dry run", chromedp.Text(chromedp.ID("dry-run-count"))); got != "3" {
		t.Fatalf("dry run counts %q, want 3", got)
	}
	if n := b.count(t, "dead_at IS NOT NULL"); n != 5 {
		t.Fatalf("the dry run changed something: %d dead, want 5", n)
	}
	do(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-requeue")), chromedp.WaitVisible(chromedp.ID("notice")))
	if got := run(t, ctx, "notice", chromedp.Text(chromedp.ID("notice"))); !strings.Contains(got, "Re-queued 3 event") {
		t.Fatalf("notice %q", got)
	}
	delivered(dead[1], dead[3], dead[5])
	if n := b.count(t, "dead_at IS NOT NULL"); n != 2 {
		t.Fatalf("%d dead after the requeues, want 2 (reservation.created ones left)", n)
	}
}

// With actions off the pages offer none, and a POST made by the page is
// refused; with actions on, a form stripped of its CSRF token is refused.
func TestBrowserRefusals(t *testing.T) {
	off := setup(t)
	dead := off.seed(t, "refusals")
	on := setup(t, WithActions(true))
	on.seed(t, "refusals")
	ctx := browser(t)

	do(t, ctx, "read-only event", chromedp.Navigate(off.base+"event?id="+dead[0]), chromedp.WaitVisible(chromedp.ID("payload")))
	forms := run(t, ctx, "forms", chromedp.Evaluate[int](`document.querySelectorAll('form[method=post], #requeue, a[href^=purge], a[href^=requeue]').length`))
	if forms != 0 {
		t.Fatalf("the read-only event page offers %d actions", forms)
	}
	do(t, ctx, "read-only dead list", chromedp.Navigate(off.base+"events?state=dead"), chromedp.WaitVisible(chromedp.ID("events")))
	if n := run(t, ctx, "view action", chromedp.Evaluate[int](`document.querySelectorAll('#requeue-view, form[method=post]').length`)); n != 0 {
		t.Fatalf("the read-only dead list offers %d actions", n)
	}
	// A form the page did not offer, posted from it.
	post := fmt.Sprintf(`(() => { const f = document.createElement('form'); f.method = 'post'; f.action = 'requeue';
		const i = document.createElement('input'); i.name = 'id'; i.value = %q; f.appendChild(i);
		document.body.appendChild(f); f.submit(); return true })()`, dead[0])
	run(t, ctx, "forged post", chromedp.Evaluate[bool](post))
	waitText(t, ctx, "403 forbidden: actions are disabled")

	do(t, ctx, "event", chromedp.Navigate(on.base+"event?id="+dead[0]), chromedp.WaitVisible(chromedp.ID("requeue")))
	run(t, ctx, "strip token", chromedp.Evaluate[bool](`(() => { document.querySelector('input[name=csrf]').remove(); return true })()`))
	do(t, ctx, "post", chromedp.Click(chromedp.ID("requeue")))
	waitText(t, ctx, "403 forbidden: missing or invalid CSRF token")
	for _, b := range []*bundle{off, on} {
		if n := b.count(t, "dead_at IS NOT NULL"); n != 6 {
			t.Fatalf("%d dead after refused POSTs, want 6", n)
		}
	}
}
