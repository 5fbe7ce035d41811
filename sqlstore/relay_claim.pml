/* relay_claim.pml: the claims of the relay model (see relay.pml): the relay
   pass (claimBulk, publish, mark) and the writer (commit, claimByID,
   rowLease, publish, mark). */

/* ---- the relay pass: claimBulk, publish, mark. Go: Outbox.step ->
   Store.Claim -> owner.claimBulk (read, take); Outbox.deliver ->
   Publisher.Publish, then Store.MarkSynced (mark, fence) ---- */
proctype pass(byte r) {
end:
	do
	:: d_step { RUNNING(r) && !passDone[r] && pPhase[r] == 0 ->
		/* claimBulk under mu: expire; snapshot the claimable partitions
		   with their tokens, and the busy aggregates. Then the read (no
		   lock, no write): the pending events of those partitions, busy
		   aggregates left out; a running row lease is read as leased.
		   Go: owner.claim (ledger.claimable, owner.readBulk) */
		expire(r);
		busyAggs(r);
		mem[r].doneSince[0] = 0;
		readM[r] = 0; readLeased[r] = 0;
		for (j : 0 .. NP-1) {
			snapTok[r*NP + j] = (CLAIMABLE(r, j) -> mem[r].tok[j] : NONE)
		};
		for (e : 0 .. NE-1) {
			if
			:: HAS(committed, e) && !HAS(synced, e) && snapTok[r*NP + PART(e)] != NONE && !HAS(n, AGG(e)) ->
				readM[r] = readM[r] | BIT(e);
				if :: HAS(rowLeased, e) && lockedUntil[e] > now -> readLeased[r] = readLeased[r] | BIT(e) :: else fi
			:: else
			fi
		};
		printf("t%d r%d claimBulk: read %d (leased %d)\n", now, r, readM[r], readLeased[r]);
		if
		:: readM[r] != 0 -> pPhase[r] = 2
		:: else -> for (j : 0 .. NP-1) { snapTok[r*NP + j] = 0 }; readLeased[r] = 0; mem[r].doneSince[0] = 0; passDone[r] = 1
		fi }
	:: d_step { RUNNING(r) && pPhase[r] == 2 ->
		/* claimBulk's take under mu: keep a row only if its partition
		   is still claimable with the same token, it is not in flight
		   and not finished since the read began, its aggregate is not
		   busy, it is not row-leased, and nothing earlier of its
		   aggregate was skipped in this read. Go: ledger.take */
		busyAggs(r);
		a = 0; /* aggregates skipped in this read */
		for (e : 0 .. NE-1) {
			if
			:: HAS(readM[r], e) ->
				p = PART(e);
#ifdef NO_RECHECK
				ok = 1;
#else
				ok = (CLAIMABLE(r, p) && mem[r].tok[p] == snapTok[r*NP + p]);
#endif
				ok = ok && !HAS(a, AGG(e)) && !HAS(INFLIGHT(r), e) && !HAS(n, AGG(e)) && !HAS(readLeased[r], e);
#ifndef NO_FINISHED
				ok = ok && !HAS(mem[r].doneSince[0], e);
#endif
				if
				:: ok ->
					mem[r].hand[0] = mem[r].hand[0] | BIT(e);
					mem[r].ftok[p] = snapTok[r*NP + p]
				:: else -> a = a | BIT(AGG(e))
				fi
			:: else
			fi
		};
		mem[r].reg[0] = mem[r].hand[0];
		mem[r].stale[0] = pStale[r]; pStale[r] = 0;
		printf("t%d r%d claimBulk: take %d\n", now, r, mem[r].hand[0]);
		for (j : 0 .. NP-1) { snapTok[r*NP + j] = 0 };
		readM[r] = 0; readLeased[r] = 0; mem[r].doneSince[0] = 0;
		if
		:: mem[r].hand[0] != 0 -> mem[r].dl[0] = now + CL; pPhase[r] = 3
		:: else -> pPhase[r] = 0; passDone[r] = 1
		fi }
	:: d_step { alive[r] && !paused[r] && pPhase[r] == 3 ->
		printf("t%d r%d claimBulk: publish %d\n", now, r, mem[r].hand[0]);
		publish(r, 0); pPhase[r] = 4 }
	:: d_step { alive[r] && !paused[r] && pPhase[r] == 4 ->
		printf("t%d r%d claimBulk: mark %d\n", now, r, mem[r].reg[0]);
		mark(r, 0);
		mem[r].ftok[0] = 0; mem[r].ftok[1] = 0; mem[r].dl[0] = 0;
		pPhase[r] = 0; passDone[r] = 1 }
	od
}

/* ---- the writer: commits e0, e1, e2 one after the other, each in a
   process that is up (with a relay or not), and publishes each at once
   after commit (claimByID, publish, mark) ---- */
#define HOST(r) (alive[r] && !paused[r] && !gone[r])
#define W_ALIVE (alive[wProc] && !paused[wProc])

