package outboxui

import (
	"net/http"

	"github.com/eventsync/outbox/sqlstore"
)

type relaysData struct {
	Relays     []sqlstore.RelayStatus
	Partitions []sqlstore.PartitionStatus
	Free       int
	Pending    int64
}

// relays shows the live relays and every partition: owner, lease left,
// pending events and the age of the oldest.
func (h *handler) relays(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := h.ctx(r)
	defer cancel()
	var d relaysData
	var err error
	if d.Relays, err = h.store.Relays(ctx); err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
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
