package outboxui

import (
	"net/http"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

type relaysData struct {
	Relays     []relayRow
	Partitions []sqlstore.PartitionStatus
	Free       int
	Pending    int64
}

// relayRow is one live relay as the page shows it: when it joined (Joined
// false if it joined between the two reads) and how long it counts as
// live without renewing.
type relayRow struct {
	sqlstore.RelayStatus
	Since  time.Duration
	Joined bool
}

// relays shows the live relays (partitions held, how long ago each
// joined, when each expires) and every partition: owner, lease left,
// pending events and the age of the oldest.
func (h *handler) relays(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := h.ctx(r)
	defer cancel()
	var d relaysData
	relays, err := h.store.Relays(ctx)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	members, err := h.store.Memberships(ctx)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	since := make(map[string]time.Duration, len(members))
	for _, m := range members {
		since[m.Name] = m.Since
	}
	for _, rs := range relays {
		s, ok := since[rs.Name]
		d.Relays = append(d.Relays, relayRow{RelayStatus: rs, Since: s, Joined: ok})
	}
	if d.Partitions, err = h.store.Partitions(ctx); err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	for _, p := range d.Partitions {
		if !p.Live {
			d.Free++
		}
		d.Pending += p.Pending
	}
	h.render(w, r, http.StatusOK, "relays", layout{Title: "Relays and partitions", Nav: "relays"}, d)
}
