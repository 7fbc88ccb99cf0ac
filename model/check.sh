#!/usr/bin/env bash
# Runs every spin check of the coordinator model (see README.md here).
#
#   model/check.sh            all checks
#   model/check.sh NAME...    only the named checks
#   KEEP=1 model/check.sh     keep the work directory (pan.c, trails)
#
# Prints one verdict line per check. Exits non-zero if a positive check
# finds a violation (or cannot finish), or if a negative check -- the
# defects that were fixed, restored in the model -- finds none.
# Needs spin and a C compiler; installs nothing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
model="$here/coordinator.pml"
for tool in spin "${CC:-gcc}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check.sh: $tool not found (Debian: apt-get install -y spin gcc)" >&2
    exit 2
  fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/coordinator-model.XXXXXX")
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "work directory: $work"; fi

# Compile flags of the verifier: room for the state vector and weak
# fairness, a memory cap (MB), and state compression.
CFLAGS_PAN="-O2 -w -DVECTORSZ=4096 -DNFAIR=4 -DMEMLIM=4096 -DCOLLAPSE"
# Search depth: well beyond the longest path of any check (pan reports,
# and this script fails on, a search truncated by the depth limit).
DEPTH=10000000

JOBS=${JOBS:-2}     # checks run in parallel (one pan each)
total_start=$(date +%s.%N)
names=()

# check NAME EXPECT PROPERTY DEFINES...
#   EXPECT    pass: no violation may exist; fail: a violation must be found
#   PROPERTY  safety (assertions and invalid end states) or an ltl name,
#             checked for acceptance cycles under weak fairness (-a -f)
check() {
  local name=$1
  if [ ${#only[@]} -gt 0 ]; then
    local o found=
    for o in "${only[@]}"; do [ "$o" = "$name" ] && found=1; done
    [ -n "$found" ] || return 0
  fi
  names+=("$name")
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  ( run_check "$@" >"$work/$name.result" 2>&1; echo $? >"$work/$name.status"; cat "$work/$name.result" ) &
}

# run_check NAME EXPECT PROPERTY DEFINES...: prints the verdict, returns 1 on failure
run_check() {
  local name=$1 expect=$2 prop=$3; shift 3
  local defs=("$@")
  local failures=0
  local dir="$work/$name"
  mkdir -p "$dir"
  cp "$model" "$dir/"
  local cflags=$CFLAGS_PAN panflags="-m$DEPTH -n"
  if [ "$prop" = safety ]; then
    cflags="$cflags -DSAFETY"
  else
    defs+=("-DLTL_$prop")
    panflags="$panflags -a -f"
  fi
  local out="$dir/pan.out"
  if ! (cd "$dir" && spin -a "${defs[@]}" coordinator.pml >"$dir/spin.out" 2>&1); then
    echo "FAIL  $name: spin -a failed"; sed 's/^/      /' "$dir/spin.out"; return 1
  fi
  # shellcheck disable=SC2086
  if ! (cd "$dir" && ${CC:-gcc} $cflags -o pan pan.c >"$dir/cc.out" 2>&1); then
    echo "FAIL  $name: compiling pan failed"; sed 's/^/      /' "$dir/cc.out"; return 1
  fi
  # shellcheck disable=SC2086
  (cd "$dir" && ./pan $panflags >"$out" 2>&1)
  local errors states depth secs kind
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)
  states=$(awk '/states, stored/ {print $1; exit}' "$out")
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | tail -1)
  secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' "$out" | tail -1)
  kind=$(grep -m1 -o 'pan:1: [a-z ]*' "$out" | sed 's/^pan:1: //; s/ *$//')
  local what="${defs[*]}"
  local stats="states=${states:-?} depth=${depth:-?} time=${secs:-?}s"
  # (pan stops at the first violation and then also says "Search not
  # completed": incompleteness only matters when nothing was found.)
  if [ "${errors:-0}" -eq 0 ] && grep -qi 'out of memory\|depth too small\|search not completed\|MEMLIM bound' "$out"; then
    echo "FAIL  $name [$prop; $what]: search incomplete ($stats)"
    grep -i -m3 'out of memory\|depth too small\|search not completed\|MEMLIM bound' "$out" | sed 's/^/      /'
    return 1
  fi
  if [ -z "$errors" ]; then
    echo "FAIL  $name [$prop; $what]: no verdict from pan"; tail -20 "$out" | sed 's/^/      /'
    return 1
  fi
  if [ "$expect" = pass ]; then
    if [ "$errors" -eq 0 ]; then
      echo "ok    $name [$prop; $what]: holds ($stats)"
    else
      echo "FAIL  $name [$prop; $what]: $kind ($stats)"
      trail_summary "$dir" "${defs[@]}"
      failures=$((failures + 1))
    fi
  else
    # A negative check must fail for the property about the defect: an
    # acceptance cycle of its never claim, not an assertion or a deadlock.
    if [ "$errors" -gt 0 ] && [ "$kind" = "acceptance cycle" ]; then
      echo "ok    $name [$prop; $what]: fails as it must: $kind ($stats)"
      trail_summary "$dir" "${defs[@]}"
    elif [ "$errors" -gt 0 ]; then
      echo "FAIL  $name [$prop; $what]: fails, but for another reason: $kind ($stats)"
      trail_summary "$dir" "${defs[@]}"
      failures=$((failures + 1))
    else
      echo "FAIL  $name [$prop; $what]: the restored defect went unnoticed ($stats)"
      failures=$((failures + 1))
    fi
  fi
  [ "$failures" -eq 0 ]
}

