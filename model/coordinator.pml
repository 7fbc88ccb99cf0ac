/*
 * coordinator.pml -- a Promela model of the group-commit pipeline of
 * github.com/groupcommit/coordinator, as coordinator_loop.go,
 * flusher_loop.go, pipeline.go, watermarks.go, pausable.go, view.go and
 * handle.go implement it.  See README.md in this directory
 * for the mapping of every variable and process to the Go code, the
 * properties, the bounds and what is abstracted away.
 *
 * Scenarios (exactly one): -DSAFE, -DLIVE, -DQUIET, -DCOALESCE.
 * Options: -DNW=2|3 writers/channels, -DMPF=1|2 (MaxPendingFlushes),
 *          -DFS=n (FlushSize, in writes), -DQCAP=n (QueueCapacity),
 *          -DFLUSH (a Flush caller), -DPAUSE, -DFAIL, -DSTOP, -DTIMER,
 *          -DIDLE=n (idleRoundsToDelist), -DGATHER=n (at most n rounds
 *          of gathering before a freeze for a waiter; 0: no bound),
 *          -DPARKED (a waiting writer always parked on its handle before
 *          its write is applied; see completeAt).
 * Negative variants (the defects that were fixed; checks that MUST fail):
 *          -DOLD_SYNC    the flusher syncs only once written >= the highest
 *                        epoch demanded, or when the flush queue is empty;
 *          -DOLD_DEMAND  demand is a sticky maximum (wantWritten,
 *                        wantDurable) that an abandoned wait leaves raised.
 */

#ifndef NW
#define NW 2            /* writers, one channel each */
#endif
#ifndef MPF
#define MPF 1           /* Config.MaxPendingFlushes: capacity of flushQ */
#endif
#ifndef FS
#define FS 2            /* Config.FlushSize, counted in writes */
#endif
#ifndef QCAP
#define QCAP 1          /* Config.QueueCapacity, in slots */
#endif
#ifndef IDLE
#define IDLE 1          /* idleRoundsToDelist (16 in the code; see README, Bounds) */
#endif
#if defined(SAFE) || defined(COALESCE)
#define C_G (FS > 2 ? FS : 2)      /* G: exact adjacency, gaps stay > 1 */
#else
#define C_G (FS > 2 ? FS - 1 : 1)  /* G: epoch gaps wider than G are compressed */
#endif
#define FAR 255         /* an epoch beyond every epoch of the run */

#if defined(COALESCE)
#ifndef NFC
#define NFC 1           /* Flush(Durable) callers (2: beyond 4 GB of states) */
#endif
#define NF NFC
#elif defined(FLUSH)
#define NF 1
#else
#define NF 0
#endif
#if NF > 0
#define NFA NF
#else
#define NFA 1           /* arrays need one element */
#endif
#define NSLOT (NW+NF)   /* waiter slots: one per writer, one per Flush caller */

#ifndef GATHER
#define GATHER 2        /* rounds of gathering at most (0: no bound) */
#endif
/*
 * pipeline.returning: the flusher adds the waiters a pass woke (wk), a turn
 * takes off the writes it applied.  With GATHER 1 it is never read (the
 * loop ends after its first round), so it is not kept.
 */
#if GATHER != 1
#define WOKEN(k)         wk = wk + (k)
#define EXPECT_RETURNING ret = ret + wk; wk = 0; assert(ret < 16)
#define RETURNED(k)      if :: ret > 0 -> ret = (ret > (k) -> ret - (k) : 0) :: else fi
#define RETURNING        ret
#else
#define WOKEN(k)         skip
#define EXPECT_RETURNING skip
#define RETURNED(k)      skip
#define RETURNING        1
#endif

/* levels */
#define L_APP 1
#define L_WR  2
#define L_DUR 3

/* waiter slot states */
#define W_IDLE   0
#define W_LISTED 1      /* in the watermark's heap: it is demand */
#define W_SIG    2      /* popped and signalled by advance or fail */
#define W_GONE   3      /* removed by the waiter itself: ctx done */
#define W_POP    4      /* unlisted by raise; its signal (wakeList.wake) not sent yet */

/* a writer's waiter on its write handle (completion.waiters, then set);
 * once completeAt moved it to the watermark it is back to H_NONE, listed
 * there (wst, wlev, wep) like a waiter waitLevel listed */
#define H_NONE   0      /* not parked on the handle */
#define H_PARKED 1      /* on the handle's list */
#define H_SIG    2      /* completeAt signalled it (error, epoch reached, or failed) */

/* freeze reasons (FlushReason) */
#define R_SIZE     1
#define R_WAIT     2
#define R_EXPLICIT 3
#define R_STOP     4
#define R_INTERVAL 5

/* ---------------------------------------------------------------- state */

/* coordinator goroutine (owned) */
byte next = 1;          /* Coordinator.next */
byte deltaStart = 1;    /* Coordinator.deltaStart */
byte cjs, cjl;          /* the flushJob freeze is dispatching (first, last) */

/* watermarks (levels) and their failure (watermark.err != nil) */
byte applied, written, durable;
bit aErr, wErr, dErr, sdErr;

/* waiters: the watermarks' heaps, one slot per goroutine that may wait */
byte wst[NSLOT];        /* W_* */
byte wlev[NSLOT];       /* level waited for */
byte wep[NSLOT];        /* waiter.epoch */
byte ask[NSLOT];        /* ghost: the level of the request in progress */

/* explicit sync requests: pipeline.syncReq, pipeline.syncDone */
byte syncReq, syncDone;
byte ret;               /* pipeline.returning */
byte fsn[NFA];          /* the syncN each Flush(Durable) registered */
byte sst[NFA];          /* its wait on syncDone: W_* */

/* view hub */
byte vWritten;          /* View.Written of the latest view */
bit  vFailed;           /* the latest view has Err set (final) */

/* failure */
bit failRec;            /* pipeline.failErr recorded (under the hub lock) */
bit failedFlag;         /* pipeline.failedFlag: announced */
byte nfail;             /* injected flusher failures (at most one) */

/* busy = queued-or-in-flusher deltas (busyN) + busySync (syncing) */
byte busyN;
bit  syncing;

/* wake-ups */
bit sleeping, wake, kick, timerFired;
byte nfire;             /* timer fires (bounded) */
byte attn;              /* pipeline.attn without stopAttention */
bit stopAttn;           /* stopAttention added */
bit stopping;           /* c.stopping closed */

