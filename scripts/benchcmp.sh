#!/usr/bin/env bash
# Compares the core package's benchmarks between two commits, interleaved
# round by round (fsync latency on shared machines drifts within minutes, so
# a block of one then a block of the other would measure the drift).
#
#   scripts/benchcmp.sh BASE_REV 'BenchmarkDurable|BenchmarkRoundTrip' [rounds] [benchtime]
#
# It builds one test binary per side, runs them alternately `rounds` times
# (default 5) and prints benchstat's comparison (old = BASE_REV, new = the
# working tree). Raw outputs stay in $OUT (default /tmp/benchcmp).
set -euo pipefail
base=${1:?base revision}
pattern=${2:?benchmark regexp}
rounds=${3:-5}
benchtime=${4:-1s}
out=${OUT:-/tmp/benchcmp}
root=$(git rev-parse --show-toplevel)
rm -rf "$out" && mkdir -p "$out"
git -C "$root" worktree add -q --detach "$out/base" "$base"
trap 'git -C "$root" worktree remove --force "$out/base"' EXIT
(cd "$out/base" && go test -c -o "$out/old.test" .)
(cd "$root" && go test -c -o "$out/new.test" .)
for r in $(seq "$rounds"); do
  for side in old new; do
    "$out/$side.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime" \
      -test.count 1 -test.benchmem >>"$out/$side.txt"
  done
  echo "round $r done" >&2
done
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da "$out/old.txt" "$out/new.txt"
