// Package relisten keeps a notification listener connected: it runs one
// listening session after another, with backoff between them, until its
// context ends. sqlstore's and outboxpgx's Postgres listeners share it.
package relisten

import (
	"context"
	"time"
)

// Reconnect delays after a lost connection: the first, doubled up to the
// cap.
const (
	RetryMin = 100 * time.Millisecond
	RetryMax = 5 * time.Second
)

// Run calls session until ctx ends, then returns nil. The first call has
// catchUp false; every later one true, since notifications sent while no
// session listened are lost and the session should wake its caller once
// it listens again. A session reports whether it was listening before it
// ended (the backoff then starts afresh) and an error that makes Run stop
// at once and return it (nil to go on).
func Run(ctx context.Context, session func(catchUp bool) (listened bool, fatal error)) error {
	delay := RetryMin
	for catchUp := false; ; catchUp = true {
		listened, fatal := session(catchUp)
		if ctx.Err() != nil {
			return nil
		}
		if fatal != nil {
			return fatal
		}
		if listened {
			delay = RetryMin
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, RetryMax)
	}
}
