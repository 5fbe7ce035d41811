/*
 * relay_watermark.pml: watermark delivery on Postgres (the owner claimer
 * records delivery per partition, as a watermark, instead of per event),
 * as a Promela model that spin checks exhaustively. It stands apart from
 * relay.pml, which checks ownership itself (leases, tokens, the fence,
 * handoff, rowLease); this one keeps that protocol as plainly as it can
 * and looks at what the watermark adds. MODEL.md says what it covers,
 * how to run it and how each switch fails; model_test.go runs it.
 *
 * The database. One partition, three events, each the only event of its
 * transaction: e0 and e2 of aggregate 0, e1 of aggregate 1, with seq
 * 1, 2, 3. A transaction takes its seq when it inserts and commits any
 * time later, in any order (a late commit: a lower seq commits after a
 * higher one), or never (a long transaction). A snapshot is the set of
 * committed transactions (a mask): pg_visible_in_snapshot(xid, S) is "in
 * S". The partition row holds the watermark W = (markSeq, markSnap); a
 * row is per-row ("parked") when its xid is NULL; it is delivered iff
 * synced_at is set or W covers it (xid set, seq <= markSeq, in markSnap).
 *
 * A relay keeps in memory the front F = (seq, snap), its segments (one
 * per read that moved the front: to, open rows, rows to park) and ahead
 * (rows a claim by IDs delivered before a read covered them). The bulk
 * read (claimBulk) reads in one statement with snapshot S the per-row
 * rows, the range rows (seq > F.seq) and the late rows (seq <= F.seq,
 * not in F.snap); the statement's LIMITs are modelled as a cut: the
 * result holds the candidates up to some seq (the rest were beyond the
 * late part's LIMIT, or lower seqs of other partitions filled the
 * statement's LIMIT). The heartbeat parks the park lists, records the
 * last segment that is resolved with all before it, and renews; a leave
 * gives the partition back with nothing in flight or unresolved, writing
 * synced_at for the rows in ahead. A new owner's front is W.
 *
 * Four rules differ from the design's text, each because the text as
 * written fails a property (MODEL.md, findings; the switch in brackets
 * puts the text back): a claim by IDs leaves alone a row the front
 * covers [BYID_COVERED]; the front moves only if no late row was cut,
 * whatever cut it [LATE_CUT_ADVANCE]; a late row parked at once because
 * of a cut gets synced_at instead if it is in ahead, and stays with its
 * claim if in flight [PARK_AHEAD]; a row waiting in a park list, or
 * parked since the read began, holds its aggregate [PARK_NO_HOLD].
 *
 * Properties (assertions): P1 no duplicate without a ghost; P2 order per
 * aggregate (by seq among the events committed when the read ran); P3
 * every committed event delivered at the end while a relay lives; P6 no
 * committed event skipped: W covers only published events, and at the
 * end, while a relay lives, every committed event was published.
 *
 * The claim by IDs checks the earlier events of its aggregate against
 * the front, in memory for what it covers, in the statement for the
 * rest (per-row, after F.seq, late), in a read and a take as in the code.
 *
 * Switches (spin -DNAME), each caught: NO_LATE_READ, RECORD_UNRESOLVED,
 * NO_AHEAD_FLUSH, the four above, BYID_NO_LATE, BYID_NO_HOLD (the
 * claim by IDs blind to late rows, or to rows to park), and
 * MARK_BY_OWNER (the record fenced by owner and lease, not by the token
 * its park is fenced by: a heartbeat whose reply was lost leaves the
 * memory with an old token).
 */

#define NR 2          /* relays (processes) */
#define NE 3          /* events: e0 of aggregate 0, e1 of 1, e2 of 0 */
#define NS 3          /* segments a relay holds at most */
#define NONE 255

#define TTL 2         /* heartbeat TTL (and partition lease), ticks */
#define CL 1          /* claim lease, and the margin of claimable */
#ifndef FMAX
#define FMAX 2
#endif
#ifndef WMAX
#define WMAX FMAX
#endif
#ifndef SETTLE
#define SETTLE 3
#endif
#define TMAX (FMAX + SETTLE)

