/*
 * relay.pml: the relay's partition-ownership protocol (sqlstore), as a
 * Promela model that spin checks exhaustively, with relay_heartbeat.pml
 * and relay_claim.pml. MODEL.md says what it covers and leaves out, how
 * to run it, and how each switch fails; model_test.go runs it.
 *
 * Names are those of the protocol and of the Go code: heartbeat (renew,
 * share, drain, giveBack, take), claimBulk, claimByID, rowLease, publish,
 * mark (under the fence), expire, leave, crash, pause. Each step says
 * which Go function does it ("Go:").
 *
 * Time. The database clock `now` moves forward one tick at a time, up to
 * TMAX. Between two ticks (a window) every relay that runs (joined, not
 * crashed, not paused, not gone) does one heartbeat (INTERVAL = 1 tick)
 * and one claimBulk pass, and finishes every claim it holds (the claim
 * lease CL = 1 tick): the clock does not tick before. A paused relay
 * does nothing while the clock goes on: its leases and claims run out.
 * Joins, leaves and faults happen at now <= FMAX, the writer commits at
 * most one event a window up to FMAX, and after FMAX the system has
 * SETTLE ticks to publish everything.
 *
 * Properties (assertions): P1 no duplicate without a ghost; P2 first
 * publications in per-aggregate order; P3 everything committed is
 * published at the end while a relay lives; P4 a crashed relay's
 * partitions have a live owner within TTL + INTERVAL; P5 a write of a
 * relay whose partition was taken over changes nothing.
 *
 * Switches (spin -DNAME) that put back a race, each caught:
 * STALE_INFLIGHT (R1), NO_FENCE (R2), CLAIM_LEASE_LIVENESS (R3),
 * NO_RECHECK (R4); and two holes in the protocol's text: NO_FINISHED
 * (take keeps an event that another claim of the same relay finished
 * since the read began) and LOOSE_HEAD (claimByID without the
 * first-undelivered-of-its-aggregate check; LOOSE_ROWLEASE and
 * LOOSE_CLAIMBYID for one path each).
 */

#define NR 2          /* relays (processes) */
#define NP 2          /* partitions */
#define NE 3          /* events: e0 of aggregate 0, e1 of 1, e2 of 0 */
#define NONE 255

#define TTL 2         /* heartbeat TTL, in ticks */
#define INTERVAL 1    /* heartbeat interval, in ticks */
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

#ifdef CLAIM_LEASE_LIVENESS
#define LEASE 5       /* R3: liveness and partitions on a long lease */
#else
#define LEASE TTL
#endif

/* LOOSE_HEAD: claimByID as the protocol text words it: rowLease passes
   over an earlier event that is pending but not leased, and the in-memory
   take of an ID checks only what the read of that ID holds */
#ifdef LOOSE_HEAD
#define LOOSE_ROWLEASE
#define LOOSE_CLAIMBYID
#endif
#ifdef LOOSE_ROWLEASE
#define LOOSE_ROWLEASE_ON 1
#else
#define LOOSE_ROWLEASE_ON 0
#endif
#ifdef LOOSE_CLAIMBYID
#define LOOSE_CLAIMBYID_ON 1
#else
#define LOOSE_CLAIMBYID_ON 0
#endif

/* aggregate i lives in partition i (the fixed hash) */
#define AGG(e) ((e) == 1 -> 1 : 0)
#define PART(e) AGG(e)
#define BIT(i) (1 << (i))
#define HAS(m, i) (((m) >> (i)) & 1)
#define CNT(m) (HAS(m, 0) + HAS(m, 1))

/* ---- the database ---- */
byte now;
byte committed, synced;        /* events (bit masks) */
byte rowLeased;                /* events leased by rowLease (claim_token set) */
byte lockedUntil[NE];          /* events: locked_until of a row lease */
byte owner[NP];                /* partitions: owner relay or NONE */
byte ptoken[NP];               /* partitions: fencing token */
byte leaseUntil[NP];           /* partitions: lease_until */
byte seenUntil[NR];            /* relays: seen_until */
byte lockedBy[NP];             /* row locks of an open heartbeat transaction */

