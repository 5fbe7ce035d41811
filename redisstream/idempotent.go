package redisstream

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/outbox"
	"github.com/redis/go-redis/v9"
)

// Defaults and limits of idempotent publication (WithIdempotence).
const (
	// DefaultDedupWindow is how long the dedup key of a published event
	// lives when WithIdempotence is given a zero window.
	DefaultDedupWindow = 24 * time.Hour
	// MinDedupWindow is the shortest window WithIdempotence accepts.
	MinDedupWindow = time.Second
	// DefaultDedupKeyPrefix starts every dedup key unless
	// WithDedupKeyPrefix says otherwise.
	DefaultDedupKeyPrefix = "outbox:dedup:"
)

// dedupConfig is the configuration of idempotent publication; a zero
// window means it is off (newConfig gives it a window when on).
type dedupConfig struct {
	on     bool // WithIdempotence was given
	window time.Duration
	prefix string
}

// WithIdempotence makes Publish idempotent per event ID within window: a
// server-side script adds the entry and records the event ID under a
// dedup key that expires after window, in one atomic step, and adds
// nothing when the key exists already. A relay that publishes an event
// again (after a crash between Redis's reply and the mark, or after a
// reply that was lost) then adds no second entry, and the event counts as
// acknowledged. A zero window means DefaultDedupWindow; a window shorter
// than MinDedupWindow is refused by New. Defaults to off.
//
// The dedup key of an event is DedupKey(prefix, stream, id); it lives in
// the same Redis Cluster hash slot as the stream (see DedupKey), so the
// script works per slot on Cluster. It costs one key per event, of about
// 100 bytes, for the window.
func WithIdempotence(window time.Duration) Option {
	return func(c *config) { c.dedup.on, c.dedup.window = true, window }
}

// WithDedupKeyPrefix sets the prefix of the dedup keys of WithIdempotence.
// It must not be empty nor hold '{' or '}', which would change the hash
// slot of the keys; New refuses such a prefix. Defaults to
// DefaultDedupKeyPrefix.
func WithDedupKeyPrefix(prefix string) Option {
	return func(c *config) { c.dedup.prefix = prefix }
}

// DedupKey returns the key that records that event id was added to stream,
// with prefix (DefaultDedupKeyPrefix unless WithDedupKeyPrefix). Redis
// Cluster hashes a key by its hash tag, the text between the first '{'
// and the next '}' if not empty, and otherwise by the whole key; the
// dedup key is built so its slot is the stream's:
//
//   - a stream key with a hash tag ("orders{eu}") keeps it: the dedup key
//     is prefix + stream + ":" + id ("outbox:dedup:orders{eu}:<id>"), as the
//     prefix holds no brace;
//   - any other stream key becomes the tag: prefix + "{" + stream + "}:" +
//     id ("outbox:dedup:{orders}:<id>").
//
// A stream key without a hash tag that holds a '}' cannot be a tag; its
// dedup key is prefix + stream + ":" + id, in another slot, so on Cluster
// the script is refused (CROSSSLOT) and the events fail until the stream
// is renamed. On a single node every key works.
func DedupKey(prefix, stream, id string) string {
	if prefix == "" {
		prefix = DefaultDedupKeyPrefix
	}
	if hasHashTag(stream) || strings.Contains(stream, "}") {
		return prefix + stream + ":" + id
	}
	return prefix + "{" + stream + "}:" + id
}

// hasHashTag reports whether Redis Cluster hashes key by a tag.
func hasHashTag(key string) bool {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return false
	}
	end := strings.IndexByte(key[open+1:], '}')
	return end > 0
}

// dedupScript adds an entry unless the event's dedup key exists, and then
// sets the key, in one atomic step. KEYS[1] is the stream, KEYS[2] the
// dedup key; ARGV[1] is the window in milliseconds and ARGV[2..] the XADD
// arguments after the key. It answers {entry ID, 0} for an entry it added
// and {entry ID, 1} for a duplicate, with the ID of the first entry. The
// key is set only after XADD succeeded: an XADD that fails (WRONGTYPE,
// OOM) stops the script with nothing recorded, so a retry adds the entry.
var dedupScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[2])
if prev then
  return {prev, 1}
end
local id = redis.call('XADD', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 0}
`)

// publishIdempotent is Publish with WithIdempotence: one EVAL of
// dedupScript per event, pipelined in one round trip. Replies map to
// events as in Publish; a duplicate counts as acknowledged.
//
// EVAL, not EVALSHA: it carries the script's text (a few hundred bytes),
// so it never fails with NOSCRIPT after a restart or a flushed script
// cache. Falling back from EVALSHA could reorder a stream: in a pipeline
// another client's EVAL can load the script between two of our commands,
// so that an aggregate's first events fail with NOSCRIPT, a later one is
// appended, and the first ones follow it when sent again. MULTI/EXEC
// would rule that out on one node, but go-redis refuses transactions
// across hash slots on a cluster. The server caches the compiled script
// by its digest, so an EVAL costs a hash of the text more than EVALSHA.
func (p *Publisher) publishIdempotent(ctx context.Context, events []*outbox.Event) error {
	var b outbox.BatchErrors
	window := strconv.FormatInt(p.dedup.window.Milliseconds(), 10)
	type call struct {
		keys []string
		args []any
		cmd  *redis.Cmd
	}
	calls := make([]*call, len(events))
	pipe := p.client.Pipeline()
	keys, xadds := p.plan(events, &b)
	for i := range events {
		if xadds[i] == nil {
			continue
		}
		c := &call{keys: []string{keys[i], DedupKey(p.dedup.prefix, keys[i], events[i].ID)}}
		c.args = append(make([]any, 0, len(xadds[i])-1), window)
		c.args = append(c.args, xadds[i][2:]...) // after "xadd", key
		c.cmd = dedupScript.Eval(ctx, pipe, c.keys, c.args...)
		calls[i] = c
	}
	if pipe.Len() == 0 {
		return b.Err()
	}
	wait := p.queueWait(ctx, pipe)
	_, execErr := pipe.Exec(ctx)

	var acked []*outbox.Event
	for i, c := range calls {
		if c == nil {
			continue
		}
		if err := scriptReply(c.cmd); err != nil {
			b.Fail(events[i], replyError(fmt.Errorf("redisstream: XADD %s (idempotent): %w", c.keys[0], err)))
			continue
		}
		acked = append(acked, events[i])
	}
	if len(acked) == 0 && execErr != nil && !isReply(execErr) {
		return fmt.Errorf("redisstream: publish %d events: outcome unknown, none acknowledged: %w", len(events), execErr)
	}
	p.checkReplicas(wait, acked, &b)
	return b.Err()
}

// scriptReply checks dedupScript's answer. Only an answer carrying an
// entry ID, of the entry just added or of the first one (a duplicate),
// acknowledges the event.
func scriptReply(cmd *redis.Cmd) error {
	if err := cmd.Err(); err != nil {
		return err
	}
	v, ok := cmd.Val().([]any)
	if !ok || len(v) != 2 {
		return fmt.Errorf("unexpected script reply %v", cmd.Val())
	}
	if entry, _ := v[0].(string); entry == "" {
		return fmt.Errorf("no entry ID in the script reply %v", v)
	}
	return nil
}