/* flush queue c.flushQ (job = first, last epoch), and the flusher */
byte qs[MPF], ql[MPF];
byte qlen;
bit  qclosed;           /* close(c.flushQ) */
byte fjs, fjl;          /* the job flushDelta is writing */
byte lastEnd;           /* ghost: last epoch of the last job the flusher took */
byte syncW, syncR;      /* what sync() read: written and syncReq */

/* channels (queue), one per writer */
byte items[NW];         /* queue.items: accepted, not taken */
byte held[NW];          /* queue.held[heldPos:]: taken, not applied */
byte used[NW];          /* accepted + granted - appliedSlots */
byte pend[NW];          /* handles not completed */
bit  paused[NW];        /* queue.paused == pausedFlag */
bit  listed[NW];        /* queue.listed */
bit  rdy[NW];           /* on the ready list (readyList) */
bit  act[NW];        /* on Coordinator.active */
byte idle[NW];          /* queue.idleRounds */
bit  chClosed[NW];      /* queue.closedErr != nil */
byte hep[NW];           /* WriteHandle.epoch of the write being waited for */
byte hpk[NW];           /* the writer's waiter on that handle: H_* */
bit  herr[NW];          /* the handle completed with an error (dropped) */

/* Flush requests (c.ctrl) */
byte offer[NFA];        /* 0 none, 1 offered, 2 taken, 3 replied, 4 taken+abandoned */
byte freply[NFA];       /* flushReply.epoch */
bit  frerr[NFA];        /* flushReply.err != nil */

bit coordDone, flushDone, stopDone;

/* ghosts for properties */
byte lastReason;        /* reason of the last freeze (QUIET only) */
byte nreq, nsync;       /* durability requests, syncs (COALESCE only) */
#ifdef BOUNDS
byte fd0;               /* FlushDelta calls completed while writer 0 waits */
#define FD0_BOUND_WR  (MPF + 2)
#define FD0_BOUND_DUR (2 * (MPF + 1))
#endif

#ifdef OLD_DEMAND
byte wantW, wantD;      /* the old pipeline.wantWritten, wantDurable */
#endif

/* scratch, never live across steps */
hidden byte c_i, c_k, c_lo, c_hi, c_d;
hidden byte dminD, dmaxD;
hidden byte dW;

/* -------------------------------------------------------------- helpers */

#define MARK(l)  ((l) == L_WR -> written : durable)
#define MERR(l)  ((l) == L_WR -> wErr : dErr)
#define WAKEC    if :: sleeping -> sleeping = 0; wake = 1 :: else fi   /* wakeCoordinator */
#define DEPTH(q) (items[q] + held[q])

#ifdef QUIET
#define SETREASON(r) lastReason = r
#else
#define SETREASON(r) skip
#endif
#ifdef COALESCE
#define COUNTREQ nreq++
#else
#define COUNTREQ skip
#endif

/* readyList.add */
inline readyAdd(q) {
  if
  :: !listed[q] -> listed[q] = 1; rdy[q] = 1
  :: else
  fi
}

/* demand: minWait/maxWait of the durable heap, minWait != 0 of the written heap */
inline demand() {
  dminD = 0; dmaxD = 0; dW = 0;
  for (c_i : 0 .. NSLOT-1) {
    if
    :: wst[c_i] == W_LISTED && wlev[c_i] == L_DUR ->
       if :: dminD == 0 || wep[c_i] < dminD -> dminD = wep[c_i] :: else fi;
       if :: wep[c_i] > dmaxD -> dmaxD = wep[c_i] :: else fi
    :: wst[c_i] == W_LISTED && wlev[c_i] == L_WR -> dW = 1
    :: else
    fi
  }
}

#ifdef OLD_DEMAND
#define FREEZE_DEMAND (wantW >= deltaStart)                 /* old demandReady */
#else
#define FREEZE_DEMAND (dW || dmaxD > written)                /* freezeDemand */
#endif

#if defined(OLD_SYNC)
#ifdef OLD_DEMAND
#define SDEM wantD
#else
#define SDEM dmaxD
#endif
/* old maybeSync: demand > durable && written > durable && (written >= demand || len(flushQ) == 0) */
#define SYNC_DEMAND (SDEM > durable && written > durable && (written >= SDEM || qlen == 0))
#elif defined(OLD_DEMAND)
#define SYNC_DEMAND (wantD > durable && written > durable)
#else
#define SYNC_DEMAND (dminD != 0 && dminD <= written)       /* syncDemand */
#endif

/* demandReady (without the byte budget); call demand() first */
#define DEMAND_READY (next > deltaStart && busyN == 0 && !syncing && FREEZE_DEMAND)

#define ANYOFFER (offer[0] == 1 NFOFFER1)
#if NF > 1
#define NFOFFER1 || offer[1] == 1
#else
#define NFOFFER1
#endif

/*
 * watermark.raise (the flusher's): unlist every waiter of level l at or
 * below v, counting them in pw; wakePopped signals them later, after the
 * locks are released.
 */
inline raiseLevel(l, v) {
  for (c_i : 0 .. NSLOT-1) {
    if
    :: wst[c_i] == W_LISTED && wlev[c_i] == l && wep[c_i] <= v -> wst[c_i] = W_POP; pw++
    :: else
    fi
  }
}
/* wakeList.wake: one signal at a time, in any order */
inline wakePopped() {
  do
  :: atomic { wst[0] == W_POP -> wst[0] = W_SIG }
  :: atomic { wst[1] == W_POP -> wst[1] = W_SIG }
#if NSLOT > 2
  :: atomic { wst[2] == W_POP -> wst[2] = W_SIG }
#endif
#if NSLOT > 3
  :: atomic { wst[3] == W_POP -> wst[3] = W_SIG }
#endif
#if NSLOT > 4
  :: atomic { wst[4] == W_POP -> wst[4] = W_SIG }
#endif
  :: else -> break
  od
}
/* watermark.fail: pop and signal every waiter of level l */
inline failLevel(l) {
  for (c_i : 0 .. NSLOT-1) {
    if
    :: wst[c_i] == W_LISTED && wlev[c_i] == l -> wst[c_i] = W_SIG
    :: else
    fi
  }
}
inline wakeSync() {
  for (c_i : 0 .. NFA-1) {
    if :: sst[c_i] == W_LISTED && fsn[c_i] <= syncDone -> sst[c_i] = W_SIG :: else fi
  }
}
inline failSync() {
  for (c_i : 0 .. NFA-1) {
    if :: sst[c_i] == W_LISTED -> sst[c_i] = W_SIG :: else fi
  }
}