/* ---- each relay's memory, guarded by its mu ---- */
typedef Mem {
	byte own;                  /* parts: partitions (mask) */
	byte drain;                /* draining (mask) */
	byte tok[NP];              /* parts: token */
	byte until[NP];            /* parts: localUntil */
	/* two claimers: slot 0 claimBulk (the relay pass), slot 1 claimByID
	   (the writer's goroutine after commit, in this process) */
	byte hand[2];              /* events a claimer holds */
	byte reg[2];               /* flights: events registered in flight */
	byte ftok[4];              /* token per partition at claim: [slot*NP+p] */
	byte dl[2];                /* local deadline of the claim */
	byte acked[2];             /* events the broker acknowledged */
	bit stale[2];              /* the deadline passed while paused */
	bit row[2];                /* a row-lease claim (claimByID only) */
	byte doneSince[2];         /* events finished since the claimer's read began */
}
Mem mem[NR];

/* relay control */
bit joined[NR], alive[NR], paused[NR], leaving[NR], gone[NR];
bit hbDone[NR], passDone[NR];
bit renewed[NR];               /* a heartbeat of r committed (Go: ledger.renewed) */
byte hPhase[NR], pPhase[NR];
/* heartbeat goroutine: what it carries between its steps */
byte sentAt[NR], hShare[NR], hMine[NR], hGive[NR], hNew[NR], hSnap[NR];
/* claimBulk goroutine */
byte snapTok[4], readM[NR], readLeased[NR];

/* the writer */
byte wNext, wPhase, wProc, wTok;
byte wLast;                    /* 1 + the window of the last commit */
bit wHas, wStale;
bit pStale[NR];                /* a read that outlived a pause past its claim lease */

/* faults and ghosts */
byte faults, leaves;
byte crashed = NONE, crashAt;
byte ghost;                    /* events whose duplicate is allowed */
byte pub[NE];                  /* publications of each event (max 2) */

/* the properties: each assertion names the one it checks */
hidden byte P1_duplicate, P2_order, P3_unpublished, P4_no_live_owner, P5_unfenced_write, stuck;
#define CHECK(prop, cond) prop = !(cond); assert(!prop)

hidden byte i, j, k, p, e, a, n, need, inflightP;
hidden byte ok;

#define RUNNING(r) (joined[r] && alive[r] && !paused[r] && !gone[r])
/* a process that relays (Go: ledger.relaying): it leases no row by ID */
#define RELAYING(r) (renewed[r] && !leaving[r])
#define CLAIMABLE(r, q) (HAS(mem[r].own, q) && !HAS(mem[r].drain, q) && mem[r].until[q] >= now + CL)
#define INFLIGHT(r) (mem[r].reg[0] | mem[r].reg[1])

/* busy: aggregates of r with an event in flight (mask) -> n */
inline busyAggs(r) {
	n = 0;
	for (k : 0 .. NE-1) {
		if :: HAS(INFLIGHT(r), k) -> n = n | BIT(AGG(k)) :: else fi
	}
}

/* partitions of r with an event in flight (mask) -> inflightP */
inline inflightParts(r) {
	inflightP = 0;
	for (k : 0 .. NE-1) {
		if :: HAS(INFLIGHT(r), k) -> inflightP = inflightP | BIT(PART(k)) :: else fi
	}
}

/* head: no earlier event of e's aggregate is committed and not synced */
inline isHead(ev, loose) {
	ok = 1;
	for (k : 0 .. NE-1) {
		if
		:: k < ev && AGG(k) == AGG(ev) && HAS(committed, k) && !HAS(synced, k) ->
			if
			:: loose -> /* only a leased earlier event blocks */
				if :: HAS(rowLeased, k) && lockedUntil[k] > now -> ok = 0 :: else fi
			:: else -> ok = 0
			fi
		:: else
		fi
	}
}

/* the end of a flight (mark, expire): busy released, and the claimers
   whose read is running learn it. Go: ledger.finish */
