/* relay_heartbeat.pml: the heartbeat of the relay model (see relay.pml). */

/* ---- the heartbeat goroutine. Go: owner.heartbeat, every
   HeartbeatInterval, one transaction ---- */

/* steps 1-4: in the transaction seen_until, live, share, renew (whose
   UPDATE locks the rows of mine); then under mu drain beyond the share
   (prefer partitions with nothing in flight), and giveBack the draining
   ones with nothing in flight now (R1: in the snapshot).
   Go: owner.beatTx (register, share, renew), ledger.decide under mu */
inline hbOpen(r) {
	sentAt[r] = now;
	n = 1;
	for (j : 0 .. NR-1) {
		if :: j != r && seenUntil[j] > now -> n++ :: else fi
	};
	hShare[r] = (leaving[r] -> 0 : (NP + n - 1) / n);
	hMine[r] = 0;
	/* renew only leases that still hold: an own partition whose lease
	   ran out is free, taken again below with the token raised.
	   Go: owner.beatTx ("renew", ownedIn) */
	for (j : 0 .. NP-1) {
		if :: owner[j] == r && leaseUntil[j] > now -> hMine[r] = hMine[r] | BIT(j); lockedBy[j] = r :: else fi
	};
	inflightParts(r);
#ifdef STALE_INFLIGHT
	inflightP = hSnap[r];
#endif
	need = (CNT(hMine[r]) > hShare[r] -> CNT(hMine[r]) - hShare[r] : 0);
	mem[r].drain = mem[r].drain & hMine[r];
	do
	:: CNT(mem[r].drain) > need ->
		if
		:: HAS(mem[r].drain, 0) -> mem[r].drain = mem[r].drain & ~BIT(0)
		:: else -> mem[r].drain = mem[r].drain & ~BIT(1)
		fi
	:: CNT(mem[r].drain) < need ->
		/* highest first, those with nothing in flight first */
		if
		:: HAS(hMine[r], 1) && !HAS(mem[r].drain, 1) && !HAS(inflightP, 1) -> mem[r].drain = mem[r].drain | BIT(1)
		:: else ->
			if
			:: HAS(hMine[r], 0) && !HAS(mem[r].drain, 0) && !HAS(inflightP, 0) -> mem[r].drain = mem[r].drain | BIT(0)
			:: else ->
				if
				:: HAS(hMine[r], 1) && !HAS(mem[r].drain, 1) -> mem[r].drain = mem[r].drain | BIT(1)
				:: else -> mem[r].drain = mem[r].drain | BIT(0)
				fi
			fi
		fi
	:: else -> break
	od;
	hGive[r] = mem[r].drain & ~inflightP;
	hSnap[r] = 0;
	printf("t%d r%d heartbeat: share %d mine %d drain %d giveBack %d\n", now, r, hShare[r], hMine[r], mem[r].drain, hGive[r])
}

/* steps 5-7: giveBack, take free partitions (lease_until <= now, FOR
   UPDATE SKIP LOCKED) up to the share with the token raised, commit;
   then under mu parts = mine with localUntil = sentAt + TTL, the
   draining partitions not given back still draining. Leave ends here:
   nothing owned, nothing in flight: delete relays(me).
   Go: owner.beatTx (give back, take, commit), ledger.adopt, owner.leave */
inline hbCommit(r) {
	seenUntil[r] = now + LEASE;
	hNew[r] = 0;
	for (j : 0 .. NP-1) {
		if
		:: HAS(hMine[r], j) && HAS(hGive[r], j) ->
			owner[j] = NONE; leaseUntil[j] = now
		:: HAS(hMine[r], j) && !HAS(hGive[r], j) ->
			leaseUntil[j] = now + LEASE; hNew[r] = hNew[r] | BIT(j)
		:: else
		fi;
		if :: lockedBy[j] == r -> lockedBy[j] = NONE :: else fi
	};
	for (j : 0 .. NP-1) {
		if
		:: CNT(hNew[r]) < hShare[r] && !HAS(hMine[r], j) && leaseUntil[j] <= now && lockedBy[j] == NONE ->
			owner[j] = r; ptoken[j]++; leaseUntil[j] = now + LEASE;
			hNew[r] = hNew[r] | BIT(j)
		:: else
		fi
	};
	mem[r].own = hNew[r];
	mem[r].drain = mem[r].drain & hNew[r];
	for (j : 0 .. NP-1) {
		if
		:: HAS(hNew[r], j) -> mem[r].tok[j] = ptoken[j]; mem[r].until[j] = sentAt[r] + LEASE
		:: else -> mem[r].tok[j] = 0; mem[r].until[j] = 0
		fi
	};
	printf("t%d r%d heartbeat: commit, parts %d\n", now, r, hNew[r]);
	sentAt[r] = 0; hShare[r] = 0; hMine[r] = 0; hGive[r] = 0; hNew[r] = 0;
	hbDone[r] = 1; renewed[r] = 1;
	if
	:: leaving[r] && mem[r].own == 0 && INFLIGHT(r) == 0 && mem[r].hand[0] == 0 && mem[r].hand[1] == 0 && !(wPhase != 0 && wProc == r) ->
		seenUntil[r] = 0; gone[r] = 1; printf("t%d r%d leave: gone\n", now, r)
	:: else
	fi
}

/* with nothing to drain the transaction has nothing to wait for: it
   commits in the same step (a serial order of the transactions) */
#define HB_NEXT(r) if :: mem[r].drain == 0 -> hbCommit(r); hPhase[r] = 0 :: else -> hPhase[r] = 2 fi

proctype heartbeat(byte r) {
end:
	do
#ifdef STALE_INFLIGHT
	:: d_step { RUNNING(r) && !hbDone[r] && hPhase[r] == 0 ->
		/* R1: what is in flight, read before the transaction */
		inflightParts(r); hSnap[r] = inflightP;
		printf("t%d r%d heartbeat: snapshot in flight %d\n", now, r, hSnap[r]);
		hPhase[r] = 1 }
	:: d_step { RUNNING(r) && hPhase[r] == 1 -> hbOpen(r); HB_NEXT(r) }
#else
	:: d_step { RUNNING(r) && !hbDone[r] && hPhase[r] == 0 -> hbOpen(r); HB_NEXT(r) }
#endif
	:: d_step { RUNNING(r) && hPhase[r] == 2 -> hbCommit(r); hPhase[r] = 0 }
	:: d_step { RUNNING(r) && hPhase[r] == 0 && !leaving[r] && leaves > 0 && now <= FMAX ->
		/* leave (SIGTERM): under mu every partition draining.
		   Go: owner.leave, ledger.leave (from Outbox.leave) */
		leaves--; leaving[r] = 1; mem[r].drain = mem[r].own;
		printf("t%d r%d leave: all draining\n", now, r) }
	od
}
