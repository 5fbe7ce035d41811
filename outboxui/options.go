package outboxui

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/eventsync/outbox"
)

// DefaultTimeout bounds the statements of one page or action unless
// WithTimeout says otherwise.
const DefaultTimeout = 10 * time.Second

// DefaultPurgeAge is the age the purge form suggests.
const DefaultPurgeAge = 30 * 24 * time.Hour

// Option configures New.
type Option func(*config)

type config struct {
	actions    bool
	middleware []func(http.Handler) http.Handler
	logger     *slog.Logger
	breaker    func() outbox.BreakerState
	label      string
	timeout    time.Duration
	csrfKey    []byte
}

// WithActions turns the actions on (re-queue dead events, purge synced
// ones) or off. Defaults to off: the console only reads, renders no
// action form and refuses every request but GET and HEAD with 403.
func WithActions(on bool) Option { return func(c *config) { c.actions = on } }

// WithMiddleware wraps the whole console in mw, the service's own
// authentication or authorization, outermost first when given several
// times. Defaults to none: the console trusts whoever reaches it.
func WithMiddleware(mw func(http.Handler) http.Handler) Option {
	return func(c *config) {
		if mw != nil {
			c.middleware = append(c.middleware, mw)
		}
	}
}

// WithLogger sets where the console logs every action with what it
// changed (at Info) and every failed page (at Warn). Defaults to
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithBreaker has the overview show the relay's circuit breaker, read
// from f at each request: pass the Outbox's Breaker method in a process
// that runs the relay. Defaults to none (the overview leaves it out).
func WithBreaker(f func() outbox.BreakerState) Option { return func(c *config) { c.breaker = f } }

// WithLabel sets the name the pages show for the database, such as a
// host name. It must hold no secret: it is shown as is. Defaults to the
// store's dialect and table.
func WithLabel(label string) Option { return func(c *config) { c.label = label } }

// WithTimeout bounds the statements of one page or action. Defaults to
// DefaultTimeout; a purge runs in batches within it and reports what it
// deleted so far.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithCSRFKey sets the key that signs the forms' CSRF tokens: give every
// replica of a service the same secret key (at least 32 bytes) when a
// load balancer may send a form and its POST to different replicas.
// Defaults to a random key per handler.
func WithCSRFKey(key []byte) Option { return func(c *config) { c.csrfKey = key } }