#define AGG(e) ((e) == 1 -> 1 : 0)
#define SEQ(e) ((e) + 1)
#define BIT(i) (1 << (i))
#define HAS(m, i) (((m) >> (i)) & 1)

/* ---- the database ---- */
byte now;
byte committed;                /* transactions (= events) committed */
byte synced;                   /* synced_at set */
byte parked;                   /* xid NULL: delivery recorded per row */
byte rowLeased;                /* leased by rowLease (claim_token set) */
byte lockedUntil[NE];
byte owner, ptoken, leaseUntil; /* the partition's row */
byte markSeq, markSnap;        /* the recorded watermark W */

/* the front (fs, fsnap) covers e: xid set, seq <= fs, visible in fsnap */
#define COVERS(fs, fsnap, e) (!HAS(parked, e) && SEQ(e) <= (fs) && HAS(fsnap, e))
#define DELIVERED(e) (HAS(synced, e) || COVERS(markSeq, markSnap, e))

/* ---- each relay's memory, guarded by its mu ---- */
typedef Mem {
	bit own;                   /* owns the partition */
	byte tok, until;           /* its token, localUntil */
	byte fseq, fsnap;          /* the front F */
	byte nseg;                 /* segments, oldest first */
	byte sto[NS];              /* to.seq (to.snap in ssnap) */
	byte ssnap[NS];
	byte sopen[NS];            /* rows not resolved yet */
	byte spark[NS];            /* rows to park before it is recorded */
	byte ahead;                /* delivered by ID before a read covered them */
	/* two claimers: slot 0 claimBulk (the relay pass), slot 1 claimByID
	   (the writer's goroutine after commit, in this process) */
	byte hand[2];              /* events a claimer holds */
	byte reg[2];               /* flights: registered in flight */
	byte ftok[2];              /* the token at the claim */
	byte dl[2];                /* local deadline of the claim */
	byte seen[2];              /* committed when the claim's read ran */
	byte doneSince[2];         /* finished since the claimer's read began */
	bit stale[2];              /* the deadline passed while paused */
	bit row[2];                /* a row-lease claim (claimByID only) */
}
Mem mem[NR];

bit joined[NR], alive[NR], paused[NR], leaving[NR], gone[NR];
bit hbDone[NR], passDone[NR];
bit renewed[NR];               /* a heartbeat of r ran (Go: ledger.renewed) */
byte pPhase[NR];
/* claimBulk's read, carried to its take */
byte rTok[NR], rSnap[NR], rRes[NR], rLate[NR], rPR[NR], rLeased[NR];
bit rCut[NR];                  /* a late row of the partition was cut */
byte rHold[NR];                /* aggregates of rows parked since the read began */
bit pStale[NR];                /* the read outlived a pause */

/* the writer */
byte wNext, wPhase, wProc;
byte wLast;                    /* 1 + the window of the last commit */
/* claimByID's read, carried to its take: the token, the event pending,
   its blockers, aggregates of rows parked since the read began, and the
   events committed when it ran */
byte wTok, wBlk, wHold, wCommitted;
bit wPend;

/* faults and ghosts */
byte faults, leaves;
byte lost;                     /* heartbeat replies to lose (with a fault) */
byte ghost;                    /* events whose duplicate is allowed */
byte pub[NE];                  /* publications of each event (max 2) */
byte pubBy[NR];                /* events each relay's process published */

hidden byte P1_duplicate, P2_order, P3_unpublished, P6_skipped, stuck;
#define CHECK(prop, cond) prop = !(cond); assert(!prop)

hidden byte j, k, e, a, n, c, m, ok, move, nseq, sOpen, sPark;

