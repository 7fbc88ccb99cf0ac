#!/usr/bin/env bash
# Runs BenchmarkRoundTrip in interleaved rounds and reports the medians of
# the per-round ratios of the coordinator to chan-ack (a channel hand-off
# with an acknowledgement): the time per round trip and the p99. Each round
# runs both sides once per writer count, one -count=1 process each, the
# order flipped from round to round.
#
#   scripts/roundtrip-rounds.sh ROUNDS BENCHTIME WRITERS...
#   scripts/roundtrip-rounds.sh 6 1s 1 64
#
# CPU passes -test.cpu. Raw output stays in $OUT (default
# /tmp/roundtrip-rounds).
set -euo pipefail
rounds=${1:?rounds}
benchtime=${2:?benchtime}
shift 2
writers=("$@")
[ ${#writers[@]} -gt 0 ] || { echo "usage: $0 ROUNDS BENCHTIME WRITERS..." >&2; exit 2; }
out=${OUT:-/tmp/roundtrip-rounds}
root=$(git rev-parse --show-toplevel)
rm -rf "$out" && mkdir -p "$out"
(cd "$root" && go test -c -o "$out/rt.test" .)
extra=()
[ -n "${CPU:-}" ] && extra+=(-test.cpu "$CPU")

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$rounds"); do
  for w in "${writers[@]}"; do
    sides=(coordinator chan-ack)
    [ $((r % 2)) -eq 0 ] && sides=(chan-ack coordinator)
    for impl in "${sides[@]}"; do
      "$out/rt.test" -test.run '^$' -test.bench "^BenchmarkRoundTrip\$/^impl=$impl\$/^writers=$w\$" \
        -test.benchtime "$benchtime" -test.count 1 -test.benchmem "${extra[@]}" |
        awk -v r="$r" '/^BenchmarkRoundTrip/ { print r, $0 }' >>"$out/rounds.txt"
    done
  done
  echo "round $r done (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done

awk -f "$(dirname "$0")/median.awk" -f /dev/stdin "$out/rounds.txt" <<'AWK' | tee "$out/summary.txt"
{
  # BenchmarkRoundTrip/impl=X/writers=W-C
  split($2, part, "/")
  side = substr(part[2], 6)
  key = part[3]
  if (!(key in seen)) { seen[key] = 1; keys[++nkeys] = key }
  for (i = 3; i < NF; i++) {
    if ($(i + 1) == "ns/op") ns[$1, key, side] = $i
    if ($(i + 1) == "p99-ns") p99[$1, key, side] = $i
  }
  rounds[$1] = 1
}
END {
  for (k = 1; k <= nkeys; k++) {
    key = keys[k]
    nsr = ""; p99r = ""; cns = ""; ans = ""; cp = ""; ap = ""
    for (r in rounds) {
      if (!((r, key, "coordinator") in ns) || !((r, key, "chan-ack") in ns)) continue
      nsr = nsr " " ns[r, key, "coordinator"] / ns[r, key, "chan-ack"]
      p99r = p99r " " p99[r, key, "coordinator"] / p99[r, key, "chan-ack"]
      cns = cns " " ns[r, key, "coordinator"]; ans = ans " " ns[r, key, "chan-ack"]
      cp = cp " " p99[r, key, "coordinator"]; ap = ap " " p99[r, key, "chan-ack"]
    }
    printf "%s (medians of %d rounds)\n", key, length(rounds)
    printf "  coordinator ns/op %7.1f  p99 %8.0f ns\n", median(cns), median(cp)
    printf "  chan-ack    ns/op %7.1f  p99 %8.0f ns\n", median(ans), median(ap)
    printf "  coordinator/chan-ack: time %.3fx  p99 %.3fx\n", median(nsr), median(p99r)
    printf "  per-round time ratios:%s\n", nsr
  }
}
AWK