/*
 * Epoch compression, for the scenarios where writers write forever (LIVE,
 * QUIET); the others write a few times and keep the exact epochs.
 *
 * Every epoch variable only ever takes the value of another epoch variable
 * (or next - 1, which is applied), and only next grows, by one.  So no
 * value can ever again fall strictly inside a gap between two values
 * below next, and the order of any two values never changes by moving
 * others.  The guards compare epochs, and one measures a distance:
 * next - deltaStart >= FS, the live delta's size, which never exceeds FS
 * (and whose epochs between deltaStart and next are not all held by
 * variables only if FS > 2).  So after each apply, every gap wider than
 * G = max(1, FS-1) between values below next is shrunk to G: no guard's
 * outcome changes, and the state stays finite while writers write forever
 * -- a run in which durable stays behind while written runs away becomes a
 * cycle spin can find.  FAR and the "none" value 0 are never moved.  (The
 * price: with gaps shrunk to 1, two ranges that were not adjacent could
 * look adjacent, so the contiguity assertion at the flusher is exact only
 * in the uncompressed scenarios, SAFE and COALESCE.)
 */
/*
 * compress() is C code (one function in pan.c rather than the same loops
 * inlined at every call site, which made pan.c slow to compile); it runs
 * inside the model's atomic steps.  The same thing in Promela:
 *   lo = 0; do :: lo >= next -> break
 *   :: else -> hi = the least epoch value above lo (next if none);
 *      if hi - lo > G, move every epoch value >= hi (but FAR) down by
 *      hi - lo - G; lo = hi od
 */
#ifdef OLD_DEMAND
#define C_OLDVARS E(now.wantW); E(now.wantD);
#else
#define C_OLDVARS
#endif
#define C_EPOCHS \
  E(now.next); E(now.deltaStart); E(now.cjs); E(now.cjl); E(now.applied); \
  E(now.written); E(now.durable); E(now.vWritten); E(now.fjs); E(now.fjl); \
  E(now.lastEnd); E(now.syncW); C_OLDVARS \
  for (k = 0; k < MPF; k++) { E(now.qs[k]); E(now.ql[k]); } \
  for (k = 0; k < NW; k++) { E(now.hep[k]); } \
  for (k = 0; k < NSLOT; k++) { E(now.wep[k]); } \
  for (k = 0; k < NFA; k++) { E(now.freply[k]); }

c_code {
  static void compress_epochs(void) {
    int lo = 0, hi, d, k;
    while (lo < now.next) {
      hi = now.next;
#define E(v) if ((v) > lo && (v) < hi) hi = (v)
      C_EPOCHS
#undef E
      if (hi - lo > C_G) {
        d = hi - lo - C_G;
#define E(v) if ((v) >= hi && (v) != 255) (v) -= d
        C_EPOCHS
#undef E
        hi = lo + C_G;
      }
      lo = hi;
    }
  }
}
inline compress() {
  c_code { compress_epochs(); };
  assert(next < FAR - 1)
}

/* Coordinator.fail's second half, pipeline.announceFailure */
inline announce() {
  atomic {
    failedFlag = 1;
    wErr = 1; dErr = 1; sdErr = 1;
    failLevel(L_WR); failLevel(L_DUR); failSync();
    kick = 1; wake = 1
  }
}

#ifdef FAIL
#define CANFAIL (nfail == 0 && !failRec)
#else
#define CANFAIL false
#endif

/* ------------------------------------------------------ waiting (any goroutine) */

/* OLD_DEMAND: the old waitLevel raised the sticky demand, then woke or kicked */
inline oldDemand(s, lvl) {
#ifdef OLD_DEMAND
  if
  :: MARK(lvl) < wep[s] ->
     if :: wep[s] > wantW -> wantW = wep[s]; WAKEC :: else fi;
     if :: lvl == L_DUR && wep[s] > wantD -> wantD = wep[s]; kick = 1 :: else fi
  :: else
  fi
#else
  skip
#endif
}
/*
 * watermark.list's listing of goroutine s for level lvl at wep[s] (not
 * reached, not failed), then (after m.mu.Unlock) the parked hook:
 * writtenWaiter / durableWaiter.
 */
inline listBody(s, lvl) {
  wlev[s] = lvl; wst[s] = W_LISTED;
  printf("MSC: goroutine %d waits for level %d at epoch %d\n", s, lvl, wep[s]);
#ifdef BOUNDS
  if :: s == 0 -> fd0 = 0 :: else fi;
#endif
  if :: lvl == L_DUR -> COUNTREQ :: else fi;
#ifndef OLD_DEMAND
  if
  :: lvl == L_DUR && wep[s] <= written -> kick = 1
  :: else -> if :: busyN == 0 && !syncing -> WAKEC :: else fi
  fi
#else
  skip
#endif
}
/*
 * pipeline.waitLevel + watermark.wait for level lvl (Written or Durable)
 * at the epoch in wep[s], by goroutine s.  waitListBody is the check and
 * the listing under the watermark's lock; the caller runs it inside its
 * own atomic step (right after observing a stable condition: its handle
 * complete, a reply received).  It sets lw if the waiter is listed;
 * otherwise the request ended (satisfied or failed) and ask[s] is cleared.
 */
inline waitListBody(s, lvl) {
  oldDemand(s, lvl);
  if
  :: MARK(lvl) >= wep[s] || MERR(lvl) -> wep[s] = 0; ask[s] = 0; compress()
  :: else -> listBody(s, lvl); lw = 1
  fi
}
/* the waiter's result: satisfied if the watermark reached its epoch */
inline waitResult(s, lvl) {
  if
  :: lvl == L_WR && written >= wep[s] -> assert(vWritten >= wep[s])   /* invariant 3 */
  :: else
  fi;
  wst[s] = W_IDLE; wlev[s] = 0; wep[s] = 0; ask[s] = 0; lw = 0;
  compress();
#ifdef BOUNDS
  if :: s == 0 -> fd0 = 0 :: else fi
#endif
}
/* waiter.park: signalled, or (imp) ctx done */
inline waitRest(s, lvl, imp) {
  if
  :: lw ->
     if
     :: atomic { wst[s] == W_SIG -> printf("MSC: goroutine %d returns\n", s); waitResult(s, lvl) }
     :: atomic { imp && wst[s] == W_LISTED -> printf("MSC: goroutine %d gives up\n", s); waitResult(s, lvl) }
     fi
  :: else
  fi
}

/* ------------------------------------------------------------- the coordinator */

