package outbox

// Fate is what became of one event that Publish (or Transact) was asked
// to publish right after its commit.
type Fate int

const (
	// Acknowledged: the broker acknowledged the event before Publish
	// returned, and it is marked synced.
	Acknowledged Fate = iota + 1
	// HandedToRelay: Publish did not send the event; a relay delivers it
	// (Outcome.Handoff says why). Nothing failed and no attempt counted.
	HandedToRelay
	// WaitingForRetry: the event was sent and not acknowledged; the
	// attempt is counted and a relay retries it after its backoff
	// (Outcome.Err is the publisher's error).
	WaitingForRetry
	// Dead: the event failed for good (an error marked Permanent, or its
	// last allowed attempt) and is buried.
	Dead
)

// String returns the words the SDK's logs use for f.
func (f Fate) String() string {
	switch f {
	case Acknowledged:
		return "acknowledged"
	case HandedToRelay:
		return "handed to the relay"
	case WaitingForRetry:
		return "waiting for a retry"
	case Dead:
		return "dead"
	}
	return "unknown"
}

// Handoff says why Publish handed an event to the relay instead of
// sending it.
type Handoff int

const (
	// OwnedElsewhere: another relay owns the event's partition; that relay
	// delivers it (on Postgres at once, woken by the commit's
	// notification; elsewhere at its next pass). Also, in a process that
	// runs a relay, an event whose partition has no owner at that moment
	// (relays joining or leaving): the relay that takes the partition
	// delivers it.
	OwnedElsewhere Handoff = iota + 1
	// InFlight: the event could not be claimed because it, or an earlier
	// event of its aggregate, is in flight (claimed by a relay, this
	// process's own included, which may have taken it the moment it was
	// committed), or an earlier event of its aggregate is waiting for a
	// retry. The relay delivers it once that one is acknowledged. An
	// event that is not committed or already delivered is reported so
	// too: Publish cannot tell it from the table.
	InFlight
	// BreakerOpen: the circuit breaker is open, so nothing was sent; the
	// relay delivers the event once the broker is back.
	BreakerOpen
	// ClaimFailed: the database failed the claim (Publish's error says
	// how); the relay claims the event on a later pass.
	ClaimFailed
	// GivenBack: the event was claimed and given back unattempted, either
	// because the publisher held it back behind a failed earlier event of
	// its aggregate in the same batch, or because the publication ran
	// out of time before the broker answered.
	GivenBack
)

// String returns the words the SDK's logs use for h.
func (h Handoff) String() string {
	switch h {
	case OwnedElsewhere:
		return "another relay owns its partition"
	case InFlight:
		return "in flight, or held behind an earlier undelivered event of its aggregate"
	case BreakerOpen:
		return "the circuit breaker is open"
	case ClaimFailed:
		return "the claim failed"
	case GivenBack:
		return "given back unattempted"
	}
	return ""
}

// Outcome is what became of one event Publish was asked to publish.
type Outcome struct {
	ID      string
	Fate    Fate
	Handoff Handoff // why, when Fate is HandedToRelay; zero otherwise
	Err     error   // the publisher's error, when Fate is WaitingForRetry or Dead
}

// String reads as the SDK's logs do: "acknowledged", "handed to the
// relay: another relay owns its partition", "waiting for a retry: ...".
func (o Outcome) String() string {
	s := o.Fate.String()
	switch {
	case o.Handoff != 0:
		s += ": " + o.Handoff.String()
	case o.Err != nil:
		s += ": " + o.Err.Error()
	}
	return s
}

// IDs returns the IDs of the events of r.Outcomes whose fate is f, in the
// order Publish was given them.
func (r Result) IDs(f Fate) []string {
	var ids []string
	for _, o := range r.Outcomes {
		if o.Fate == f {
			ids = append(ids, o.ID)
		}
	}
	return ids
}

// Outcome returns the outcome of the event with the given ID, and false if
// r has none for it (a relay pass, or an ID Publish was not given).
func (r Result) Outcome(id string) (Outcome, bool) {
	for _, o := range r.Outcomes {
		if o.ID == id {
			return o, true
		}
	}
	return Outcome{}, false
}
