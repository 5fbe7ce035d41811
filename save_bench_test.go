package outbox

import (
	"context"
	"database/sql"
	"testing"

	"github.com/eventsync/outbox/storage"
)

// benchNopStore accepts every insert and claims nothing: what is left is
// Save's own work (validation, IDs, times).
type benchNopStore struct{}

func (benchNopStore) Insert(context.Context, Executor, []*Event) error { return nil }
func (benchNopStore) Claim(context.Context, storage.ClaimRequest) (*Claim, error) {
	return &Claim{}, nil
}
func (benchNopStore) MarkSynced(context.Context, string, []string) (int, error)    { return 0, nil }
func (benchNopStore) Fail(context.Context, string, []storage.Failure) (int, error) { return 0, nil }
func (benchNopStore) Release(context.Context, string, []string) (int, error)       { return 0, nil }

type benchNopExec struct{}

func (benchNopExec) ExecContext(context.Context, string, ...any) (sql.Result, error) { return nil, nil }

// BenchmarkSave measures Save's work in front of the store for one event
// and for a batch of 100.
func BenchmarkSave(b *testing.B) {
	ob, err := New(benchNopStore{}, Noop{})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 256)
	for _, n := range []int{1, 100} {
		b.Run(map[int]string{1: "events=1", 100: "events=100"}[n], func(b *testing.B) {
			events := make([]*Event, n)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				for i := range events {
					events[i] = &Event{Topic: "inventory", Type: "stock.updated", AggregateID: "sku-42", Payload: payload,
						Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
				}
				if err := ob.Save(ctx, benchNopExec{}, events...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewID measures the UUIDv7 generator every saved event uses.
func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = NewID()
	}
}
