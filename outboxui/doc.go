// Package outboxui is an operator console for the outbox table, served
// in the browser: an http.Handler over a *sqlstore.Store that a service
// mounts under a path of its choice, and that the CLI serves with
// `outbox ui`.
//
// # Pages
//
//   - Overview: pending events (by type), the age of the oldest, dead
//     events, events synced per minute over the last hour (a bar chart
//     drawn as SVG on the server), the median and 99th-percentile sync
//     latency, and the relay's circuit breaker when the handler is given
//     one (WithBreaker).
//   - Events by state (pending, failed and backing off, dead, synced),
//     filtered by type, aggregate ID, topic and creation time, paged by
//     keyset (never OFFSET), so the hundredth page costs what the first
//     does.
//   - An event: payload (indented when it is JSON), headers, attempts,
//     last error, next attempt, sequence number and partition.
//   - Relays and partitions: each live relay's partitions, when it joined
//     and when it expires; each partition's owner, lease left and
//     pending events.
//
// Every statement reads an index; see docs/console.md for what each page
// costs on a table of ten million rows.
//
// # Actions
//
// Off unless the handler is built WithActions(true): re-queue one dead
// event, re-queue every dead event of a filtered view (after a dry run
// that counts them), purge the events synced longer ago than an age.
// Every action is a POST that carries a CSRF token (an HMAC of a nonce
// cookie under the handler's key) and passes http.CrossOriginProtection;
// each is logged through WithLogger with what it changed. With actions
// off no action form is rendered and every request but GET and HEAD is
// refused with 403.
//
// # Mounting
//
// The handler serves its pages at the root of the paths it sees and links
// them relatively, so strip the prefix you mount it under, which must end
// in a slash:
//
//	mux.Handle("/outbox/", http.StripPrefix("/outbox", h))
//
// Put it behind the service's own authentication with WithMiddleware.
// Templates and styles are embedded; the pages need no script and load
// nothing from another origin.
package outboxui
