package sqlschema

import (
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
)

// Options are what the WithTable and WithDialect options of sqlstore and
// inbox set.
type Options struct {
	Table   string  // "" for Config.DefaultTable
	Dialect Dialect // "" for the one db's driver name implies

	// Of sqlstore only: claims lease rows instead of owning partitions,
	// and the relay's name in the partition table.
	RowLeases bool
	RelayName string
	// Of sqlstore only: how often a relay beats, and how long it counts
	// as alive after (0: the defaults).
	Heartbeat, MemberTTL time.Duration
	// Of sqlstore only: delivery recorded per partition.
	Watermarks bool
	// Of sqlstore only: the table is partitioned by save time, each
	// partition Period wide, created Ahead of the clock (0: the
	// defaults).
	TimePartitions bool
	Period, Ahead  time.Duration
}

// Open checks what New of sqlstore and inbox is given and returns the
// table it names: db must not be nil, opts (nil ones skipped) may set the
// dialect, which is otherwise the one db's driver name implies (see
// DialectOf), and the table name must be valid in it (see Schema.Table).
// Its errors wrap outbox.ErrInvalidConfig.
func Open[O ~func(*Options)](s *Schema, db *sqlx.DB, opts []O) (Table, error) {
	if db == nil {
		return Table{}, fmt.Errorf("%s: nil database: %w", s.p.errors, outbox.ErrInvalidConfig)
	}
	o := Apply(opts)
	if o.Dialect == "" {
		d, ok := DialectOf(db.DriverName())
		if !ok {
			return Table{}, fmt.Errorf("%s: cannot tell the dialect of driver %q; pass WithDialect(%s.Postgres, MySQL or SQLite): %w",
				s.p.errors, db.DriverName(), s.p.errors, outbox.ErrInvalidConfig)
		}
		o.Dialect = d
	}
	return s.Table(o.Dialect, o.Table)
}

// Apply returns the Options that opts (nil ones skipped) set.
func Apply[O ~func(*Options)](opts []O) Options {
	var o Options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}