#define RUNNING(r) (joined[r] && alive[r] && !paused[r] && !gone[r])
/* a process that relays (Go: ledger.relaying): it leases no row by ID */
#define RELAYING(r) (renewed[r] && !leaving[r])
#define LIVE(r) (RUNNING(r) && !leaving[r])
#define W_ALIVE (alive[wProc] && !paused[wProc])
#define CLAIMABLE(r) (mem[r].own && !leaving[r] && mem[r].until >= now + CL)
#define INFLIGHT(r) (mem[r].reg[0] | mem[r].reg[1])
/* a heartbeat with nothing to do (another relay's lease holds, nothing
   in memory) is left out, and so is a pass with nothing claimable */
#define HB_IDLE(r) (owner != r && leaseUntil > now && !mem[r].own && !leaving[r])
#define FRONT(r, e) COVERS(mem[r].fseq, mem[r].fsnap, e)

/* the delivered events (mask) -> m */
inline deliveredMask() {
	m = 0;
	for (k : 0 .. NE-1) {
		if :: DELIVERED(k) -> m = m | BIT(k) :: else fi
	}
}

/* busy: aggregates of r with an event in flight (mask) -> n */
inline busyAggs(r) {
	n = 0;
	for (k : 0 .. NE-1) {
		if :: HAS(INFLIGHT(r), k) -> n = n | BIT(AGG(k)) :: else fi
	}
}

/* head: no earlier event of ev's aggregate is committed and undelivered
   (the database's view: synced_at, or covered by W) */
inline isHead(ev) {
	ok = 1;
	for (k : 0 .. NE-1) {
		if :: k < ev && AGG(k) == AGG(ev) && HAS(committed, k) && !DELIVERED(k) -> ok = 0 :: else fi
	}
}

/* the end of a flight (mark, expire, crash): the claimers whose read is
   running learn it; a row it held that a segment still has open was not
   acked (expired, abandoned): it is parked before the segment is
   recorded. Go: ledger.finish */
inline finish(r, s) {
	mem[r].doneSince[0] = mem[r].doneSince[0] | mem[r].reg[s];
	mem[r].doneSince[1] = mem[r].doneSince[1] | mem[r].reg[s];
	for (k : 0 .. NS-1) {
		mem[r].spark[k] = mem[r].spark[k] | (mem[r].sopen[k] & mem[r].reg[s]);
		mem[r].sopen[k] = mem[r].sopen[k] & ~mem[r].reg[s]
	};
	mem[r].reg[s] = 0
}

inline clearHand(r, s) {
	mem[r].hand[s] = 0; mem[r].stale[s] = 0; mem[r].row[s] = 0;
	mem[r].ftok[s] = 0; mem[r].dl[s] = 0; mem[r].seen[s] = 0
}

/* the partition's memory, dropped (lost, given back) */
inline forget(r) {
	mem[r].own = 0; mem[r].tok = 0; mem[r].until = 0;
	mem[r].fseq = 0; mem[r].fsnap = 0; mem[r].ahead = 0;
	for (k : 0 .. NS-1) {
		mem[r].sto[k] = 0; mem[r].ssnap[k] = 0; mem[r].sopen[k] = 0; mem[r].spark[k] = 0
	};
	mem[r].nseg = 0
}

/* expire (Go: ledger.expire, at the start of every claim) */
inline expire(r) {
	for (j : 0 .. 1) {
		if :: mem[r].reg[j] != 0 && mem[r].dl[j] <= now -> finish(r, j) :: else fi
	}
}

/* publish (Go: Outbox.deliver -> Publisher.Publish), in seq order.
   P1: a second publication needs a ghost. P2: a first publication comes
   after the first publication of every earlier event of its aggregate
   that was committed when the claim's read ran. */
inline publish(r, s) {
	for (e : 0 .. NE-1) {
		if
		:: HAS(mem[r].hand[s], e) ->
			if :: mem[r].stale[s] -> ghost = ghost | BIT(e) :: else fi;
			if
			:: pub[e] == 0 ->
				for (j : 0 .. NE-1) {
					CHECK(P2_order, !(j < e && AGG(j) == AGG(e) && HAS(mem[r].seen[s], j) && pub[j] == 0))
				}
			:: else ->
				CHECK(P1_duplicate, HAS(ghost, e))
			fi;
			if :: pub[e] < 2 -> pub[e]++ :: else fi
		:: else
		fi
	};
	pubBy[r] = pubBy[r] | mem[r].hand[s]
}