/*
 * Coordinator.freeze (inside a d_step): freeze the live delta, publish the
 * view (hub.freeze; frozenThrough), count the job in busy, and send it on
 * flushQ if there is room; otherwise the job (cjs, cjl) waits in
 * dispatch(), the next step, for room.
 */
inline freezeBody(r) {
  if
  :: next == deltaStart || failedFlag -> timerFired = 0
  :: else ->
     cjs = deltaStart; cjl = next - 1;
     printf("MSC: coordinator freezes [%d,%d], reason %d\n", cjs, cjl, r);
     deltaStart = next;
     busyN++;
     SETREASON(r);
     /* the send on flushQ, at once if there is room */
     if
     :: qlen < MPF -> qs[qlen] = cjs; ql[qlen] = cjl; qlen++; cjs = 0; cjl = 0; timerFired = 0
     :: else -> pd = 1
     fi
  fi;
  compress()
}
/* Coordinator.freeze, the send on a full flushQ: backpressure */
inline dispatch() {
  if
  :: pd ->
     atomic { qlen < MPF -> qs[qlen] = cjs; ql[qlen] = cjl; qlen++; cjs = 0; cjl = 0; timerFired = 0; pd = 0; compress() }
  :: else
  fi
}
inline freeze(r) {
  d_step { freezeBody(r) }
  dispatch()
}

/*
 * completion.completeAt for writer q's handle, in endTurn (under the
 * completion's lock): a waiter parked on it for Written or Durable moves to
 * that watermark (watermark.list, then its parked hook), unless the epoch
 * is reached or the watermark failed: then it is signalled.
 *
 * H_PARKED also stands for a writer that has not yet looked at its handle
 * (between Write's return and completion.wait's done check: it behaves as
 * a parked one, even when its ctx ends).  So completeAt may also leave it
 * off the watermark, as if it had not parked: it then finds the handle done
 * and waitLevel lists it, in its own later step (H_SIG, handleDone), the
 * path of every wait before the write is applied.  -DPARKED leaves that
 * path out (the writer always parked first); then the turn is one d_step.
 */
#ifdef PARKED
#define TSTEP d_step
#define NOTPARKED false
#else
#define TSTEP atomic    /* a nondeterministic choice: not in a d_step */
#define NOTPARKED true
#endif
inline completeAt(q) {
  if
  :: hpk[q] == H_PARKED && pend[q] == 0 ->
     wep[q] = hep[q];
     if
     :: MARK(ask[q]) >= wep[q] || MERR(ask[q]) || NOTPARKED -> wep[q] = 0; hpk[q] = H_SIG
     :: MARK(ask[q]) < wep[q] && !MERR(ask[q]) ->                /* moved */
        oldDemand(q, ask[q]);
        hep[q] = 0; hpk[q] = H_NONE; listBody(q, ask[q])
     fi
  :: else
  fi
}

/*
 * Coordinator.turn + applyOps + endTurn on channel q (inside a d_step: the
 * applyMu and q.mu sections and the coordinator-owned delta), then the
 * first half of freeze(FlushSize) if the delta is full.  Sets n (slots
 * applied).
 */
inline turnBody(q, ign) {
  n = 0;
  if
  :: (held[q] == 0 && items[q] == 0) || failedFlag -> skip
  :: else ->
     /* queue.take */
     if
     :: held[q] > 0 -> tk = (ign || !paused[q])
     :: else ->
        if
        :: (paused[q] && !ign) || items[q] == 0 -> tk = 0
        :: else -> held[q] = items[q]; items[q] = 0; tk = 1
        fi
     fi;
     if
     :: tk ->
        assert(ign || !paused[q]);          /* invariant 4 */
        assert(!aErr);                      /* applied never moves once failed */
        do
        :: held[q] > 0 ->
           if :: ask[q] != 0 -> hep[q] = next :: else fi;
           next++; held[q]--; n++;
           if :: next - deltaStart >= FS -> isfull = 1; break :: else fi
        :: else -> break
        od;
        applied = next - 1;                 /* applied.advance */
        /* complete the handles (WriteHandle.complete), release the slots */
        pend[q] = pend[q] - n;
        completeAt(q);
        used[q] = used[q] - n;
        /* pipeline.returned: the writes applied are off returning */
        RETURNED(n);
        if :: ign -> moved = 1 :: else fi;
        compress();
        printf("MSC: channel %d applied through %d\n", q, applied);
        tk = 0
     :: else
     fi
  fi;
  if :: isfull -> isfull = 0; freezeBody(R_SIZE) :: else fi
}

/*
 * One channel's turn in Coordinator.round (inside a d_step), then the idle
 * count and the first half of delist (listed.Store(false)).  roundTail
 * sends a job the turn froze on a full flushQ, and does the second half
 * of delist: re-check depth, stay listed or leave the active list.
 */
inline roundBody(q, wv) {
  if
  :: act[q] ->
     turnBody(q, 0);
     if
     :: n > 0 -> wv = 1; idle[q] = 0
     :: n == 0 && paused[q] -> idle[q] = IDLE
     :: n == 0 && !paused[q] && DEPTH(q) == 0 -> idle[q]++
     :: else
     fi;
     n = 0;
     if :: idle[q] >= IDLE -> listed[q] = 0; idle[q] = 0; dl = 1 :: else fi
  :: else
  fi
}
inline delist2(q) {
  if
  :: dl ->
     dl = 0;
     if
     :: DEPTH(q) > 0 && !paused[q] && !listed[q] -> listed[q] = 1
     :: else -> act[q] = 0
     fi
  :: else
  fi
}
/*
 * Coordinator.freezeOnDemand: the check (demandReady, not failed) at the
 * end of the round's last step sets gat; then gather().  Only when busy ==
 * 0, so never with a job waiting in dispatch.
 */
inline freezeOnDemandCheck() {
  demand();
  gat = (DEMAND_READY && !failedFlag)
}
#if NW > 2
#define LASTCH 2
#else
#define LASTCH 1
#endif
/* ready.take */
#define TAKE_READY for (c_i : 0 .. NW-1) { if :: rdy[c_i] -> act[c_i] = 1; rdy[c_i] = 0 :: else fi }
/* the end of a round of gatherReturning: stop if it applied nothing or returning is 0 */
inline gatherEnd() {
  ge = (!gw || RETURNING == 0);
  gw = 0;
  if :: GATHER > 0 -> gn++; if :: gn >= GATHER -> ge = 1 :: else fi :: else fi
}
/*
 * Coordinator.gatherReturning, then freeze(FlushWait) if demandReady still
 * holds.  Each iteration: runtime.Gosched (the step boundary: every other
 * goroutine may move), a round (its steps as in the loop, applied writes
 * noted in gw, not in worked), then the stop condition: the round applied
 * nothing, or returning is 0 (read after the round's send on flushQ), or
 * the time bound (the last sync's duration, any iteration may be the
 * last).  The first iteration is unconditional, unless yields are slow
 * (pipeline.yieldsSlow): then there is none, or one (a probe, whose slow
 * yield ends the gathering like the time bound).
 */
