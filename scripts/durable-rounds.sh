#!/usr/bin/env bash
# Runs BenchmarkDurable in interleaved rounds and reports the median of the
# per-round ratios. Fsync latency drifts by 2x within minutes on a shared
# machine, so a ratio counts only between runs taken next to each other: each
# round runs every side once per writer count, one -count=1 process each,
# rotating which side goes first from round to round.
#
#   scripts/durable-rounds.sh [-b BASE_REV] [-n NEW_REV] ROUNDS BENCHTIME WRITERS...
#   scripts/durable-rounds.sh 5 1s 1 16 256
#   SIMSYNC=1ms scripts/durable-rounds.sh -b main 5 1s 256
#   CPU=1,2,4 scripts/durable-rounds.sh 5 1s 256
#
# Sides: "ideal" (group-fsync-ideal) and "new" (the coordinator of the
# working tree, or of NEW_REV with -n), with -b "old" (the coordinator
# of BASE_REV), and with SEQ=1 "seq" (sequenced-ideal: the ideal with the
# coordinator's two goroutines between writers and disk). A revision is built with the working tree's bench_test.go,
# so that every side runs the same benchmark. Per writer count (and -cpu value) it prints the median ns/op,
# p99 and writes/sync of each side and the medians of the per-round ratios:
# throughput new/ideal (ideal ns/op / new ns/op; above 1 is faster than the
# ideal), p99 new/ideal, and with -b new/old throughput and p99.
#
# SIMSYNC passes -simsync (a sleep instead of fsync); CPU passes -test.cpu;
# PHASES=1 passes -phases and adds each side's median phases between two
# syncs (wake, gather, handoff, write, sync; see benchCycle in
# bench_test.go);
# IMPL names the coordinator's implementation in the benchmark (default
# coordinator; coordinator-log for the delta that only logs).
# Raw outputs, one benchstat-readable file per side, stay in $OUT (default
# /tmp/durable-rounds).
set -euo pipefail
base= newrev=
while [ $# -gt 0 ]; do
  case $1 in
  -b) base=${2:?base revision}; shift 2 ;;
  -n) newrev=${2:?new revision}; shift 2 ;;
  *) break ;;
  esac
done
rounds=${1:?rounds}
benchtime=${2:?benchtime}
shift 2
writers=("$@")
[ ${#writers[@]} -gt 0 ] || { echo "usage: $0 [-b BASE_REV] [-n NEW_REV] ROUNDS BENCHTIME WRITERS..." >&2; exit 2; }
out=${OUT:-/tmp/durable-rounds}
root=$(git rev-parse --show-toplevel)
rm -rf "$out" && mkdir -p "$out"

# build REV BINARY builds the package at REV with the working tree's
# benchmarks.
build() {
  mkdir "$out/src-$2"
  git -C "$root" archive "$1" | tar -x -C "$out/src-$2"
  cp "$root/bench_test.go" "$out/src-$2/bench_test.go"
  (cd "$out/src-$2" && GOWORK=off go test -c -o "$out/$2.test" .)
}
if [ -n "$newrev" ]; then
  build "$newrev" new
else
  (cd "$root" && go test -c -o "$out/new.test" .)
fi
sides=(ideal new)
if [ -n "$base" ]; then
  build "$base" old
  sides+=(old)
fi
[ -n "${SEQ:-}" ] && sides+=(seq)

extra=()
[ -n "${SIMSYNC:-}" ] && extra+=(-simsync "$SIMSYNC")
[ -n "${CPU:-}" ] && extra+=(-test.cpu "$CPU")
[ -n "${PHASES:-}" ] && extra+=(-phases)

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$rounds"); do
  for w in "${writers[@]}"; do
    n=${#sides[@]}
    for i in $(seq 0 $((n - 1))); do
      side=${sides[$(((i + r) % n))]}
      bin=$out/new.test impl=${IMPL:-coordinator}
      case $side in
      ideal) impl=group-fsync-ideal ;;
      seq) impl=sequenced-ideal ;;
      old) bin=$out/old.test ;;
      esac
      "$bin" -test.run '^$' -test.bench "^BenchmarkDurable\$/^writers=$w\$/^impl=$impl\$" \
        -test.benchtime "$benchtime" -test.count 1 -test.benchmem "${extra[@]}" |
        tee -a "$out/$side.txt" |
        awk -v r="$r" -v side="$side" '/^BenchmarkDurable/ { print r, side, $0 }' >>"$out/rounds.txt"
    done
  done
  echo "round $r done (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done