/* rowLease: a process that relays leases no row: the event is left to
   the relays, its own among them (a lease of a process killed before its
   mark would hold the aggregate for the whole lease). Else the
   partition's row read under a share lock (a heartbeat holding it is
   waited for: phase 4); no live owner -> lease the event if pending, the
   first undelivered of its aggregate and not leased; else leave it to
   the owner. Go: owner.claim (IDs) -> owner.leaseUnowned */
inline rowLease() {
	p = PART(wNext);
	isHead(wNext, LOOSE_ROWLEASE_ON);
	if
	:: !RELAYING(wProc) && leaseUntil[p] <= now && ok && !HAS(synced, wNext) && !(HAS(rowLeased, wNext) && lockedUntil[wNext] > now) ->
		rowLeased = rowLeased | BIT(wNext); lockedUntil[wNext] = now + CL;
		mem[wProc].hand[1] = BIT(wNext); mem[wProc].row[1] = 1; mem[wProc].dl[1] = now + CL;
		printf("t%d r%d claimByID e%d: rowLease\n", now, wProc, wNext);
		wPhase = 5
	:: else -> printf("t%d r%d claimByID e%d: left to the owner\n", now, wProc, wNext); wPhase = 0; wNext++
	fi
}

/* commit, then claimByID under mu: expire; the partition claimable here
   -> the read (readIDs, no lock: pending, first undelivered of its
   aggregate, not row-leased), then take (phase 3); else rowLease.
   Go: Outbox.Publish after commit -> Store.Claim(IDs) -> owner.claim (owner.readIDs) */
inline commitAndClaim() {
	committed = committed | BIT(wNext); wLast = now + 1;
	printf("t%d r%d commit e%d\n", now, wProc, wNext);
	expire(wProc);
	p = PART(wNext);
	if
	:: CLAIMABLE(wProc, p) ->
		wTok = mem[wProc].tok[p]; mem[wProc].doneSince[1] = 0;
		isHead(wNext, LOOSE_CLAIMBYID_ON);
		wHas = (!HAS(synced, wNext) && ok && !(HAS(rowLeased, wNext) && lockedUntil[wNext] > now));
		printf("t%d r%d claimByID e%d: read %d\n", now, wProc, wNext, wHas);
		wPhase = 3
	:: else ->
		/* a partition row a heartbeat holds locked counts as owned:
		   SKIP LOCKED, the event is left to the relays.
		   Go: owner.unowned */
		if
		:: lockedBy[p] == NONE -> rowLease()
		:: else -> printf("t%d r%d claimByID e%d: partition locked, left to the relay\n", now, wProc, wNext); wPhase = 0; wNext++
		fi
	fi
}

proctype writer() {
end:
	do
	:: d_step { wPhase == 0 && wNext < NE && wLast <= now && now <= WMAX && HOST(0) -> wProc = 0; commitAndClaim() }
	:: d_step { wPhase == 0 && wNext < NE && wLast <= now && now <= WMAX && HOST(1) -> wProc = 1; commitAndClaim() }
	:: d_step { wPhase == 3 && W_ALIVE ->
		/* claimByID's take under mu, as claimBulk's. Go: ledger.take */
		p = PART(wNext);
		busyAggs(wProc);
#ifdef NO_RECHECK
		ok = 1;
#else
		ok = (CLAIMABLE(wProc, p) && mem[wProc].tok[p] == wTok);
#endif
		ok = ok && wHas && !HAS(INFLIGHT(wProc), wNext) && !HAS(n, AGG(wNext));
#ifndef NO_FINISHED
		ok = ok && !HAS(mem[wProc].doneSince[1], wNext);
#endif
		if
		:: ok ->
			mem[wProc].hand[1] = BIT(wNext); mem[wProc].reg[1] = BIT(wNext);
			mem[wProc].ftok[NP + p] = wTok; mem[wProc].dl[1] = now + CL; mem[wProc].stale[1] = wStale;
			printf("t%d r%d claimByID e%d: take\n", now, wProc, wNext);
			wPhase = 5
		:: else -> printf("t%d r%d claimByID e%d: not taken\n", now, wProc, wNext); wPhase = 0; wNext++ /* left to the relay */
		fi;
		wTok = 0; wHas = 0; wStale = 0; mem[wProc].doneSince[1] = 0 }
	:: d_step { wPhase == 5 && W_ALIVE ->
		printf("t%d r%d claimByID: publish %d\n", now, wProc, mem[wProc].hand[1]);
		publish(wProc, 1); wPhase = 6 }
	:: d_step { wPhase == 6 && W_ALIVE ->
		printf("t%d r%d claimByID: mark %d\n", now, wProc, mem[wProc].hand[1]);
		mark(wProc, 1);
		mem[wProc].ftok[NP] = 0; mem[wProc].ftok[NP + 1] = 0; mem[wProc].dl[1] = 0;
		wPhase = 0; wNext++ }
	od
}
