package outboxpgx

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/outbox"
)

// insertSQL is a multi-row INSERT of rows rows of cols parameters, the
// shape of sqlstore's.
func insertSQL(table string, cols []string, rows int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, strings.Join(cols, ", "))
	n := 0
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			n++
			fmt.Fprintf(&b, "$%d", n)
		}
		b.WriteString(")")
	}
	return b.String()
}

func TestPlainInsert(t *testing.T) {
	t.Parallel()
	cols := []string{"id", "topic", "created_at"}
	rows := CopyMinRows
	good := insertSQL(`"app"."out""box"`, cols, rows)
	table, got, ok := plainInsert(good, rows*len(cols))
	if !ok || !slices.Equal(table, pgx.Identifier{"app", `out"box`}) || !slices.Equal(got, cols) {
		t.Fatalf("plainInsert(%.60q...) = %q, %q, %v", good, table, got, ok)
	}
	if _, _, ok := plainInsert(insertSQL(`"t"`, cols, rows), rows*len(cols)); !ok {
		t.Error("an unqualified table is not taken")
	}
	for name, c := range map[string]struct {
		q     string
		nargs int
	}{
		"too few rows":         {insertSQL(`"t"`, cols, rows-1), (rows - 1) * len(cols)},
		"args do not match":    {good, rows*len(cols) - 1},
		"unquoted table":       {insertSQL(`t`, cols, rows), rows * len(cols)},
		"three-part name":      {insertSQL(`"a"."b"."c"`, cols, rows), rows * len(cols)},
		"expression column":    {insertSQL(`"t"`, []string{"id", "lower(topic)"}, rows), rows * 2},
		"a cast in the values": {strings.Replace(good, "$2", "$2::text", 1), rows * len(cols)},
		"parameters reordered": {strings.Replace(strings.Replace(good, "($1, $2,", "($2, $1,", 1), "", "", 0), rows * len(cols)},
		"a returning clause":   {good + " RETURNING seq", rows * len(cols)},
		"on conflict":          {good + " ON CONFLICT DO NOTHING", rows * len(cols)},
		"not an insert":        {"UPDATE t SET a = $1", 1},
	} {
		if _, _, ok := plainInsert(c.q, c.nargs); ok {
			t.Errorf("%s: taken for COPY", name)
		}
	}
}

// copyCounter is a pgx tracer that counts COPYs and other statements.
type copyCounter struct {
	mu           sync.Mutex
	copies, sqls int
}

func (c *copyCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.HasPrefix(d.SQL, "INSERT") {
		c.sqls++
	}
	return ctx
}
func (c *copyCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *copyCounter) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.copies++
	return ctx
}
func (c *copyCounter) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

func (c *copyCounter) counts() (copies, inserts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.copies, c.sqls
}

// A Save of CopyMinRows events or more through a pgx.Tx is one COPY, and
// every field comes back as an INSERT writes it (priority, NULL and set
// headers, empty payload, times); a smaller one is one INSERT. The relay's
// notification fires for a COPY too.
func TestLargeSaveCopies(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			tracer := &copyCounter{}
			pool := newPool(t, mode, 2, func(c *pgxpool.Config) { c.ConnConfig.Tracer = tracer })
			s := newStore(t, pool)
			ctx := t.Context()
			ob, err := outbox.New(s, outbox.Noop{})
			if err != nil {
				t.Fatal(err)
			}
			lctx, stop := context.WithCancel(ctx)
			woken := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() {
				done <- s.Listen(lctx, func() {
					select {
					case woken <- struct{}{}:
					default:
					}
				})
			}()
			defer func() { stop(); <-done }()

			created := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600))
			big := events(CopyMinRows+5, "agg")
			for i, e := range big {
				e.Priority = i % 3
				e.CreatedAt = created
				if i%2 == 0 {
					e.Headers = map[string]string{"n": fmt.Sprint(i), "ключ": `"q"`}
				}
			}
			big[1].Payload = nil
			// Wait for the listener, so the COPY's notification is seen.
			waitFor(t, 5*time.Second, "Listen to LISTEN", func() bool {
				var n int
				_ = pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
					"LISTEN "+pgx.Identifier{s.Channel()}.Sanitize()).Scan(&n)
				return n > 0
			})
			copies0, inserts0 := tracer.counts() // the migrations' INSERTs
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := ob.Save(ctx, Exec(tx), big...); err != nil {
				t.Fatalf("Save of %d events: %v", len(big), err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if copies, inserts := tracer.counts(); copies-copies0 != 1 || inserts != inserts0 {
				t.Fatalf("Save of %d events sent %d COPY and %d INSERT, want 1 COPY", len(big), copies, inserts)
			}
			select {
			case <-woken:
			case <-time.After(5 * time.Second):
				t.Fatal("no notification for the committed COPY")
			}
			for i, want := range big {
				got, err := s.Get(ctx, want.ID)
				if err != nil {
					t.Fatalf("Get %d: %v", i, err)
				}
				if got.Priority != want.Priority || string(got.Payload) != string(want.Payload) || len(got.Headers) != len(want.Headers) ||
					got.Headers["ключ"] != want.Headers["ключ"] || !got.CreatedAt.Equal(created.Truncate(time.Microsecond)) ||
					got.Topic != want.Topic || got.Type != want.Type || got.AggregateID != want.AggregateID {
					t.Fatalf("event %d came back as %+v, want %+v", i, got, want)
				}
			}
			if err := ob.Save(ctx, Exec(pool), events(CopyMinRows-1, "small")...); err != nil {
				t.Fatal(err)
			}
			if copies, inserts := tracer.counts(); copies-copies0 != 1 || inserts-inserts0 != 1 {
				t.Fatalf("a Save of %d events: %d COPY and %d INSERT in all, want one INSERT more", CopyMinRows-1, copies, inserts)
			}
		})
	}
}