inline gather() {
  if
  :: skip                               /* yields slow: no gathering */
  :: skip ->
  do
  :: TSTEP {
       delist2(LASTCH);                 /* (the second half of the last delist) */
       if
       :: failedFlag -> ge = 1          /* for !c.p.isFailed() */
       :: else -> TAKE_READY; roundBody(0, gw)
       fi
     }
     if :: ge -> ge = 0; break :: else fi;
     dispatch();
#if NW > 2
     TSTEP { delist2(0); roundBody(1, gw) }
     dispatch();
     TSTEP { delist2(1); roundBody(2, gw); if :: !pd -> gatherEnd() :: else fi }
#else
     TSTEP { delist2(0); roundBody(1, gw); if :: !pd -> gatherEnd() :: else fi }
#endif
     if
     :: pd -> atomic { qlen < MPF -> qs[qlen] = cjs; ql[qlen] = cjl; qlen++; cjs = 0; cjl = 0; timerFired = 0; pd = 0; compress(); gatherEnd() }
     :: else
     fi;
     if
     :: ge -> ge = 0; break
     :: else -> if :: break :: skip fi      /* the time bound, or a slow yield */
     fi
  od
  fi;
  gn = 0;
  d_step { delist2(LASTCH); demand(); if :: DEMAND_READY -> freezeBody(R_WAIT) :: else fi }
}
/*
 * The end of an iteration of loop: continue if worked; otherwise announce
 * sleeping, then hasWork (and the timer); if there is nothing, read attn
 * (sa) to choose how to wait.
 */
inline sleepDecide() {
  if
  :: worked -> worked = 0; hw = 1
  :: else ->
     sleeping = 1;
     demand();
     hw = timerFired || failedFlag || DEMAND_READY;
     for (c_i : 0 .. NW-1) {
       if :: rdy[c_i] || (act[c_i] && DEPTH(c_i) > 0 && !paused[c_i]) -> hw = 1 :: else fi
     }
     if :: hw -> sleeping = 0 :: else -> sa = (attn > 0 || stopAttn) fi
  fi
}


/*
 * Coordinator.drain, channel q: apply the slots accepted when it began
 * (drainFirst, inside the caller's d_step: the first turn; drainRest: a
 * full flushQ, and further turns while slots accepted before remain).
 */
inline drainFirst(q, ign) {
  if :: ign || act[q] -> rem = DEPTH(q) :: else -> rem = 0 fi;
  if
  :: rem > 0 ->
     turnBody(q, ign);
     if :: n == 0 -> rem = 0 :: else -> rem = (rem > n -> rem - n : 0) fi;
     n = 0
  :: else
  fi
}
inline drainRest(q, ign) {
  dispatch();
  do
  :: rem > 0 ->
     TSTEP {
       turnBody(q, ign);
       if :: n == 0 -> rem = 0 :: else -> rem = (rem > n -> rem - n : 0) fi;
       n = 0
     }
     dispatch()
  :: else -> break
  od
}
/* drain: ready.take (unless ign), then every channel */
inline drain(ign) {
  TSTEP { if :: !ign -> TAKE_READY :: else fi; drainFirst(0, ign) }
  drainRest(0, ign);
  atomic { drainFirst(1, ign) }       /* (atomic: a jump target) */
  drainRest(1, ign);
#if NW > 2
  atomic { drainFirst(2, ign) }
  drainRest(2, ign);
#endif
}

/* handleFlush's answer to every request taken */
inline replyAll() {
  for (c_i : 0 .. NFA-1) {
    if
    :: offer[c_i] == 2 ->
       if :: failedFlag -> frerr[c_i] = 1 :: else -> freply[c_i] = next - 1 fi;
       offer[c_i] = 3
    :: offer[c_i] == 4 -> offer[c_i] = 0        /* its caller left */
    :: else
    fi
  }
}
/* Coordinator.handleFlush (the requests were taken: offer == 2): drain, freeze, reply */
inline handleFlush() {
  drain(0);
  atomic { freezeBody(R_EXPLICIT); if :: !pd -> replyAll() :: else fi }
  if :: pd -> atomic { qlen < MPF -> qs[qlen] = cjs; ql[qlen] = cjl; qlen++; cjs = 0; cjl = 0; timerFired = 0; pd = 0; replyAll(); compress() } :: else fi
}

inline takeOffers() {
  for (c_i : 0 .. NFA-1) { if :: offer[c_i] == 1 -> offer[c_i] = 2 :: else fi }
}

/* Coordinator.dropAll */
inline dropAllBody() {
  for (c_i : 0 .. NW-1) {
    chClosed[c_i] = 1;
    if
    :: DEPTH(c_i) > 0 -> pend[c_i] = pend[c_i] - DEPTH(c_i); herr[c_i] = 1;
       items[c_i] = 0; held[c_i] = 0;
       if :: hpk[c_i] == H_PARKED && pend[c_i] == 0 -> hpk[c_i] = H_SIG :: else fi  /* complete(): no move */
    :: else
    fi
  }
  aErr = 1
}
/* the end of shutdown: dropAll if failed, close(flushQ), the goroutine ends */
inline dropAllIfFailed() {
  d_step {
    if :: failedFlag -> dropAllBody() :: else fi;
    qclosed = 1;
    coordDone = 1
  }
}

