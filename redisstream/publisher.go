package redisstream

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/eventsync/outbox"
	"github.com/redis/go-redis/v9"
)

// Publisher is an outbox.Publisher that adds each event to a Redis stream
// with XADD. It is safe for concurrent use and holds no resources of its
// own: it never closes the client it was given.
type Publisher struct {
	client    redis.UniversalClient
	stream    func(*outbox.Event) string
	maxLen    int64
	maxLenArg any         // maxLen boxed once, not once per event
	codec     Codec       // payload compression, "" for none
	threshold int         // compress payloads longer than this
	dedup     dedupConfig // idempotent publication, if dedup.window > 0
	wait      waitConfig  // WAIT for replicas after each batch, if wait.on
}

var _ outbox.Publisher = (*Publisher)(nil)

// New returns a Publisher that writes through client: a *redis.Client, a
// *redis.ClusterClient, a Sentinel failover client or anything else that
// implements redis.UniversalClient. The caller keeps ownership of client
// and closes it when done. See the With* options for the settings and
// their defaults; an invalid option is an error wrapping
// outbox.ErrInvalidConfig.
func New(client redis.UniversalClient, opts ...Option) (*Publisher, error) {
	if client == nil || isNilPointer(client) {
		return nil, fmt.Errorf("redisstream: %w: the Redis client is nil", outbox.ErrInvalidConfig)
	}
	cfg, err := newConfig(opts)
	if err == nil {
		err = cfg.wait.check(client)
	}
	if err != nil {
		return nil, err
	}
	p := &Publisher{client: client, stream: cfg.stream, maxLen: cfg.maxLen, codec: cfg.codec, threshold: cfg.threshold, dedup: cfg.dedup, wait: cfg.wait}
	if p.maxLen > 0 {
		p.maxLenArg = p.maxLen
	}
	return p, nil
}

// Publish adds every event to its stream, one XADD per event with an
// auto-generated entry ID, all in one pipelined round trip and in slice
// order, so events that share a stream keep their relative order.
//
// It returns nil when Redis acknowledged every XADD. When only some failed
// (a key holding another type answers WRONGTYPE), it returns an
// *outbox.PublishError naming exactly those events. When the round trip
// itself fails (connection refused or reset, ctx cancelled or past its
// deadline) the outcome is unknown and it returns an error that is not a
// PublishError: no event of the batch counts as acknowledged, although
// Redis may have added some of them. An event the stream function maps to
// "" fails with an error marked outbox.Permanent; no Redis reply is marked
// permanent (see the package documentation). Errors are prefixed
// "redisstream: " and wrap the go-redis error. With WithWaitReplicas the
// pipeline ends with WAIT, and events Redis acknowledged fail, marked
// outbox.Unavailable, unless enough replicas confirmed the writes.
//
// A nil or empty batch is a no-op. A nil event in the batch is an error
// and nothing is sent.
func (p *Publisher) Publish(ctx context.Context, events []*outbox.Event) error {
	if len(events) == 0 {
		return nil
	}
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("redisstream: publish: event %d of %d is nil; nothing was sent", i, len(events))
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstream: publish %d events: nothing was sent: %w", len(events), err)
	}
	if p.dedup.window > 0 {
		return p.publishIdempotent(ctx, events)
	}

	var b outbox.BatchErrors
	keys, args := p.plan(events, &b)
	pipe := p.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(events))
	for i := range events {
		if args[i] != nil {
			cmds[i] = redis.NewStringCmd(ctx, args[i]...)
			_ = pipe.Process(ctx, cmds[i]) // only queues the command
		}
	}
	if pipe.Len() == 0 {
		return b.Err()
	}
	wait := p.queueWait(ctx, pipe)
	_, execErr := pipe.Exec(ctx)

	var acked []*outbox.Event
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		// Only a reply carrying an entry ID acknowledges an event.
		switch err := cmd.Err(); {
		case err != nil:
			b.Fail(events[i], replyError(fmt.Errorf("redisstream: XADD %s: %w", keys[i], err)))
		case cmd.Val() == "":
			b.Fail(events[i], fmt.Errorf("redisstream: XADD %s: no entry ID in the reply", keys[i]))
		default:
			acked = append(acked, events[i])
		}
	}
	if len(acked) == 0 && execErr != nil && !isReply(execErr) {
		// The round trip failed as a whole: the outcome of every XADD is
		// unknown, so the batch fails as a whole.
		return fmt.Errorf("redisstream: publish %d events: outcome unknown, none acknowledged: %w", len(events), execErr)
	}
	p.checkReplicas(wait, acked, &b)
	return b.Err()
}

