/* relay_watermark_claim.pml: the claims of the watermark model (see
   relay_watermark.pml): the relay pass (claimBulk's read and take,
   publish, mark) and the writer (commit, claimByID, rowLease). */

#ifdef NO_LATE_READ
#define LATE_ON 0
#else
#define LATE_ON 1
#endif

/* e is a candidate of r's bulk read: committed (in the statement's
   snapshot), synced_at NULL, and per-row, or a range row (seq > F.seq),
   or a late row (seq <= F.seq, not in F.snap) */
#define PERROW(e) (HAS(committed, e) && !HAS(synced, e) && HAS(parked, e))
#define RANGE(r, e) (HAS(committed, e) && !HAS(synced, e) && !HAS(parked, e) && SEQ(e) > mem[r].fseq)
#define LATE(r, e) (LATE_ON && HAS(committed, e) && !HAS(synced, e) && !HAS(parked, e) && SEQ(e) <= mem[r].fseq && !HAS(mem[r].fsnap, e))
#define CAND(r, e) (PERROW(e) || RANGE(r, e) || LATE(r, e))
/* the LIMITs may end the result before a late row (cs = its index: the
   result holds seq <= cs): it was beyond the late part's LIMIT, or lower
   seqs (other partitions', per-row ones) filled the statement's. Cuts
   that drop only range or per-row rows are left out: they only leave
   the front behind. Like faults, cuts stop after FMAX (the other rows
   get claimed), or nothing would ever be bound to be published. */
#define CUTS(r, cs) (now <= FMAX && LATE(r, cs))

/* claimBulk's read (Go: owner.claim, owner.readBulk): under mu expire,
   the claimable partition with its token and front; then one statement
   with snapshot S = the committed transactions: per-row, range and late
   rows, the result cut after seq cs. rCut: a late row was cut. */
inline readBulk(r, cs) {
	expire(r);
	mem[r].doneSince[0] = 0;
	rTok[r] = (CLAIMABLE(r) -> mem[r].tok : NONE);
	rSnap[r] = committed;
	rRes[r] = 0; rLate[r] = 0; rPR[r] = 0; rLeased[r] = 0; rCut[r] = 0; rHold[r] = 0;
	if
	:: rTok[r] != NONE ->
		for (e : 0 .. NE-1) {
			if
			:: CAND(r, e) && SEQ(e) <= cs ->
				rRes[r] = rRes[r] | BIT(e);
				if :: PERROW(e) -> rPR[r] = rPR[r] | BIT(e) :: else fi;
				if :: LATE(r, e) -> rLate[r] = rLate[r] | BIT(e) :: else fi;
				if :: HAS(rowLeased, e) && lockedUntil[e] > now -> rLeased[r] = rLeased[r] | BIT(e) :: else fi
			:: LATE(r, e) && SEQ(e) > cs -> rCut[r] = 1
			:: else
			fi
		}
	:: else
	fi;
	printf("t%d r%d claimBulk: read %d (late %d, per-row %d, cut %d) front (%d, %d) S %d\n", now, r, rRes[r], rLate[r], rPR[r], rCut[r], mem[r].fseq, mem[r].fsnap, rSnap[r]);
	if
	:: rRes[r] != 0 || (rTok[r] != NONE && rSnap[r] != mem[r].fsnap) -> pPhase[r] = 2
	:: else -> rTok[r] = 0; rSnap[r] = 0; passDone[r] = 1
	fi
}

/* claimBulk's take under mu (Go: ledger.take). The partition must still
   be claimable under the read's token. If a late row was cut, the front
   does not move and the late rows of the result are parked at once (one
   in ahead gets synced_at instead, one in flight stays with its claim);
   LATE_CUT_ADVANCE moves it as if nothing were cut. Else the front moves
   to (last range row, S). A row is taken if it is not in flight, not
   finished since the read began, not leased, and its aggregate is not
   busy and had nothing skipped earlier in this read. A range or late row
   not taken is resolved (in ahead), open (in flight elsewhere) or to be
   parked (held); the rows taken are open in the new segment. */
