package outboxui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

// purgeBatch is how many events one statement of a purge deletes.
const purgeBatch = 5000

type requeueData struct {
	F     filter
	Count int64
	Self  string
}

// requeueForm is the dry run of a re-queue of a filtered dead view: how
// many events it would give back, and the form that does it.
func (h *handler) requeueForm(w http.ResponseWriter, r *http.Request) {
	f, pq, err := parseFilter(r.URL.Query())
	if err == nil && f.State != sqlstore.StateDead {
		err = fmt.Errorf("only dead events are re-queued, not %s ones", f.State)
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	n, err := h.store.Count(ctx, pq)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	f.After = ""
	h.render(w, r, http.StatusOK, "requeue", layout{Title: "Re-queue dead events", Nav: "events"},
		requeueData{F: f, Count: n, Self: string(f.query(f.State, ""))})
}

// requeue gives back one dead event (the form's id) or every dead event
// of the form's filter, and redirects to the event or the view.
func (h *handler) requeue(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := h.ctx(r)
	defer cancel()
	if id := r.PostFormValue("id"); id != "" {
		n, err := h.store.Requeue(ctx, sqlstore.RequeueFilter{IDs: []string{id}})
		h.logAction(r, err, "action", "requeue", "id", id, "requeued", n)
		if err != nil {
			h.fail(w, r, http.StatusInternalServerError, err)
			return
		}
		done(w, r, "event", url.Values{"id": {id}}, "requeued", n)
		return
	}
	f, pq, err := parseFilter(r.PostForm)
	if err == nil && f.State != sqlstore.StateDead {
		err = fmt.Errorf("only dead events are re-queued, not %s ones", f.State)
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	n, err := h.store.RequeueMatching(ctx, pq)
	h.logAction(r, err, "action", "requeue_matching", "type", pq.Type, "topic", pq.Topic,
		"aggregate_id", pq.AggregateID, "from", f.From, "to", f.To, "expected", r.PostFormValue("expected"), "requeued", n)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, fmt.Errorf("re-queued %d event(s), then: %w", n, err))
		return
	}
	v, _ := url.ParseQuery(string(f.query(sqlstore.StateDead, "")))
	done(w, r, "events", v, "requeued", n)
}

// done redirects, after an action, to page with query v and the
// action's notice.
func done(w http.ResponseWriter, r *http.Request, page string, v url.Values, what string, n int) {
	v.Set("done", what)
	v.Set("n", strconv.Itoa(n))
	// Relative, resolved by the browser against the URL it posted to:
	// http.Redirect would resolve it against the path after the prefix
	// was stripped.
	w.Header().Set("Location", page+"?"+v.Encode())
	w.WriteHeader(http.StatusSeeOther)
}

type purgeData struct {
	Default string
}

func (h *handler) purgeForm(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "purge", layout{Title: "Purge synced events", Nav: "purge"},
		purgeData{Default: DefaultPurgeAge.String()})
}

// purge deletes the events synced longer ago than the form's duration,
// in batches, within the handler's timeout.
func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	age, err := time.ParseDuration(r.PostFormValue("older_than"))
	if err == nil && age < time.Minute {
		err = errors.New("purge only events synced at least a minute ago")
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, fmt.Errorf("older than: %w", err))
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	total := 0
	for {
		n, err := h.store.Purge(ctx, age, purgeBatch)
		total += n
		if err != nil {
			h.logAction(r, err, "action", "purge", "older_than", age.String(), "purged", total)
			h.fail(w, r, http.StatusInternalServerError, fmt.Errorf("purged %d event(s), then: %w", total, err))
			return
		}
		if n < purgeBatch {
			break
		}
	}
	h.logAction(r, nil, "action", "purge", "older_than", age.String(), "purged", total)
	done(w, r, "purge", url.Values{}, "purged", total)
}

// logAction logs an action with what it changed (attrs), who asked and,
// if it failed, why: at Info, or at Error when it failed.
func (h *handler) logAction(r *http.Request, err error, attrs ...any) {
	attrs = append(attrs, "user", user(r), "remote", r.RemoteAddr)
	if err != nil {
		h.log.Error("outboxui: action failed", append(attrs, "err", err)...)
		return
	}
	h.log.Info("outboxui: action", attrs...)
}