// plan maps each event to its stream key and XADD arguments. An event that
// cannot be sent (no stream, a payload the codec refused) fails in b and
// holds back the later events of its aggregate, which fail with
// outbox.ErrHeldBack; its arguments are nil.
func (p *Publisher) plan(events []*outbox.Event, b *outbox.BatchErrors) (keys []string, args [][]any) {
	keys = make([]string, len(events))
	args = make([][]any, len(events))
	for i, e := range events {
		if b.HeldBack(e) {
			continue
		}
		key := p.stream(e)
		if key == "" {
			b.Fail(e, outbox.Permanent(fmt.Errorf("redisstream: event %q (type %q) maps to an empty stream key", e.ID, e.Type)))
			continue
		}
		a, err := p.xaddArgs(key, e)
		if err != nil {
			b.Fail(e, err)
			continue
		}
		keys[i], args[i] = key, a
	}
	return keys, args
}

// serverStateReplies are error replies about the state of the server, not
// about the command: every event would get them, so none is the event's
// fault (out of memory, a replica or a node that cannot serve writes,
// loading, refused persistence, missing authentication).
var serverStateReplies = []string{"OOM", "READONLY", "LOADING", "MASTERDOWN", "MISCONF", "BUSY", "CLUSTERDOWN", "TRYAGAIN", "NOAUTH", "NOPERM"}

// replyError marks err outbox.Unavailable when the event is not at fault:
// a dropped connection (no reply at all) or a reply about the server's
// state. A reply about the command itself (WRONGTYPE, say) stays the
// event's own failure.
func replyError(err error) error {
	if !isReply(err) {
		return outbox.Unavailable(err)
	}
	for _, prefix := range serverStateReplies {
		if redis.HasErrorPrefix(err, prefix) {
			return outbox.Unavailable(err)
		}
	}
	return err
}

// xaddArgs returns the arguments of the XADD that adds e to the stream key:
// XADD key [MAXLEN ~ n] * field value ... It fails only if compressing
// the payload fails.
func (p *Publisher) xaddArgs(key string, e *outbox.Event) ([]any, error) {
	payload, encoding := e.Payload, ""
	if p.codec != "" && len(payload) > p.threshold {
		c, err := compress(p.codec, payload)
		if err != nil {
			return nil, err
		}
		if c != nil {
			payload, encoding = c, string(p.codec)
		}
	}
	n := 5 + fixedFields + 2*len(e.Headers)
	if p.maxLenArg != nil {
		n += 3
	}
	args := make([]any, 0, n)
	args = append(args, "xadd", key)
	if p.maxLenArg != nil {
		args = append(args, "maxlen", "~", p.maxLenArg)
	}
	args = append(args, "*")
	return appendEntry(args, e, payload, encoding), nil
}

// isReply reports whether err is an error reply from Redis, as opposed to a
// failure to reach Redis or to read its answer.
func isReply(err error) bool {
	var r redis.Error
	return errors.As(err, &r)
}

func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// Ping checks that Redis answers. The relay's circuit breaker probes a
// broker that was down with it (outbox.Pinger).
func (p *Publisher) Ping(ctx context.Context) error {
	if err := p.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisstream: ping: %w", err)
	}
	return nil
}

var _ outbox.Pinger = (*Publisher)(nil)
