package outbox

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors. Test for them with errors.Is.
var (
	// ErrInvalidEvent is wrapped by every validation failure of Save; the
	// concrete error is a *ValidationError naming the event and the field.
	ErrInvalidEvent = errors.New("outbox: invalid event")

	// ErrNilExecutor is returned by Save when it is given no transaction.
	ErrNilExecutor = errors.New("outbox: nil executor (pass the caller's *sql.Tx or *sqlx.Tx)")

	// ErrInvalidConfig is wrapped by every option that fails validation in
	// New, and by the adapters' constructors for theirs. Its text has no
	// package prefix: the message that wraps it starts with the package
	// ("outbox: invalid configuration: ...", "kafka: invalid configuration: ...").
	ErrInvalidConfig = errors.New("invalid configuration")

	// ErrRunning is returned by Run when the same Outbox is already running
	// its relay.
	ErrRunning = errors.New("outbox: relay already running")

	// ErrBreakerOpen is returned by Publish while the circuit breaker is
	// open: the broker is known to be down, so the events are left, due at
	// once and with no attempt counted, for the relay to deliver when the
	// broker is back.
	ErrBreakerOpen = errors.New("outbox: broker unavailable (circuit breaker open)")

	// ErrHeldBack is what a Publisher reports for an event it did not send
	// because an earlier event of the same aggregate in the batch failed.
	// The relay gives such events back without counting an attempt.
	ErrHeldBack = errors.New("outbox: held back behind a failed event of its aggregate")
)

// ValidationError says which event of a Save call is invalid and why.
// It unwraps to ErrInvalidEvent.
type ValidationError struct {
	Index  int    // position of the event in the Save call
	ID     string // the event's ID, if it had one
	Field  string // "Topic", "Type", "Payload", ...
	Reason string // human-readable reason
}

// Error names the event by its position (and ID) and says what is wrong.
func (e *ValidationError) Error() string {
	id := ""
	if e.ID != "" {
		id = fmt.Sprintf(" (id %q)", e.ID)
	}
	return fmt.Sprintf("outbox: invalid event %d%s: %s %s", e.Index, id, e.Field, e.Reason)
}

// Unwrap returns ErrInvalidEvent.
func (e *ValidationError) Unwrap() error { return ErrInvalidEvent }

// PublishError reports a batch that was only partly acknowledged. Events
// whose IDs are keys of Failed were not acknowledged; every other event of
// the batch was. A Publisher returns it for partial failure; any other
// non-nil error from Publish means no event of the batch counts as
// acknowledged.
type PublishError struct {
	Failed map[string]error // event ID -> why it failed
}

// Error counts the events not acknowledged and names the first three,
// in ID order, with their errors.
func (e *PublishError) Error() string {
	ids := make([]string, 0, len(e.Failed))
	for id := range e.Failed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	fmt.Fprintf(&b, "outbox: %d event(s) not acknowledged", len(ids))
	for i, id := range ids {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(ids)-3)
			break
		}
		fmt.Fprintf(&b, "; %s: %v", id, e.Failed[id])
	}
	return b.String()
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying can never fix (a message too
// large for the broker, an unknown topic, a refused authorization). The
// relay buries an event that failed with a permanent error at once instead
// of retrying it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or any error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// unavailableError marks a failure caused by the broker or the
// connection, not by the event.
type unavailableError struct{ err error }

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

// Unavailable marks a per-event failure that the event did not cause: the
// connection dropped in the middle of a batch, the cluster could not be
// reached. The relay treats such an event as it treats a batch the broker
// failed as a whole: it is due again at once, never buried for it, and the
// circuit breaker paces the retries. Unavailable(nil) is nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return unavailableError{err}
}

// IsUnavailable reports whether err, or any error it wraps, was marked by
// Unavailable.
func IsUnavailable(err error) bool {
	var u unavailableError
	return errors.As(err, &u)
}

// failuresOf maps the result of Publisher.Publish to the events that were
// not acknowledged: nil means all were, a *PublishError names some, and any
// other error covers the whole batch.
func failuresOf(events []*Event, err error) map[string]error {
	if err == nil {
		return nil
	}
	var pe *PublishError
	if errors.As(err, &pe) {
		return pe.Failed
	}
	failed := make(map[string]error, len(events))
	for _, e := range events {
		failed[e.ID] = err
	}
	return failed
}
