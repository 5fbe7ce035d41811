package kafkaconsumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
)

// Events published by the kafka package are read back in order per
// aggregate; a failing handler is retried in place.
func TestConsumeDecodesAndRetries(t *testing.T) {
	t.Parallel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "inventory"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	pub, err := kafka.New(brokers, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var evs []*outbox.Event
	for i := range 10 {
		evs = append(evs, &outbox.Event{ID: outbox.NewID(), Topic: "inventory", Type: "t", AggregateID: fmt.Sprint("a", i%2),
			Payload: []byte(fmt.Sprint(i)), CreatedAt: time.Now().UTC()})
	}
	if err := pub.Publish(context.Background(), evs); err != nil {
		t.Fatal(err)
	}

	cfg := sarama.NewConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	group, err := sarama.NewConsumerGroup(brokers, "billing", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer group.Close()
	cons, err := New(group, []string{"inventory"}, WithRetry(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string][]string{} // aggregate -> IDs in order
	failed := false
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cons.Run(ctx, func(ctx context.Context, e *outbox.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if e.ID == evs[3].ID && !failed {
				failed = true
				return errors.New("try again")
			}
			seen[e.AggregateID] = append(seen[e.AggregateID], e.ID)
			return nil
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(seen["a0"]) + len(seen["a1"])
		mu.Unlock()
		if n >= len(evs) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, agg := range []string{"a0", "a1"} {
		var want []string
		for _, e := range evs {
			if e.AggregateID == agg {
				want = append(want, e.ID)
			}
		}
		if !slices.Equal(seen[agg], want) {
			t.Errorf("aggregate %s handled %v, want in order %v", agg, seen[agg], want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := New(nil, []string{"t"}); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Error(err)
	}
}