/* mark (Go: Store.MarkSynced): a row-lease claim writes synced_at by its
   claim token. An in-memory claim writes synced_at under the fence for
   its per-row events (UPDATE ... AND xid IS NULL); an event with an xid
   is resolved in memory, under the claim's token: in its segment if the
   front covers it, else into ahead. No write. Then the flight is done. */
inline mark(r, s) {
	for (e : 0 .. NE-1) {
		if
		:: HAS(mem[r].hand[s], e) && mem[r].row[s] ->
			if :: HAS(rowLeased, e) -> synced = synced | BIT(e); rowLeased = rowLeased & ~BIT(e) :: else fi
		:: HAS(mem[r].reg[s], e) && !mem[r].row[s] && HAS(parked, e) ->
			if :: owner == r && ptoken == mem[r].ftok[s] -> synced = synced | BIT(e) :: else fi
		:: HAS(mem[r].reg[s], e) && !mem[r].row[s] && !HAS(parked, e) && mem[r].own && mem[r].tok == mem[r].ftok[s] ->
			if
			:: FRONT(r, e) ->
				for (k : 0 .. NS-1) { mem[r].sopen[k] = mem[r].sopen[k] & ~BIT(e) }
			:: else -> mem[r].ahead = mem[r].ahead | BIT(e)
			fi
		:: else
		fi
	};
	finish(r, s);
	clearHand(r, s)
}

#include "relay_watermark_claim.pml"

/* ---- the heartbeat. Go: owner.heartbeat, one transaction ---- */
/* record: the last segment that is resolved, with all before it
   (RECORD_UNRESOLVED: the last one, resolved or not), written with the
   renew; the segments up to it are dropped */
inline record(r) {
	c = NONE;
	for (k : 0 .. NS-1) {
		if
#ifdef RECORD_UNRESOLVED
		:: k < mem[r].nseg -> c = k
#else
		:: k < mem[r].nseg && mem[r].sopen[k] == 0 && (k == 0 || c == k - 1) -> c = k
#endif
		:: else
		fi
	};
	if
	:: c != NONE ->
		markSeq = mem[r].sto[c]; markSnap = mem[r].ssnap[c];
		printf("t%d r%d heartbeat: record (%d, %d)\n", now, r, markSeq, markSnap);
		/* P6: W covers only events that were published */
		for (e : 0 .. NE-1) {
			CHECK(P6_skipped, pub[e] > 0 || !COVERS(markSeq, markSnap, e))
		};
		for (k : 0 .. NS-1) {
			if
			:: k + c + 1 < NS ->
				mem[r].sto[k] = mem[r].sto[k+c+1]; mem[r].ssnap[k] = mem[r].ssnap[k+c+1];
				mem[r].sopen[k] = mem[r].sopen[k+c+1]; mem[r].spark[k] = mem[r].spark[k+c+1]
			:: else ->
				mem[r].sto[k] = 0; mem[r].ssnap[k] = 0; mem[r].sopen[k] = 0; mem[r].spark[k] = 0
			fi
		};
		mem[r].nseg = mem[r].nseg - c - 1
	:: else
	fi
}

/* renew the lease that still holds: park the park lists (UPDATE SET xid
   = NULL), record, and, leaving with nothing in flight or unresolved,
   give the partition back, writing synced_at for the rows in ahead. An
   own partition whose lease ran out, or a free one, is taken with the
   token raised: its front is W. Go: owner.beatTx, ledger.adopt */
