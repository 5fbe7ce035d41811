package sqlstore

import "time"

// readCursor lets a bulk read start past the events the Store has already
// taken: an index range from seq on, instead of a walk from the start of
// the pending events past the index entries of every event marked since
// the last vacuum. seq is 0 when there is none. Every pending event of
// the owned partitions at or below seq is in flight, marked, or held back
// in memory (an aggregate held, dead or busy, leaving out its later
// events too); whatever could release one of those (a failure, a
// release, an expired claim, a hold ending, a re-queue, a partition
// taken or drained) marks the cursor dirty, and a full read starts a new
// one. So does time: a full read at least every cursorAge, for events
// that commit after a later seq was read (see Claim on commit order).
//
// Postgres only (syntax.readCursor): it is where marked rows' index
// entries linger until vacuum.
type readCursor struct {
	seq     int64
	prio    int       // every pending event had this priority
	ordered bool      // the claims it was made for
	at      time.Time // local time of the full read it started from
	dirty   bool
	// parts names the partitions (with their tokens) it was read over:
	// a read over any other set is a full one. A partition that comes
	// back to the set (taken, no longer draining, its lease renewed in
	// time) has events below seq that no cursor read would find.
	parts string
}

// cursorAge is how long a read cursor lasts before a full read.
const cursorAge = time.Second

// cursorState is the ledger's read cursor: the cursor, a generation
// raised each time it is made dirty (a read that began before a raise
// must not move it), and the token of the last bulk claim.
type cursorState struct {
	cur      readCursor
	gen      uint64
	lastBulk string
}

// dirty makes the next bulk read a full one; the ledger's lock held.
func (c *cursorState) dirty() {
	c.cur.dirty = true
	c.gen++
}

// cursorFor returns the read cursor, whether a read over parts (see
// readCursor.parts) may start from it at mono, and its generation.
func (l *ledger) cursorFor(ordered bool, parts string, mono time.Time) (readCursor, bool, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.cursor.cur
	ok := c.seq > 0 && !c.dirty && c.ordered == ordered && c.parts == parts && mono.Sub(c.at) < cursorAge
	return c, ok, l.cursor.gen
}

// bulkTaken records the token of a bulk claim that took events.
func (l *ledger) bulkTaken(token string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cursor.lastBulk = token
}

// advance moves the read cursor after a bulk read of rows (in the order
// read: priority, then seq, over the partitions parts) of which the
// claim took those in taken: over
// the events taken from the start of the read, up to the first it did
// not take. A full read starts a new cursor when all its rows have one
// priority (so that priority order is seq order), below its first row.
//
// Nothing moves when the cursor was made dirty since the read began
// (gen): what released events did so after the read's snapshot.
func (l *ledger) advance(seqs []int64, prios []int, taken map[int64]bool, fromCursor, ordered bool, parts string, gen uint64, mono time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := &l.cursor
	if cs.gen != gen {
		cs.cur = readCursor{}
		return
	}
	c := cs.cur
	if !fromCursor {
		c = readCursor{ordered: ordered, parts: parts, at: mono}
		if len(seqs) == 0 {
			cs.cur = readCursor{}
			return
		}
		for _, p := range prios {
			if p != prios[0] {
				cs.cur = readCursor{}
				return
			}
		}
		c.prio, c.seq = prios[0], seqs[0]-1
	} else if c.dirty {
		return // made dirty while reading: a full read comes next
	}
	for _, seq := range seqs {
		if !taken[seq] {
			break
		}
		c.seq = seq
	}
	cs.cur = c
}