awk -f "$(dirname "$0")/median.awk" -f /dev/stdin "$out/rounds.txt" <<'AWK' | tee "$out/summary.txt"
function add(k, v) { vals[k] = vals[k] " " v }
BEGIN { split("ideal new old seq", names, " ") }
{
  round = $1; side = $2; name = $3
  # BenchmarkDurable/writers=W/impl=X-C: the key is writers=W with the -cpu suffix.
  split(name, part, "/")
  cpu = ""
  if (match(part[3], /-[0-9]+$/)) cpu = substr(part[3], RSTART)
  key = part[2] cpu
  if (!(key in seen)) { seen[key] = 1; keys[++nkeys] = key }
  for (i = 5; i < NF; i++) {
    if ($(i + 1) == "ns/op") ns[round, key, side] = $i
    if ($(i + 1) == "p99-ns") p99[round, key, side] = $i
    if ($(i + 1) == "writes/sync") wps[round, key, side] = $i
    if ($(i + 1) ~ /-µs$/) { ph = $(i + 1); sub(/-µs$/, "", ph); add(key SUBSEP side SUBSEP "ph-" ph, $i) }
  }
  rounds[round] = 1
}
END {
  for (k = 1; k <= nkeys; k++) {
    key = keys[k]
    for (round in rounds) {
      for (s = 1; s <= 4; s++) {
        side = names[s]
        if ((round, key, side) in ns) {
          add(key SUBSEP side SUBSEP "ns", ns[round, key, side])
          add(key SUBSEP side SUBSEP "p99", p99[round, key, side] / 1000)
          add(key SUBSEP side SUBSEP "wps", wps[round, key, side])
        }
      }
      for (s = 2; s <= 4; s++) {
        side = names[s]
        if (((round, key, side) in ns) && ((round, key, "ideal") in ns)) {
          add(key SUBSEP side SUBSEP "thr", ns[round, key, "ideal"] / ns[round, key, side])
          add(key SUBSEP side SUBSEP "p99r", p99[round, key, side] / p99[round, key, "ideal"])
        }
      }
      if (((round, key, "new") in ns) && ((round, key, "old") in ns)) {
        add(key SUBSEP "nvo" SUBSEP "thr", ns[round, key, "old"] / ns[round, key, "new"])
        add(key SUBSEP "nvo" SUBSEP "p99r", p99[round, key, "new"] / p99[round, key, "old"])
      }
    }
    printf "%s (medians of %d rounds)\n", key, length(rounds)
    for (s = 1; s <= 4; s++) {
      side = names[s]
      if (!((key SUBSEP side SUBSEP "ns") in vals)) continue
      printf "  %-5s ns/op %9.0f  p99 %8.1f us  writes/sync %6.1f", side, \
        median(vals[key, side, "ns"]), median(vals[key, side, "p99"]), median(vals[key, side, "wps"])
      if (side != "ideal" && ((key SUBSEP side SUBSEP "thr") in vals))
        printf "  | vs ideal: throughput %.3fx  p99 %.3fx", median(vals[key, side, "thr"]), median(vals[key, side, "p99r"])
      printf "\n"
      if ((key SUBSEP side SUBSEP "ph-sync") in vals) {
        printf "  %-5s phases (us):", side
        split("wake gather handoff write sync", phs, " ")
        for (j = 1; j <= 5; j++)
          if ((key SUBSEP side SUBSEP "ph-" phs[j]) in vals)
            printf " %s %.1f", phs[j], median(vals[key, side, "ph-" phs[j]])
        printf "\n"
      }
    }
    if ((key SUBSEP "nvo" SUBSEP "thr") in vals)
      printf "  new vs old: throughput %.3fx  p99 %.3fx   (per round: %s )\n", \
        median(vals[key, "nvo", "thr"]), median(vals[key, "nvo", "p99r"]), vals[key, "nvo", "thr"]
    if ((key SUBSEP "new" SUBSEP "thr") in vals)
      printf "  per-round throughput new/ideal:%s\n", vals[key, "new", "thr"]
    if ((key SUBSEP "seq" SUBSEP "thr") in vals)
      printf "  per-round throughput seq/ideal:%s\n", vals[key, "seq", "thr"]
  }
}
AWK