proctype Coordinator() {
  byte rem, n, hw, gn;
  bit worked, tk, isfull, moved, dl, sa, pd, gat, gw, ge;
loop:
#ifdef TIMER
  if
  :: failedFlag -> goto failedloop
  :: else
  fi;
  if :: timerFired -> freeze(R_INTERVAL) :: else fi;
  TSTEP { TAKE_READY; roundBody(0, worked) }          /* round: ready.take, channel 0 */
#else
  if
  :: failedFlag -> goto failedloop
  :: TSTEP { !failedFlag -> TAKE_READY; roundBody(0, worked) }   /* round: ready.take, channel 0 */
  fi;
#endif
  dispatch();
#if NW > 2
  TSTEP { delist2(0); roundBody(1, worked) }
  dispatch();
  TSTEP { delist2(1); roundBody(2, worked); freezeOnDemandCheck() }
#else
  TSTEP { delist2(0); roundBody(1, worked); freezeOnDemandCheck() }
#endif
  dispatch();
  if :: gat -> gat = 0; gather() :: else fi;     /* freezeOnDemand: gather, then freeze */
  /* attn > 0: serve a Flush or Stop between turns; else continue or sleep */
  atomic {
    delist2(LASTCH);
    if
    :: ANYOFFER -> takeOffers(); hw = 2
    :: stopping -> hw = 3
    :: else -> sleepDecide()
    fi
  }
  if
  :: hw == 2 -> hw = 0; handleFlush(); moved = 0; d_step { sleepDecide() }
  :: hw == 3 -> hw = 0; goto shutdown
  :: else
  fi;
  if :: hw == 1 -> hw = 0; goto loop :: else fi;
endidle:
  if
  :: !sa -> atomic { wake -> wake = 0; sleeping = 0 }
  :: else ->
     if
     :: atomic { wake -> wake = 0; sleeping = 0; sa = 0 }
     :: atomic { ANYOFFER -> takeOffers(); sa = 0 } -> handleFlush(); moved = 0; sleeping = 0
     :: atomic { stopping -> sleeping = 0; sa = 0 } -> goto shutdown
     fi
  fi;
  goto loop;

shutdown:
  /* Coordinator.shutdown: the queues are closed; apply everything accepted */
  do
  :: failedFlag -> break
  :: else ->
     moved = 0;
     drain(1);
     if
     :: !moved && DEPTH(0) == 0 && DEPTH(1) == 0
#if NW > 2
        && DEPTH(2) == 0
#endif
        -> break
     :: else
     fi
  od;
  moved = 0;
  freeze(R_STOP);
  dropAllIfFailed();
  goto end;

failedloop:
  atomic { dropAllBody() }
endfailed:
  do
  :: atomic {
       ANYOFFER ->
       for (c_i : 0 .. NFA-1) { if :: offer[c_i] == 1 -> frerr[c_i] = 1; offer[c_i] = 3 :: else fi }
     }
  :: stopping -> break
  od;
  qclosed = 1;
  coordDone = 1;
end:
  skip
}

/* ----------------------------------------------------------------- the flusher */

inline dequeue() {
  fjs = qs[0]; fjl = ql[0];
  for (c_i : 1 .. MPF-1) { qs[c_i-1] = qs[c_i]; ql[c_i-1] = ql[c_i] }
  qs[MPF-1] = 0; ql[MPF-1] = 0;
  qlen--;
  assert(fjs == lastEnd + 1 && fjl >= fjs);   /* invariant 1: contiguous, in order */
  lastEnd = fjl;
  compress()
}

/*
 * Coordinator.flushDelta: hub.written's step raises written and unlists
 * the waiters it satisfies (pw); after the hub lock, their signals
 * (satisfied.wake), then the deferred busy.Add(-1).  With nobody unlisted,
 * the busy.Add(-1) joins the first step (nothing happens in between).
 */
inline flushDelta() {
  atomic {
    if
    :: failedFlag -> skip            /* lost with the failure */
    :: else ->
       if
       :: true ->                    /* FlushDelta returned a snapshot: hub.written */
          if
          :: !vFailed ->
             vWritten = fjl;         /* the view first ... */
             assert(!failedFlag && fjl > written && applied >= fjl);
#ifdef BOUNDS
             /* invariant 7: the FlushDelta calls a wait sees */
             if
             :: wst[0] == W_LISTED && wlev[0] == L_WR -> fd0++; assert(fd0 <= FD0_BOUND_WR)
             :: wst[0] == W_LISTED && wlev[0] == L_DUR && wep[0] != FAR -> fd0++; assert(fd0 <= FD0_BOUND_DUR)
             :: else
             fi;
#endif
             written = fjl;          /* ... then the watermark (invariant 3) */
             printf("MSC: flusher wrote [%d,%d]: written=%d\n", fjs, fjl, written);
             assert(vWritten >= written && written >= durable);
             raiseLevel(L_WR, written)
          :: else
          fi
       :: CANFAIL ->                 /* FlushDelta failed for good: hub.fail */
          nfail++; failRec = 1; vFailed = 1; fl = 1;
          printf("MSC: FlushDelta fails\n")
       fi
    fi;
    if :: !fl && pw == 0 -> busyN--; fjs = 0; fjl = 0 :: else fi;   /* the deferred busy.Add(-1) */
    compress()
  }
  if
  :: pw > 0 ->
     wakePopped();
     atomic { WOKEN(pw); pw = 0; busyN--; fjs = 0; fjl = 0; compress() }
  :: else
  fi;
#ifdef FAIL
  if :: fl -> fl = 0; announce(); atomic { busyN--; fjs = 0; fjl = 0 } :: else fi
#endif
}

/*
 * Coordinator.sync.  syncStart (the busy.Add(busySync) and the loads of
 * syncReq and written) runs inside the step that decided to sync;
 * syncEnd is FlushStorage's return: the durable watermark and syncDone
 * advance (hub.unlessFailed; the durable raise unlists the waiters it
 * satisfies, pw), then, after the hub lock, their signals; then the
 * deferred busySync release, and after sync, expectReturning (returning
 * += the waiters this pass woke, wk) and the wake-up of the coordinator if
 * busy is 0: one step (with the raise, if nobody was unlisted).
 */
inline syncStart() {
  syncing = 1;
  syncR = syncReq; syncW = written;
  printf("MSC: sync starts: written=%d durable=%d\n", written, durable);
#ifdef BOUNDS
  if :: wst[0] == W_LISTED && wlev[0] == L_DUR && wep[0] <= syncW -> fd0 = 0 :: else fi;
#endif
#ifdef COALESCE
  nsync++;
  assert(nsync <= nreq);             /* coalescing */
#endif
}
inline syncFinish() {
  syncing = 0; syncW = 0; syncR = 0;
  WOKEN(pw); pw = 0; EXPECT_RETURNING;
  if :: busyN == 0 -> WAKEC :: else fi
}
inline syncEnd() {
  atomic {
    if
    :: true ->                       /* FlushStorage succeeded: hub.unlessFailed */
       if
       :: !vFailed ->
          assert(!failedFlag && syncW >= durable);
          durable = syncW;
          assert(written >= durable);
          raiseLevel(L_DUR, durable);
          if :: syncR > syncDone -> syncDone = syncR; wakeSync() :: else fi
       :: else
       fi
    :: CANFAIL -> nfail++; failRec = 1; vFailed = 1; fl = 1;
       printf("MSC: FlushStorage fails\n")
    fi;
    if :: !fl && pw == 0 -> syncFinish() :: else fi;
    compress()
  }
  if :: pw > 0 -> wakePopped(); atomic { syncFinish(); compress() } :: else fi;
#ifdef FAIL
  if
  :: fl -> fl = 0; announce();
     atomic { syncFinish() }
  :: else
  fi
#endif
}