# trail_summary DIR DEFINES...: replay the counterexample with pan -r (the
# model has C code, which spin -t cannot run) and
# show its events (the model's MSC printfs; epochs as compressed in the
# model): what goroutine 0 (the patient writer) asked for, the last events
# before the cycle, and the cycle.
trail_summary() {
  local dir=$1; shift
  if [ ! -f "$dir/coordinator.pml.trail" ]; then
    echo "      (no trail)"; return
  fi
  (cd "$dir" && ./pan -r 2>&1 | events >"$dir/trail.out")
  local n cyc
  n=$(grep -c '' "$dir/trail.out")
  cyc=$(grep -n 'START OF CYCLE' "$dir/trail.out" | head -1 | cut -d: -f1)
  echo "      counterexample: $n events (replay: KEEP=1 model/check.sh $(basename "$dir"), then ./pan -r in its directory)"
  if [ -n "$cyc" ]; then
    { head -n "$cyc" "$dir/trail.out" | grep -m1 'goroutine 0 waits'
      head -n "$cyc" "$dir/trail.out" | grep 'gives up' | tail -n 1; } | sed 's/^/      | /'
    echo "      | ..."
    head -n "$((cyc - 1))" "$dir/trail.out" | tail -n 4 | sed 's/^/      | /'
    echo "      | ---- cycle, repeated forever: ----"
    tail -n +"$((cyc + 1))" "$dir/trail.out" | head -n 10 | sed 's/^/      | /'
  else
    grep -v '^$' "$dir/trail.out" | tail -n 12 | sed 's/^/      | /'
  fi
}

# events: the MSC lines of a replay, with levels and freeze reasons named
events() {
  grep -v 'MSC: ~G' |
    sed -n 's/^ *MSC: //p; /START OF CYCLE/p; /assertion violated/p; /invalid end state/p' |
    sed 's/level 2/Written/; s/level 3/Durable/;
         s/reason 1$/FlushSize/; s/reason 2$/FlushWait/; s/reason 3$/FlushExplicit/;
         s/reason 4$/FlushShutdown/; s/reason 5$/FlushInterval/' | uniq
}

only=("$@")

# The checks are listed longest first, so that the parallel jobs finish
# together.

# Safety, exact epochs, every run ends with Stop: assertions and invalid
# end states (a goroutine or waiter blocked forever).
# (-DPARKED and -DGATHER=1 keep the three largest under the memory cap;
# see README.md, Bounds.)
check safe_pause_timer pass safety -DSAFE -DPAUSE -DTIMER -DSTOP -DPARKED -DGATHER=1
check coalesce         pass safety -DCOALESCE -DSTOP -DPARKED -DGATHER=1
check safe_flush       pass safety -DSAFE -DFLUSH -DSTOP -DW0N=1 -DPARKED -DGATHER=1

# Liveness under weak fairness, writers writing forever. (live_flush:
# no writer waits, so -DPARKED changes nothing there but the speed.)
check live_flush       pass live_dur     -DLIVE -DFLUSH -DW0WAITS=1 -DW1WAITS=1 -DPARKED
check live_dur         pass live_dur     -DLIVE
check safe             pass safety -DSAFE -DSTOP -DFAIL
check live_fail        pass live_dur     -DLIVE -DFAIL -DW1WAITS=1
check live_wr          pass live_wr      -DLIVE -DW0WAITS=2 -DGATHER=1
check live_stop        pass live_dur     -DLIVE -DSTOP -DW1WAITS=1
check live_pause       pass live_dur     -DLIVE -DPAUSE -DW1WAITS=1
check live_mpf2        pass live_dur     -DLIVE -DMPF=2 -DW1WAITS=1
check quiet_freeze     pass quiet_freeze -DQUIET
check quiet_sync       pass quiet_sync   -DQUIET
# Invariant 7's bounds, in FlushDelta calls, over every reachable state.
check bounds_mpf2      pass safety       -DLIVE -DBOUNDS -DMPF=2
check bounds           pass safety       -DLIVE -DBOUNDS

# Negative checks: the fixed defects restored; each must be caught.
check neg_old_sync          fail live_dur     -DLIVE -DOLD_SYNC
check neg_old_demand_sync   fail quiet_sync   -DQUIET -DOLD_DEMAND
check neg_old_demand_freeze fail quiet_freeze -DQUIET -DOLD_DEMAND

wait
failures=0
for name in "${names[@]}"; do
  [ "$(cat "$work/$name.status" 2>/dev/null)" = 0 ] || failures=$((failures + 1))
done
total=$(awk -v a="$total_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ "$failures" -gt 0 ]; then
  echo "model: $failures check(s) FAILED (${total}s, $JOBS in parallel)"
  exit 1
fi
echo "model: all ${#names[@]} checks passed (${total}s, $JOBS in parallel)"