inline finish(r, s) {
	mem[r].doneSince[0] = mem[r].doneSince[0] | mem[r].reg[s];
	mem[r].doneSince[1] = mem[r].doneSince[1] | mem[r].reg[s];
	mem[r].reg[s] = 0
}

inline clearHand(r, s) {
	mem[r].hand[s] = 0; mem[r].acked[s] = 0; mem[r].stale[s] = 0; mem[r].row[s] = 0
}

/* expire (Go: ledger.expire, at the start of every claim): a flight whose
   claim lease passed locally is dropped, its events claimable again;
   the claimer may still be publishing what it holds */
inline expire(r) {
	for (j : 0 .. 1) {
		if :: mem[r].reg[j] != 0 && mem[r].dl[j] <= now -> finish(r, j) :: else fi
	}
}

/* publish (Go: Outbox.deliver -> Publisher.Publish): the claimer's
   events in seq order, acked.
   P1: a second publication needs a ghost (a crash or pause between ack
   and mark, or a publish after a pause past the claim's lease).
   P2: an event is first published after every earlier event of its
   aggregate. */
inline publish(r, s) {
	for (e : 0 .. NE-1) {
		if
		:: HAS(mem[r].hand[s], e) ->
			if :: mem[r].stale[s] -> ghost = ghost | BIT(e) :: else fi;
			if
			:: pub[e] == 0 ->
				for (j : 0 .. NE-1) {
					CHECK(P2_order, !(j < e && AGG(j) == AGG(e) && pub[j] == 0))
				}
			:: else ->
				CHECK(P1_duplicate, HAS(ghost, e))
			fi;
			if :: pub[e] < 2 -> pub[e]++ :: else fi
		:: else
		fi
	};
	mem[r].acked[s] = mem[r].hand[s]
}

/* mark (Go: owner.markSynced, owner.fence): an in-memory claim under the fence (the
   partition still owned by r with the token of the claim, read under a
   share lock), a row-lease claim by its claim token; then the flight is
   done. P5: a row changes only under the fence. */
inline mark(r, s) {
	for (e : 0 .. NE-1) {
		if
		:: HAS(mem[r].hand[s], e) && mem[r].row[s] ->
			if
			:: HAS(rowLeased, e) ->
				synced = synced | BIT(e); rowLeased = rowLeased & ~BIT(e)
			:: else
			fi
		:: HAS(mem[r].reg[s], e) && !mem[r].row[s] ->
			p = PART(e);
			ok = (owner[p] == r && ptoken[p] == mem[r].ftok[s*NP + p]);
			if
			:: !HAS(synced, e) ->
#ifdef NO_FENCE
				CHECK(P5_unfenced_write, ok);
				synced = synced | BIT(e)
#else
				if :: ok -> synced = synced | BIT(e) :: else fi
#endif
			:: else
			fi
		:: else
		fi
	};
	finish(r, s);
	clearHand(r, s)
}

#include "relay_heartbeat.pml"
#include "relay_claim.pml"

/* ---- faults, and the second relay's start ---- */
#define HOST_UP (HOST(0) || HOST(1))

/* crash (SIGKILL): the memory is gone, an open transaction rolled back,
   a claim by the writer in that process abandoned */
inline crash(c) {
	faults--; alive[c] = 0; crashed = c; crashAt = now;
	printf("t%d r%d crash\n", now, c);
	for (j : 0 .. 1) {
		ghost = ghost | (mem[c].acked[j] & ~synced);
		finish(c, j); clearHand(c, j); mem[c].dl[j] = 0
	};
	for (j : 0 .. NP-1) {
		if :: lockedBy[j] == c -> lockedBy[j] = NONE :: else fi;
		mem[c].tok[j] = 0; mem[c].until[j] = 0;
		mem[c].ftok[j] = 0; mem[c].ftok[NP + j] = 0;
		snapTok[c*NP + j] = 0
	};
	mem[c].own = 0; mem[c].drain = 0;
	mem[c].doneSince[0] = 0; mem[c].doneSince[1] = 0;
	hPhase[c] = 0; pPhase[c] = 0;
	sentAt[c] = 0; hShare[c] = 0; hMine[c] = 0; hGive[c] = 0; hNew[c] = 0; hSnap[c] = 0;
	readM[c] = 0; readLeased[c] = 0; pStale[c] = 0;
	if :: wPhase != 0 && wProc == c -> wPhase = 0; wNext++; wTok = 0; wHas = 0; wStale = 0 :: else fi
}