inline beat(r) {
	if
	:: owner == r && leaseUntil > now ->
		/* the park and the record are fenced by the ledger's token: a
		   heartbeat whose reply was lost (below) took the partition
		   again under a raised token, unknown to the memory */
		ok = (mem[r].own && mem[r].tok == ptoken);
		if
		:: ok ->
			for (k : 0 .. NS-1) {
				for (e : 0 .. NE-1) {
					if
					:: HAS(mem[r].spark[k], e) && pPhase[r] == 2 -> rHold[r] = rHold[r] | BIT(AGG(e))
					:: else
					fi;
					if
					:: HAS(mem[r].spark[k], e) && wPhase == 2 && wProc == r -> wHold = wHold | BIT(AGG(e))
					:: else
					fi
				};
				parked = parked | mem[r].spark[k]; mem[r].spark[k] = 0
			}
		:: else
		fi;
#ifdef MARK_BY_OWNER
		record(r);
#else
		if :: ok -> record(r) :: else fi;
#endif
		if
		:: !ok ->
			/* the ledger learns the token: the partition's memory
			   starts again from W (Go: ledger.adopt), and is not given
			   back by this heartbeat (ledger.decide) */
			forget(r);
			mem[r].own = 1; mem[r].tok = ptoken; mem[r].fseq = markSeq; mem[r].fsnap = markSnap;
			leaseUntil = now + TTL; mem[r].until = now + TTL;
			printf("t%d r%d heartbeat: adopt token %d, front (%d, %d)\n", now, r, ptoken, markSeq, markSnap)
		:: ok && leaving[r] && INFLIGHT(r) == 0 && mem[r].nseg == 0 ->
#ifndef NO_AHEAD_FLUSH
			synced = synced | mem[r].ahead;
#endif
			printf("t%d r%d heartbeat: give back (ahead %d)\n", now, r, mem[r].ahead);
			owner = NONE; leaseUntil = now; forget(r)
		:: else ->
			leaseUntil = now + TTL; mem[r].until = now + TTL
		fi
	:: else ->
		if
		:: leaseUntil <= now && !leaving[r] ->
			owner = r; ptoken++; leaseUntil = now + TTL;
			if
			:: lost > 0 && mem[r].own ->
				/* the heartbeat committed, but its reply was lost (the
				   connection cut at COMMIT): the memory is as before */
				lost--;
				printf("t%d r%d heartbeat: take, reply lost\n", now, r)
			:: else ->
				forget(r);
				mem[r].own = 1; mem[r].tok = ptoken; mem[r].until = now + TTL;
				mem[r].fseq = markSeq; mem[r].fsnap = markSnap;
				printf("t%d r%d heartbeat: take, front (%d, %d)\n", now, r, markSeq, markSnap)
			fi
		:: else -> forget(r)
		fi
	fi;
	hbDone[r] = 1; renewed[r] = 1;
	if
	:: leaving[r] && !mem[r].own && INFLIGHT(r) == 0 && mem[r].hand[0] == 0 && mem[r].hand[1] == 0 && !(wPhase != 0 && wProc == r) ->
		gone[r] = 1; printf("t%d r%d leave: gone\n", now, r)
	:: else
	fi
}

proctype heartbeat(byte r) {
end:
	do
	:: d_step { RUNNING(r) && !hbDone[r] && !HB_IDLE(r) -> beat(r) }
	:: d_step { RUNNING(r) && !leaving[r] && leaves > 0 && now <= FMAX ->
		/* leave (SIGTERM): nothing is claimed any more */
		leaves--; leaving[r] = 1; printf("t%d r%d leave\n", now, r) }
	od
}

/* ---- faults, and the second relay's start ---- */
/* crash (SIGKILL): the memory is gone; what the process published and
   did not record durably may go out again */
inline crash(r) {
	faults--; alive[r] = 0;
	printf("t%d r%d crash\n", now, r);
	deliveredMask();
	ghost = ghost | (pubBy[r] & ~m);
	for (j : 0 .. 1) { mem[r].reg[j] = 0; clearHand(r, j); mem[r].doneSince[j] = 0 };
	forget(r);
	pPhase[r] = 0; pStale[r] = 0;
	rTok[r] = 0; rSnap[r] = 0; rRes[r] = 0; rLate[r] = 0; rPR[r] = 0; rLeased[r] = 0; rCut[r] = 0; rHold[r] = 0;
	if :: wPhase != 0 && wProc == r -> wPhase = 0; wTok = 0; wPend = 0; wBlk = 0; wHold = 0; wCommitted = 0 :: else fi
}

