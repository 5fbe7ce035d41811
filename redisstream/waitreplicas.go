package redisstream

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsync/outbox"
	"github.com/redis/go-redis/v9"
)

// waitConfig is the configuration of WithWaitReplicas; off unless on is set.
type waitConfig struct {
	on      bool // WithWaitReplicas was given
	n       int
	timeout time.Duration
}

// WithWaitReplicas makes Publish acknowledge a batch only once at least n
// replicas have its writes: after the batch's XADDs (or idempotent
// scripts) the same pipeline, and so the same connection, carries
// WAIT n timeout, and when fewer than n replicas confirmed the writes
// within timeout every event of the batch that Redis had otherwise
// acknowledged fails with an error marked outbox.Unavailable that says
// how many did. The relay retries those events: with WithIdempotence the
// retry adds nothing twice; without it the stream may hold an event twice,
// with the same ID, which at-least-once delivery allows.
//
// It closes the window that asynchronous replication leaves open: without
// it, a master that acknowledged a write and failed before its replica
// received it loses the write when Sentinel (or an operator) promotes the
// replica, although the outbox has marked the event synced. With it, an
// event is marked only once n replicas hold it, so a failover that
// promotes one of them keeps it. Redis does not make this a strong
// guarantee (a promoted replica that was not among the n can still lack
// the write; WAIT counts replicas, not which ones), and a batch that
// holds only duplicates (WithIdempotence) writes nothing, so its WAIT
// covers only the connection's earlier writes.
//
// It costs one wait for replication per batch: on a healthy link about
// one more round trip between master and replica, up to timeout when a
// replica lags or is gone (then the batch fails and the relay's breaker
// sees an outage). Keep timeout below the client's Options.ReadTimeout
// (a few seconds by default): go-redis reads the replies of a pipeline
// under it, so New refuses a *redis.Client whose ReadTimeout is not
// longer than timeout.
//
// n must be at least 1 and timeout at least a millisecond (WAIT takes
// milliseconds, and 0 would block forever); New refuses other values.
// It needs a client that sends a pipeline over one connection to one
// master, such as a *redis.Client or a Sentinel failover client: New
// refuses it with a *redis.ClusterClient or a *redis.Ring, whose
// pipelines spread over nodes and would send WAIT, which has no key, to
// any one of them. Defaults to off.
func WithWaitReplicas(n int, timeout time.Duration) Option {
	return func(c *config) { c.wait = waitConfig{on: true, n: n, timeout: timeout} }
}

// check checks the WithWaitReplicas settings against each other and
// against client.
func (w waitConfig) check(client redis.UniversalClient) error {
	if !w.on {
		return nil
	}
	switch c := client.(type) {
	case *redis.ClusterClient, *redis.Ring:
		return invalid("WithWaitReplicas: not supported with a %T, whose pipelines spread over nodes", client)
	case *redis.Client:
		if rt := c.Options().ReadTimeout; rt > 0 && w.timeout >= rt {
			return invalid("WithWaitReplicas: timeout %v is not shorter than the client's ReadTimeout (%v)", w.timeout, rt)
		}
	}
	return nil
}

// queueWait queues WAIT in pipe, after the batch's writes, when
// WithWaitReplicas is on; it returns nil when it is off.
func (p *Publisher) queueWait(ctx context.Context, pipe redis.Pipeliner) *redis.IntCmd {
	if !p.wait.on {
		return nil
	}
	cmd := redis.NewIntCmd(ctx, "wait", p.wait.n, p.wait.timeout.Milliseconds())
	_ = pipe.Process(ctx, cmd) // only queues the command
	return cmd
}

// checkReplicas fails every event of acked, those Redis acknowledged,
// unless the reply of wait says that enough replicas have the writes. A
// nil wait (WithWaitReplicas off) changes nothing.
func (p *Publisher) checkReplicas(wait *redis.IntCmd, acked []*outbox.Event, b *outbox.BatchErrors) {
	if wait == nil || len(acked) == 0 {
		return
	}
	got, err := wait.Result()
	switch {
	case err != nil:
		err = fmt.Errorf("redisstream: WAIT %d %v: %w", p.wait.n, p.wait.timeout, err)
	case got < int64(p.wait.n):
		err = fmt.Errorf("redisstream: WAIT: %d of %d replicas acknowledged the batch's writes within %v", got, p.wait.n, p.wait.timeout)
	default:
		return
	}
	err = outbox.Unavailable(err)
	for _, e := range acked {
		b.Fail(e, err)
	}
}