inline takeBulk(r) {
	busyAggs(r);
	move = (rTok[r] != NONE && CLAIMABLE(r) && mem[r].tok == rTok[r]);
	a = 0; sOpen = 0; sPark = 0; nseq = mem[r].fseq;
#ifndef PARK_NO_HOLD
	/* a row waiting in a park list is read by no one until the heartbeat
	   parks it, and a read that began before it was parked did not see
	   it: its aggregate stays held */
	a = rHold[r];
	for (k : 0 .. NS-1) {
		for (e : 0 .. NE-1) {
			if :: HAS(mem[r].spark[k], e) -> a = a | BIT(AGG(e)) :: else fi
		}
	};
#endif
#ifndef LATE_CUT_ADVANCE
	if
	:: move && rCut[r] ->
		move = 0;
#ifdef PARK_AHEAD
		parked = parked | (rLate[r] & ~INFLIGHT(r));
#else
		parked = parked | (rLate[r] & ~INFLIGHT(r) & ~mem[r].ahead);
		synced = synced | (rLate[r] & mem[r].ahead);
		mem[r].ahead = mem[r].ahead & ~rLate[r];
#endif
		rRes[r] = rRes[r] & ~rLate[r];
		/* they hold their aggregates back in this read */
		for (e : 0 .. NE-1) {
			if :: HAS(rLate[r], e) -> a = a | BIT(AGG(e)) :: else fi
		}
	:: else
	fi;
#endif
	if
	:: rTok[r] != NONE && CLAIMABLE(r) && mem[r].tok == rTok[r] ->
		for (e : 0 .. NE-1) {
			if
			:: HAS(rRes[r], e) ->
				ok = !HAS(a, AGG(e)) && !HAS(INFLIGHT(r), e) && !HAS(n, AGG(e)) && !HAS(rLeased[r], e) && !HAS(mem[r].doneSince[0], e);
				if
				:: HAS(rPR[r], e) ->
					/* per-row */
					if
					:: ok -> mem[r].hand[0] = mem[r].hand[0] | BIT(e)
					:: else -> a = a | BIT(AGG(e))
					fi
				:: else ->
					if :: SEQ(e) > nseq -> nseq = SEQ(e) :: else fi;
					if
					:: HAS(mem[r].ahead, e) -> mem[r].ahead = mem[r].ahead & ~BIT(e)
					:: !HAS(mem[r].ahead, e) && HAS(INFLIGHT(r), e) -> sOpen = sOpen | BIT(e); a = a | BIT(AGG(e))
					:: !HAS(mem[r].ahead, e) && !HAS(INFLIGHT(r), e) && ok ->
						mem[r].hand[0] = mem[r].hand[0] | BIT(e); sOpen = sOpen | BIT(e)
					:: else -> sPark = sPark | BIT(e); a = a | BIT(AGG(e))
					fi
				fi
			:: else
			fi
		};
		if
		:: move && (nseq != mem[r].fseq || rSnap[r] != mem[r].fsnap) ->
			assert(mem[r].nseg < NS);
			mem[r].sto[mem[r].nseg] = nseq; mem[r].ssnap[mem[r].nseg] = rSnap[r];
			mem[r].sopen[mem[r].nseg] = sOpen; mem[r].spark[mem[r].nseg] = sPark;
			mem[r].nseg++;
			mem[r].fseq = nseq; mem[r].fsnap = rSnap[r]
		:: else -> assert(sOpen == 0 && sPark == 0)
		fi
	:: else
	fi;
	mem[r].reg[0] = mem[r].hand[0];
	mem[r].ftok[0] = rTok[r]; mem[r].seen[0] = rSnap[r];
	mem[r].stale[0] = pStale[r]; pStale[r] = 0;
	printf("t%d r%d claimBulk: take %d, front (%d, %d), segments %d\n", now, r, mem[r].hand[0], mem[r].fseq, mem[r].fsnap, mem[r].nseg);
	rTok[r] = 0; rSnap[r] = 0; rRes[r] = 0; rLate[r] = 0; rPR[r] = 0; rLeased[r] = 0; rCut[r] = 0; rHold[r] = 0;
	mem[r].doneSince[0] = 0;
	if
	:: mem[r].hand[0] != 0 -> mem[r].dl[0] = now + CL; pPhase[r] = 3
	:: else -> mem[r].ftok[0] = 0; mem[r].seen[0] = 0; mem[r].stale[0] = 0; pPhase[r] = 0; passDone[r] = 1
	fi
}

