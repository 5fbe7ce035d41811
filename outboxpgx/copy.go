package outboxpgx

import (
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// CopyMinRows is the number of events from which Exec writes a Save with
// COPY instead of a multi-row INSERT, where the executor can copy
// (pgx.Tx, *pgx.Conn, *pgxpool.Pool, *pgxpool.Conn). Below it one INSERT
// is cheaper: COPY takes one more round trip to learn the column types.
const CopyMinRows = 100

// copier is the part of pgx.Tx, *pgx.Conn and *pgxpool.Pool that COPY
// needs.
type copier interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error)
}

// plainInsert reports the table and columns of query if query is exactly
// a multi-row INSERT of nargs bind parameters, in order, one per column
// (the statement sqlstore's Insert sends), of at least CopyMinRows rows.
// Anything else, including any change of that statement's shape, gives
// ok false, and the statement runs as it is.
func plainInsert(query string, nargs int) (table pgx.Identifier, columns []string, ok bool) {
	rest, ok := strings.CutPrefix(query, "INSERT INTO ")
	if !ok {
		return nil, nil, false
	}
	for {
		var part string
		if part, rest, ok = cutQuoted(rest); !ok {
			return nil, nil, false
		}
		table = append(table, part)
		if rest, ok = strings.CutPrefix(rest, "."); !ok {
			break
		}
	}
	if len(table) > 2 {
		return nil, nil, false
	}
	rest, ok = strings.CutPrefix(rest, " (")
	if !ok {
		return nil, nil, false
	}
	list, rest, ok := strings.Cut(rest, ") VALUES ")
	if !ok {
		return nil, nil, false
	}
	columns = strings.Split(list, ", ")
	for _, c := range columns {
		if c == "" || strings.TrimLeft(c, "abcdefghijklmnopqrstuvwxyz_") != "" {
			return nil, nil, false
		}
	}
	if nargs%len(columns) != 0 || nargs/len(columns) < CopyMinRows || len(rest) != valuesLen(nargs, len(columns)) {
		return nil, nil, false
	}
	n := 0
	for row := 0; row < nargs/len(columns); row++ {
		if row > 0 {
			if rest, ok = strings.CutPrefix(rest, ", "); !ok {
				return nil, nil, false
			}
		}
		if rest, ok = strings.CutPrefix(rest, "("); !ok {
			return nil, nil, false
		}
		for col := range columns {
			if col > 0 {
				if rest, ok = strings.CutPrefix(rest, ", "); !ok {
					return nil, nil, false
				}
			}
			n++
			if rest, ok = strings.CutPrefix(rest, "$"+strconv.Itoa(n)); !ok {
				return nil, nil, false
			}
		}
		if rest, ok = strings.CutPrefix(rest, ")"); !ok {
			return nil, nil, false
		}
	}
	return table, columns, rest == ""
}

// valuesLen is the length of the VALUES list of rows of cols parameters
// each: "($1, $2), ($3, $4)".
func valuesLen(nargs, cols int) int {
	rows := nargs / cols
	n := rows*(2+2*(cols-1)) + 2*(rows-1) // parentheses, ", " within and between rows
	for i := 1; i <= nargs; i++ {
		n += 1 + len(strconv.Itoa(i))
	}
	return n
}

// cutQuoted cuts one double-quoted identifier off the front of s.
func cutQuoted(s string) (ident, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], b.Len() > 0
	}
	return "", s, false
}

// copyRows is args as rows of cols values.
func copyRows(args []any, cols int) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(args)/cols, func(i int) ([]any, error) { return args[i*cols : (i+1)*cols], nil })
}
