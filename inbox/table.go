package inbox

// DefaultTable is the inbox table's name unless WithTable says otherwise.
const DefaultTable = "inbox_events"

// MaxTableNameLength is the longest table name (without its schema)
// WithTable accepts, so that index and migrations table names stay under
// Postgres's 63 characters.
const MaxTableNameLength = 48
