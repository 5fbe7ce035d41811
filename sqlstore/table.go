package sqlstore

// DefaultTable is the outbox table's name unless WithTable says otherwise.
const DefaultTable = "outbox_events"

// MaxTableNameLength is the longest table name (without its schema)
// WithTable accepts: the index names and the migrations table append up to
// 15 characters, and Postgres cuts identifiers at 63.
const MaxTableNameLength = 48