#define READY(r) (RUNNING(r) && !passDone[r] && pPhase[r] == 0 && CLAIMABLE(r))
proctype pass(byte r) {
end:
	do
	:: d_step { READY(r) -> readBulk(r, NE) }
	:: d_step { READY(r) && CUTS(r, 0) -> readBulk(r, 0) }
	:: d_step { READY(r) && CUTS(r, 1) -> readBulk(r, 1) }
	:: d_step { READY(r) && CUTS(r, 2) -> readBulk(r, 2) }
	:: d_step { RUNNING(r) && pPhase[r] == 2 -> takeBulk(r) }
	:: d_step { alive[r] && !paused[r] && pPhase[r] == 3 ->
		/* publish, then mark (a crash in between is one after the mark:
		   the delivery of an event with an xid is durable only once the
		   heartbeat records it) */
		printf("t%d r%d claimBulk: publish and mark %d\n", now, r, mem[r].hand[0]);
		publish(r, 0); mark(r, 0); pPhase[r] = 0; passDone[r] = 1 }
	od
}

/* ---- the writer: commits e0, e1, e2, each in its own transaction, in
   any order, at most one a window, each in a process that is up; then
   publishes it right after commit (claimByID). ---- */
#define HOST(r) (alive[r] && !paused[r] && !gone[r])

/* rowLease (Go: owner.leaseUnowned): a process that relays leases no
   row (the event is left to the relays); else no live owner -> lease
   the event if pending, the first undelivered of its aggregate and not
   leased; else leave it to the owner */
inline rowLease() {
	isHead(wNext);
	if
	:: !RELAYING(wProc) && leaseUntil <= now && ok && !DELIVERED(wNext) && !(HAS(rowLeased, wNext) && lockedUntil[wNext] > now) ->
		rowLeased = rowLeased | BIT(wNext); lockedUntil[wNext] = now + CL;
		mem[wProc].hand[1] = BIT(wNext); mem[wProc].row[1] = 1; mem[wProc].dl[1] = now + CL;
		mem[wProc].seen[1] = committed;
		printf("t%d r%d claimByID e%d: rowLease\n", now, wProc, wNext);
		wPhase = 5
	:: else -> printf("t%d r%d claimByID e%d: left to the owner\n", now, wProc, wNext); wPhase = 0
	fi
}

/* claimByID after commit (Go: Outbox.Publish -> Store.Claim(IDs) ->
   owner.claim), some time after the commit, in two steps as in Go.

   The read (owner.readIDs): under mu expire; the partition claimable
   here -> its token and front F, then one statement: the event, pending
   in the database (synced_at NULL, W does not cover it) and not
   row-leased, and its blockers: the earlier committed events of its
   aggregate with synced_at NULL that F does not cover (per-row, after
   F.seq, or late: seq <= F.seq, not in F.snap). What F covers was read
   by a claim here: its fate is in memory (delivered, in flight, to be
   parked), and the take looks there. BYID_NO_LATE leaves the late ones
   out. Not claimable -> rowLease, at once. */
inline claimByIDRead() {
	expire(wProc);
	if
	:: CLAIMABLE(wProc) ->
		wTok = mem[wProc].tok; wHold = 0; mem[wProc].doneSince[1] = 0;
		wPend = !DELIVERED(wNext) && !(HAS(rowLeased, wNext) && lockedUntil[wNext] > now);
		wBlk = 0;
		for (k : 0 .. NE-1) {
			if
#ifdef BYID_NO_LATE
			:: k < wNext && AGG(k) == AGG(wNext) && HAS(committed, k) && !HAS(synced, k) && (HAS(parked, k) || SEQ(k) > mem[wProc].fseq) ->
#else
			:: k < wNext && AGG(k) == AGG(wNext) && HAS(committed, k) && !HAS(synced, k) && !FRONT(wProc, k) ->
#endif
				wBlk = wBlk | BIT(k)
			:: else
			fi
		};
		wCommitted = committed;
		printf("t%d r%d claimByID e%d: read (pending %d, blockers %d, front (%d, %d))\n", now, wProc, wNext, wPend, wBlk, mem[wProc].fseq, mem[wProc].fsnap);
		wPhase = 2
	:: else -> rowLease()
	fi
}