/* pause (SIGSTOP), outside the heartbeat's transaction (see MODEL.md) */
#define CAN_FAULT(r) (now <= FMAX && faults > 0 && alive[r] && !gone[r] && joined[r])
#define CAN_PAUSE(r) (CAN_FAULT(r) && !paused[r] && hPhase[r] != 2)

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
#define QUIET(r) (!RUNNING(r) || (hbDone[r] && passDone[r] && hPhase[r] == 0 && pPhase[r] == 0))
#define LIVE(r) (RUNNING(r) && !leaving[r])
/* the writer holds no claim in a process that runs */
#define WQUIET (wPhase == 0 || !W_ALIVE)
/* a tick of the database clock; a paused relay may resume with it */
inline tick() {
	/* P4: a crashed relay's partitions have a live owner again
	   within TTL + INTERVAL */
	if
	:: crashed != NONE && now + 1 >= crashAt + TTL + INTERVAL && (LIVE(0) || LIVE(1)) ->
		for (j : 0 .. NP-1) {
			CHECK(P4_no_live_owner, owner[j] != NONE && LIVE(owner[j]) && leaseUntil[j] > now)
		}
	:: else
	fi;
	now++;
	printf("tick: now %d\n", now);
	for (j : 0 .. NR-1) {
		hbDone[j] = 0; passDone[j] = 0;
		/* a paused relay's claims outlive their lease: what it had
		   acked may be published again, and so may what it publishes
		   or takes later */
		if
		:: paused[j] ->
			if :: pPhase[j] == 2 -> pStale[j] = 1 :: else fi;
			if :: wPhase == 3 && wProc == j -> wStale = 1 :: else fi;
			for (k : 0 .. 1) {
				if
				:: mem[j].hand[k] != 0 && mem[j].dl[k] <= now ->
					mem[j].stale[k] = 1; ghost = ghost | mem[j].acked[k]
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
	/* resume (SIGCONT) at the tick, with the stale memory; a pause not
	   ended by FMAX lasts for ever */
	:: d_step { CAN_TICK && paused[0] && now < FMAX -> tick(); paused[0] = 0; printf("t%d r0 resume\n", now) }
	:: d_step { CAN_TICK && paused[1] && now < FMAX -> tick(); paused[1] = 0; printf("t%d r1 resume\n", now) }
	/* relay 1 starts at a tick (or at 0): its steps then interleave with
	   all of that window's */
	:: d_step { CAN_TICK && !joined[1] && now < FMAX -> tick(); joined[1] = 1; printf("t%d r1 start\n", now) }
	od
}

/* P3: at the end (nothing can move: the clock at TMAX), every committed
   event is synced if some relay runs */
proctype finale() {
	timeout ->
	CHECK(stuck, now == TMAX);
	CHECK(P3_unpublished, !(LIVE(0) || LIVE(1)) || (committed & ~synced) == 0)
}

init {
	atomic {
		for (j : 0 .. NP-1) { owner[j] = NONE; lockedBy[j] = NONE };
		alive[0] = 1; alive[1] = 1; joined[0] = 1;
		if
		:: joined[1] = 1; printf("t0 r1 start\n")
		:: skip
		fi;
		/* two scenarios, explored one after the other: one fault (a
		   crash or a pause), or a graceful leave */
		if
		:: faults = 1
		:: leaves = 1
		fi;
		run heartbeat(0); run pass(0);
		run heartbeat(1); run pass(1);
		run writer(); run injector(); run clock(); run finale();
		j = 0
	}
}