proctype Flusher() {
  byte n, wk, pw;
  bit fl, ds;
endtop:
  if
  :: d_step { qlen > 0 -> dequeue() } -> flushDelta()
  :: atomic { qlen == 0 && qclosed -> skip } -> goto final
  :: atomic { kick -> kick = 0 }
  fi;
  /* write what is already queued before syncing */
  n = qlen;
  do
  :: n > 0 -> atomic { dequeue() }; flushDelta(); n--
  :: else -> break
  od;
  /* maybeSync */
  atomic {
    demand(); ds = !failedFlag && (syncReq > syncDone || SYNC_DEMAND);
    if
    :: !ds && dminD != 0 ->
       printf("MSC: flusher does not sync: Durable waiters at %d..%d, written %d, durable %d, queued %d\n",
              dminD, dmaxD, written, durable, qlen)
    :: else
    fi;
    if
    :: ds -> syncStart()
    :: else ->
       EXPECT_RETURNING;
       if :: busyN == 0 && !syncing -> WAKEC :: else fi   /* busy == 0: wakeCoordinator */
    fi
  }
  if :: ds -> ds = 0; syncEnd() :: else fi;   /* ends with the same wake-up */
  goto endtop;
final:
  /* finalSync */
  atomic { if :: !failedFlag -> syncStart(); ds = 1 :: else fi }
  if :: ds -> ds = 0; syncEnd() :: else fi;
  flushDone = 1
}

/* ------------------------------------------------------------------ the users */

/* the handle is complete (pend 0): its error, or waitLevel at its epoch */
inline handleDone(w, lv) {
  wep[w] = hep[w]; hep[w] = 0;
  if
  :: herr[w] -> wep[w] = 0; ask[w] = 0; compress()     /* dropped: error */
  :: else ->
     assert(applied >= wep[w]);                         /* Applied before the handle */
     waitListBody(w, lv)
  fi
}

/*
 * A writer goroutine on its own channel w: writes nw times (0: forever),
 * after each write waits for nothing, Written or Durable (waits is a mask
 * of 1, 2, 4), giving up if imp.  far != 0: first WaitFor(far, FAR).
 */
proctype Writer(byte w; byte nw; byte waits; bit imp; byte far) {
  byte left = nw, lv;
  bit lw;
  if
  :: far != 0 ->
     atomic { ask[w] = far; wep[w] = FAR; waitListBody(w, far) }
     waitRest(w, far, imp)
  :: else
  fi;
  do
  :: nw == 0 || left > 0 ->
     /* Channel.Write (queue.push), waiting for a slot while the queue is full */
     if
     :: atomic { chClosed[w] || failedFlag } -> break      /* refused */
     :: atomic {
          !chClosed[w] && !failedFlag && used[w] < QCAP ->
          /* the wait that will follow the write */
          if
          :: (waits & 1) -> skip
          :: (waits & 2) -> ask[w] = L_WR
          :: (waits & 4) -> ask[w] = L_DUR
          fi;
          items[w]++; used[w]++; pend[w]++;
          if :: items[w] == 1 && !paused[w] -> readyAdd(w) :: else fi;
          if :: nw > 0 -> left-- :: else fi;
          lv = ask[w];
          if :: lv != 0 -> hpk[w] = H_PARKED :: else fi;   /* (see completeAt) */
          WAKEC                     /* after q.mu.Unlock: wakeCoordinator */
        }
     fi;
     if
     :: lv != 0 ->
        /*
         * WriteHandle.Wait: completion.wait with then set (no yields
         * first), parked on the handle (hpk, set by the write's step), or
         * at the watermark (wst), where completeAt may have moved it; then
         * waitLevel.
         */
        do
        :: atomic { hpk[w] == H_SIG -> hpk[w] = H_NONE; handleDone(w, lv); lw = 0 }
        :: atomic {                   /* ctx done, still on the handle: removeLocked */
             imp && hpk[w] == H_PARKED -> hpk[w] = H_NONE; ask[w] = 0;
             printf("MSC: goroutine %d gives up\n", w)
           }
        :: atomic { wst[w] == W_SIG -> printf("MSC: goroutine %d returns\n", w); waitResult(w, lv) }
        :: atomic {                   /* ctx done: watermark.unlist (W_POP: settle) */
             imp && wst[w] == W_LISTED -> printf("MSC: goroutine %d gives up\n", w); waitResult(w, lv)
           }
        :: ask[w] == 0 -> break
        od;
        lv = 0
     :: else
     fi
  :: else -> break
  od
}

#if NF > 0
/* Coordinator.Flush(ctx, lvl) from goroutine i (slot NW+i) */
proctype FlushCaller(byte i; byte lvl; bit imp) {
  byte res;
  bit lw;
  /* register the sync request (Durable), attn.Add(1), forceWake, offer on c.ctrl */
  atomic {
    ask[NW+i] = lvl;
    if :: lvl == L_DUR -> syncReq++; fsn[i] = syncReq; COUNTREQ :: else fi;
    attn++; wake = 1; offer[i] = 1
  }
  /*
   * select: ctrl <- req, stopping, failed, ctx; then select: reply, failed,
   * ctx (one step: the request taken and answered, or given up).  With the
   * reply, Durable: kickFlusher, then syncDone.wait(syncN) (sst); Written:
   * waitLevel.
   */
  if
  :: atomic {
       offer[i] == 3 -> offer[i] = 0;
       if
       :: frerr[i] -> res = 2
       :: else ->
          wep[NW+i] = freply[i];
          if
          :: lvl == L_DUR ->
             kick = 1;
             if
             :: syncDone >= fsn[i] -> waitListBody(NW+i, lvl)
             :: else -> if :: sdErr -> res = 2 :: else -> sst[i] = W_LISTED fi
             fi
          :: lvl == L_WR -> waitListBody(NW+i, lvl)
          :: else
          fi
       fi;
       frerr[i] = 0; freply[i] = 0; compress()
     }
  :: atomic { offer[i] == 1 && (stopping || failedFlag || imp) -> offer[i] = 0; res = 2 }
  :: atomic { offer[i] == 2 && (failedFlag || imp) -> offer[i] = 4; res = 2 }
  :: atomic { offer[i] == 3 && failedFlag -> offer[i] = 0; frerr[i] = 0; freply[i] = 0; res = 2 }
  fi;
  /* syncDone's waiter: signalled (then waitLevel(Durable)), or ctx done */
  if
  :: sst[i] == W_LISTED ->
     if
     :: atomic {
          sst[i] == W_SIG -> sst[i] = W_IDLE;
          if :: syncDone < fsn[i] -> res = 2 :: else -> waitListBody(NW+i, lvl) fi
        }
     :: atomic { imp && sst[i] == W_LISTED -> sst[i] = W_IDLE; res = 2 }
     fi
  :: else
  fi;
  waitRest(NW+i, lvl, imp);
  atomic { attn--; fsn[i] = 0; ask[NW+i] = 0; res = 0; wep[NW+i] = 0; compress() }
}
#endif