/* The take (ledger.take), under mu: the partition still claimable under
   the read's token; the event not covered by the front (a row the front
   covers is its segment's: delivered, in flight, or to be parked;
   BYID_COVERED takes it), not ahead, not in flight, not finished since
   the read began; its aggregate not busy, not held by a row in a park
   list or parked since the read began (BYID_NO_HOLD drops that); and
   every blocker the read found delivered by ID here since (in ahead) or
   covered by the front by now (read by a bulk claim since: its fate is
   in memory, as above). */
inline claimByIDTake() {
	expire(wProc);
	busyAggs(wProc);
	a = 0;
#ifndef BYID_NO_HOLD
	a = wHold;
	for (k : 0 .. NS-1) {
		for (e : 0 .. NE-1) {
			if :: HAS(mem[wProc].spark[k], e) -> a = a | BIT(AGG(e)) :: else fi
		}
	};
#endif
	/* blockers the front covers by now were read by a bulk claim since:
	   in memory, as above */
	m = wBlk & ~mem[wProc].ahead;
	for (k : 0 .. NE-1) {
		if :: HAS(m, k) && FRONT(wProc, k) -> m = m & ~BIT(k) :: else fi
	};
	ok = wPend && CLAIMABLE(wProc) && mem[wProc].tok == wTok && !HAS(mem[wProc].ahead, wNext) && !HAS(INFLIGHT(wProc), wNext) &&
		!HAS(mem[wProc].doneSince[1], wNext) && !HAS(n, AGG(wNext)) && !HAS(a, AGG(wNext)) && m == 0;
#ifndef BYID_COVERED
	ok = ok && !FRONT(wProc, wNext);
#endif
	if
	:: ok ->
		mem[wProc].hand[1] = BIT(wNext); mem[wProc].reg[1] = BIT(wNext);
		mem[wProc].ftok[1] = wTok; mem[wProc].dl[1] = now + CL;
		mem[wProc].seen[1] = wCommitted;
		printf("t%d r%d claimByID e%d: take\n", now, wProc, wNext);
		wPhase = 5
	:: else -> printf("t%d r%d claimByID e%d: not taken\n", now, wProc, wNext); wPhase = 0
	fi;
	wTok = 0; wPend = 0; wBlk = 0; wHold = 0; wCommitted = 0; mem[wProc].doneSince[1] = 0
}

inline commit(p, ev) {
	committed = committed | BIT(ev); wLast = now + 1; wNext = ev; wProc = p; wPhase = 1;
	printf("t%d r%d commit e%d\n", now, p, ev)
}
#define CAN_COMMIT(p, ev) (wPhase == 0 && !HAS(committed, ev) && wLast <= now && now <= WMAX && HOST(p))

proctype writer() {
end:
	do
	:: d_step { CAN_COMMIT(0, 0) -> commit(0, 0) }
	:: d_step { CAN_COMMIT(0, 1) -> commit(0, 1) }
	:: d_step { CAN_COMMIT(0, 2) -> commit(0, 2) }
	:: d_step { CAN_COMMIT(1, 0) -> commit(1, 0) }
	:: d_step { CAN_COMMIT(1, 1) -> commit(1, 1) }
	:: d_step { CAN_COMMIT(1, 2) -> commit(1, 2) }
	:: d_step { wPhase == 1 && W_ALIVE -> claimByIDRead() }
	:: d_step { wPhase == 2 && W_ALIVE -> claimByIDTake() }
	:: d_step { wPhase == 5 && W_ALIVE ->
		printf("t%d r%d claimByID: publish and mark %d\n", now, wProc, mem[wProc].hand[1]);
		publish(wProc, 1); mark(wProc, 1); wPhase = 0 }
	od
}
