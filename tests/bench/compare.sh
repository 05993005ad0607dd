#!/usr/bin/env bash
# Two builds of chime side by side, in one run: bench-submit and bench-spawn of a "before"
# checkout and an "after" checkout, alternating, so that both meet the same machine noise.
#
# Usage: tests/bench/compare.sh BEFORE_CHECKOUT AFTER_CHECKOUT
#   For example, a worktree of an older commit against this one:
#     git worktree add --detach ../chime-before 034ca83
#     (cd ../chime-before && cargo build --release --workspace) && cargo build --release --workspace
#     tests/bench/compare.sh ../chime-before .
#   env: ROUNDS=3                       before/after pairs per bench
#        SUBMIT_ARGS="--seconds 10 --connections 32"
#        SPAWN_ARGS="--jobs 10000 --parallel 2 --rounds 3"
#        BENCHES="submit spawn"         which benches to run
#        QUIET_BUSY=15 QUIET_MAX=120    before each run, wait (up to QUIET_MAX s) until the
#                                       machine's CPU, sampled over 2 s, is under QUIET_BUSY %
#                                       busy (other work on this 2-core machine skews the results)
#
# Both checkouts must already be built: `cargo build --release --workspace` in each.
# Each bench binary is run from its own checkout's target/release, with CHIMED_BIN and
# CHIMECTL_BIN pointing at the same build's daemon and client (the wire protocol differs between
# the two versions, so a bench client must only talk to its own build's chimed).
# Order per round: submit B, submit A, spawn B, spawn A (ABAB for each bench), never in parallel.
# Output: $RESULTS (default ./bench-results)/<timestamp>/<bench>-<before|after>-r<N>.txt,
# meta.txt, summary.md (the table, printed at the end by summarize.py).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
if [ $# -ne 2 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
BEFORE="$(cd "$1" && pwd)"
AFTER="$(cd "$2" && pwd)"
ROUNDS="${ROUNDS:-3}"
SUBMIT_ARGS="${SUBMIT_ARGS:---seconds 10 --connections 32}"
SPAWN_ARGS="${SPAWN_ARGS:---jobs 10000 --parallel 2 --rounds 3}"
BENCHES="${BENCHES:-submit spawn}"

QUIET_BUSY="${QUIET_BUSY:-15}"
QUIET_MAX="${QUIET_MAX:-120}"
NCPU="$(nproc)"

OUT="${RESULTS:-bench-results}/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
# Absolute: each bench runs from its own checkout.
OUT="$(cd "$OUT" && pwd)"

describe() { # checkout -> "rev (dirty)" line
    local dir="$1" rev dirty=""
    rev="$(git -C "$dir" rev-parse --short HEAD)"
    if [ -n "$(git -C "$dir" status --porcelain --untracked-files=no)" ]; then
        dirty=" + UNCOMMITTED CHANGES (the build may not be $rev)"
    fi
    echo "$rev$dirty  $(git -C "$dir" log -1 --format=%s "$rev" | cut -c1-80)"
}

check_build() { # checkout
    local dir="$1" b
    for b in chimed chimectl bench-submit bench-spawn; do
        if [ ! -x "$dir/target/release/$b" ]; then
            echo "missing $dir/target/release/$b: run 'cargo build --release --workspace' in $dir" >&2
            exit 1
        fi
    done
    # Sources newer than the daemon binary: the build is probably stale.
    local newer
    newer="$(find "$dir/daemon/src" "$dir/proto/src" "$dir/ctl/src" "$dir/tests/src" -name '*.rs' \
        -newer "$dir/target/release/chimed" 2>/dev/null | head -3)"
    if [ -n "$newer" ]; then
        echo "WARNING: sources in $dir are newer than its target/release/chimed (stale build?):" >&2
        echo "$newer" >&2
        echo "WARNING: stale build in $dir" >>"$OUT/meta.txt"
    fi
}

{
    echo "started:  $(date -Is)"
    echo "host:     $(hostname), $(nproc) cores, kernel $(uname -r)"
    echo "TMPDIR:   ${TMPDIR:-/tmp} ($(df -h "${TMPDIR:-/tmp}" | awk 'NR==2{print $1, $6}'))"
    echo "before:   $BEFORE  $(describe "$BEFORE")"
    echo "after:    $AFTER  $(describe "$AFTER")"
    echo "rounds:   $ROUNDS (order per round: submit B, submit A, spawn B, spawn A)"
    echo "submit:   $SUBMIT_ARGS"
    echo "spawn:    $SPAWN_ARGS"
} >"$OUT/meta.txt"
check_build "$BEFORE"
check_build "$AFTER"
cat "$OUT/meta.txt"

busy_ticks() { # busy (all but idle, iowait) and total clock ticks of the machine: "busy total"
    awk 'NR==1{b=0;t=0;for(i=2;i<=NF;i++){t+=$i;if(i!=5&&i!=6)b+=$i};print b, t}' /proc/stat
}

wait_quiet() { # prints the machine's busy % over the last 2 s sample and the seconds waited
    local start=$SECONDS b0 t0 b1 t1 pct
    while :; do
        read -r b0 t0 < <(busy_ticks); sleep 2; read -r b1 t1 < <(busy_ticks)
        pct=$(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
        if [ "$pct" -lt "$QUIET_BUSY" ] || [ $((SECONDS - start)) -ge "$QUIET_MAX" ]; then
            echo "$pct $((SECONDS - start))"
            return
        fi
        sleep 3
    done
}

run_one() { # bench side round
    local bench="$1" side="$2" round="$3" dir args file
    if [ "$side" = before ]; then dir="$BEFORE"; else dir="$AFTER"; fi
    if [ "$bench" = submit ]; then args="$SUBMIT_ARGS"; else args="$SPAWN_ARGS"; fi
    file="$OUT/$bench-$side-r$round.txt"
    local load0 rc=0 quiet waited b0 t0 b1 t1 times
    read -r quiet waited < <(wait_quiet)
    load0="$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "== $(date +%T) $bench $side round $round: $dir/target/release/bench-$bench $args" \
        "(machine ${quiet}% busy before, waited ${waited} s for quiet)"
    read -r b0 t0 < <(busy_ticks)
    # `time` reports the bench's CPU including its waited-for descendants (chimed, the jobs), so
    # the machine's busy CPU minus it is what other processes used during the run.
    # shellcheck disable=SC2086
    times="$( { TIMEFORMAT='%3R %3U %3S'; time (cd "$dir" && CHIMED_BIN="$dir/target/release/chimed" \
        CHIMECTL_BIN="$dir/target/release/chimectl" \
        RUST_BACKTRACE=1 "$dir/target/release/bench-$bench" $args >"$file" 2>&1) ; } 2>&1 )" || rc=$?
    read -r b1 t1 < <(busy_ticks)
    local wall user sys foreign
    read -r wall user sys <<<"$(echo "$times" | tail -1)"
    # ticks are 1/100 s summed over all cores
    foreign=$(echo "scale=1; (($b1 - $b0) / 100 - $user - $sys) * 100 / ($wall * $NCPU)" | bc)
    {
        echo "# exit $rc; wall $wall s; loadavg before: $load0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# machine busy before: ${quiet}% (waited ${waited} s); bench CPU: user $user s sys $sys s; other processes during the run: ${foreign}% of the machine"
    } >>"$file"
    echo "   other processes used ${foreign}% of the machine during the run"
    if [ "$rc" -ne 0 ]; then
        echo "   FAILED (exit $rc), see $file"
    else
        grep -E '^(chimed +acknowledged|ratio|          latency)' "$file" | sed 's/^/   /' || true
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    for bench in $BENCHES; do
        run_one "$bench" before "$round"
        run_one "$bench" after "$round"
    done
done
echo "finished: $(date -Is)" >>"$OUT/meta.txt"

python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
echo
echo "results: $OUT"