#ifdef PAUSE
/* Channel.Pause then Channel.Resume on channel 0 */
proctype Pauser() {
  atomic { paused[0] = 1 }                    /* applyMu held: no turn in between */
  atomic { paused[0] = 0; if :: DEPTH(0) > 0 -> readyAdd(0) :: else fi }
  atomic { WAKEC }
}
#endif

#ifdef TIMER
/* time.AfterFunc(FlushInterval): sets timerFired and forces a wake-up */
proctype Timer() {
  do
  :: atomic { nfire < 1 && !timerFired -> timerFired = 1; wake = 1; nfire++ }
  :: break
  od
}
#endif

#ifdef STOP
/* Coordinator.Stop: beginStop, then finish's settlement */
proctype Stopper() {
  /* beginStop: close every queue, attn += stopAttention, close(stopping), forceWake */
  atomic {
    for (c_i : 0 .. NW-1) { chClosed[c_i] = 1 }
    stopAttn = 1; stopping = 1; wake = 1;
    COUNTREQ                                  /* the final sync is asked for */
  }
  atomic {
    coordDone && flushDone ->
    aErr = 1; wErr = 1; dErr = 1; sdErr = 1;
    failLevel(L_WR); failLevel(L_DUR); failSync();
    stopDone = 1;
    /* invariant 5: every accepted write applied (or failed), every handle complete */
    for (c_i : 0 .. NW-1) { assert(DEPTH(c_i) == 0 && pend[c_i] == 0) }
    /* and, without a failure, written and synced */
    if
    :: !failRec -> assert(applied == next - 1 && written == applied && durable == written)
    :: else
    fi
  }
}
#endif

/* ---------------------------------------------------------------- scenarios */

/* LIVE: what writer 0 (patient) and writer 1 (gives up) wait for (mask of
 * 1 nothing, 2 Written, 4 Durable) */
#ifndef W0WAITS
#define W0WAITS 4
#endif
/* SAFE, COALESCE: how many times each writer writes */
#ifndef W0N
#define W0N 2
#endif
#ifndef W1N
#define W1N 1
#endif
#ifndef W1WAITS
#define W1WAITS 5
#endif

/*
 * Writer(w, nwrites (0 = forever), waits mask, impatient, WaitFor FAR level)
 *
 * SAFE:     two writers with two writes each, any wait, writer 1 gives up;
 *           every feature on; every run ends with Stop.
 * LIVE:     writer 0 writes forever and never gives up on Written/Durable
 *           waits; writer 1 writes forever, waits and gives up.
 * QUIET:    writer 0 writes forever without waiting; writer 1 waits for
 *           Durable at a FAR epoch, writes once, waits Durable, and gives
 *           up on both.  Afterwards nobody asks for anything.
 * COALESCE: two writers, Durable waits, a Flush(Durable) caller (NFC), Stop.
 */
init {
  atomic {
    run Coordinator();
    run Flusher();
#if defined(SAFE)
    run Writer(0, W0N, 6, 0, 0);
    run Writer(1, W1N, 5, 1, 0);
#if NW > 2
    run Writer(2, 1, 1, 0, 0);
#endif
#elif defined(LIVE)
    run Writer(0, 0, W0WAITS, 0, 0);
    run Writer(1, 0, W1WAITS, 1, 0);
#if NW > 2
    run Writer(2, 0, 1, 0, 0);
#endif
#elif defined(QUIET)
    run Writer(0, 0, 1, 0, 0);
    run Writer(1, 1, 4, 1, L_DUR);
#elif defined(COALESCE)
    run Writer(0, W0N, 4, 0, 0);
    run Writer(1, W1N, 4, 1, 0);
#endif
#if NF > 0
#if defined(COALESCE)
    run FlushCaller(0, L_DUR, 0);
#if NF > 1
    run FlushCaller(1, L_DUR, 1);
#endif
#elif defined(SAFE)
    if
    :: run FlushCaller(0, L_APP, 1)
    :: run FlushCaller(0, L_WR, 1)
    :: run FlushCaller(0, L_DUR, 0)
    fi;
#else
    run FlushCaller(0, L_DUR, 0);
#endif
#endif
#ifdef PAUSE
    run Pauser();
#endif
#ifdef TIMER
    run Timer();
#endif
#ifdef STOP
    run Stopper();
#endif
  }
}

/* ----------------------------------------------------------------- liveness */

/* the patient requesters: writer 0, and the Flush caller in LIVE */
#define DUR0 (ask[0] == L_DUR)
#define WR0  (ask[0] == L_WR)
#if NF > 0
#define DURF (ask[NW] == L_DUR)
#else
#define DURF false
#endif

/* one property per run: -DLTL_<name> */
#ifdef LTL_live_dur
/* every Durable request (Write+Wait(Durable), Flush(Durable)) ends: satisfied or failed */
ltl live_dur { [] (DUR0 -> <> !DUR0) && [] (DURF -> <> !DURF) }
#endif
#ifdef LTL_live_wr
/* every Written request ends */
ltl live_wr { [] (WR0 -> <> !WR0) }
#endif
#ifdef LTL_quiet_sync
/* once the waiters gave up, no sync runs any more ... */
ltl quiet_sync { <> [] !syncing }
#endif
#ifdef LTL_quiet_freeze
/* ... and no delta is frozen for a waiter any more */
ltl quiet_freeze { <> [] (lastReason != R_WAIT) }
#endif