#define CAN_FAULT(r) (now <= FMAX && faults > 0 && alive[r] && !gone[r] && joined[r])
#define CAN_PAUSE(r) (CAN_FAULT(r) && !paused[r])

proctype injector() {
end:
	do
	:: d_step { CAN_FAULT(0) -> crash(0) }
	:: d_step { CAN_FAULT(1) -> crash(1) }
	:: d_step { CAN_PAUSE(0) -> faults--; paused[0] = 1; printf("t%d r0 pause\n", now) }
	:: d_step { CAN_PAUSE(1) -> faults--; paused[1] = 1; printf("t%d r1 pause\n", now) }
	od
}

/* ---- the database clock ---- */
#define QUIET(r) (!RUNNING(r) || ((hbDone[r] || HB_IDLE(r)) && (passDone[r] || !CLAIMABLE(r)) && pPhase[r] == 0))
#define WQUIET (wPhase == 0 || !W_ALIVE)
inline tick() {
	now++;
	printf("tick: now %d\n", now);
	for (j : 0 .. NR-1) {
		hbDone[j] = 0; passDone[j] = 0;
		/* a paused relay past its lease: what it published and did not
		   record durably may go out again (the partition is taken from
		   W), and so may what its claims publish after their lease */
		if
		:: paused[j] ->
			if
			:: mem[j].own && mem[j].until <= now ->
				deliveredMask(); ghost = ghost | (pubBy[j] & ~m)
			:: else
			fi;
			if :: pPhase[j] == 2 -> pStale[j] = 1 :: else fi;
			for (k : 0 .. 1) {
				if
				:: mem[j].hand[k] != 0 && mem[j].dl[k] <= now -> mem[j].stale[k] = 1
				:: else
				fi
			}
		:: else
		fi
	}
}

#define CAN_TICK (now < TMAX && QUIET(0) && QUIET(1) && WQUIET)
proctype clock() {
end:
	do
	:: d_step { CAN_TICK -> tick(); skip }
	:: d_step { CAN_TICK && paused[0] && now < FMAX -> tick(); paused[0] = 0; printf("t%d r0 resume\n", now) }
	:: d_step { CAN_TICK && paused[1] && now < FMAX -> tick(); paused[1] = 0; printf("t%d r1 resume\n", now) }
	:: d_step { CAN_TICK && !joined[1] && now < FMAX -> tick(); joined[1] = 1; printf("t%d r1 start\n", now) }
	od
}

/* at the end (nothing can move: the clock at TMAX). P6: every event W
   or synced_at says is delivered was published, and while a relay lives
   every committed event was. P3: while a relay lives, every committed
   event is delivered. */
proctype finale() {
	/* one step: the loop's counter is hidden, so its steps would look
	   alike to the search */
	d_step {
		timeout ->
		CHECK(stuck, now == TMAX);
		deliveredMask();
		for (e : 0 .. NE-1) {
			CHECK(P6_skipped, pub[e] > 0 || !(HAS(m, e) || (HAS(committed, e) && (LIVE(0) || LIVE(1)))))
		};
		CHECK(P3_unpublished, !(LIVE(0) || LIVE(1)) || (committed & ~m) == 0)
	}
}

init {
	atomic {
		owner = NONE;
		alive[0] = 1; alive[1] = 1; joined[0] = 1;
		if
		:: joined[1] = 1; printf("t0 r1 start\n")
		:: skip
		fi;
		if
		:: faults = 1; lost = 1
		:: leaves = 1
		fi;
		run heartbeat(0); run pass(0);
		run heartbeat(1); run pass(1);
		run writer(); run injector(); run clock(); run finale();
		j = 0
	}
}
