#!/usr/bin/env bash
# The watcher CLI as a work queue beside the process-spawn floor: `watcher DIR --once
# --workers W -- true` over N files against `xargs -P W -n1 true` over the same N names,
# interleaved, for several rounds; prints each round and the median of the per-round ratios
# (xargs time / watcher time: 1.0 means as fast as xargs, higher is faster).
#
#   benches/cli_throughput.sh [-n FILES] [-r ROUNDS] [-w WORKERS] [-- WATCHER_ARGS...]
#   benches/cli_throughput.sh -b OTHER_BIN ...   # also measure OTHER_BIN (an A/B of two builds)
#   benches/cli_throughput.sh --smoke            # 40 files, 1 round: checks the script (CI)
#
# Defaults: 2000 files, 7 rounds, 4 workers, fsync on (the watcher's default). Builds the
# release binary first (or uses $WATCHER_BIN). Before each timed run the inbox is made afresh
# and `sync`ed, untimed, so that neither side pays for writing back the other's files.
set -euo pipefail
cd "$(dirname "$0")/.."

files=2000 rounds=7 workers=4 smoke=0
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) files=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -w) workers=$2; shift 2 ;;
    -b) bins+=("$2"); shift 2 ;;
    --smoke) smoke=1 files=40 rounds=1; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [-n FILES] [-r ROUNDS] [-w WORKERS] [-b BIN]... [--smoke] [-- WATCHER_ARGS...]" >&2; exit 2 ;;
  esac
done
extra=("$@")

if [ -z "${WATCHER_BIN:-}" ]; then
  cargo build --release --quiet -p watcher --bin watcher
  WATCHER_BIN=$PWD/target/release/watcher
fi
bins=("$WATCHER_BIN" "${bins[@]}")

work=$(mktemp -d "${TMPDIR:-/tmp}/cli-throughput.XXXXXX")
# KEEP_WORK=1 leaves the work directory (and says where): deleting 30 000 files taxes the next
# run's file creation on an ext4 without a journal (see below), so a series of runs keeps them
# and removes them all at the end.
if [ -n "${KEEP_WORK:-}" ]; then
  trap 'echo "kept $work" >&2' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi

# A fresh inbox of $files small files (names f00001.txt ...), written back to disk. Earlier
# inboxes are removed only at the end: on an ext4 without a journal (this VM's), every inode
# allocation skips the inodes freed in the last seconds one by one (`recently_deleted` in
# `find_inode_bit`), so deleting the last round's 4000 files would tax the next round's
# status files.
n=0
fill() {
  n=$((n + 1))
  in=$work/in$n
  mkdir "$in"
  (cd "$in" && seq -f 'f%05g.txt' 1 "$files" | xargs touch)
  for f in "$in"/*; do printf '%s\n' "${f##*/}" > "$f"; done
  sync
}
seq -f 'f%05g.txt' 1 "$files" > "$work/names"

now() { date +%s%N; }
# Each sets `took` to the wall time of one run, in µs (no subshell: `fill` counts inboxes).
time_xargs() {
  fill
  local t0
  t0=$(now)
  (cd "$in" && xargs -P "$workers" -n1 true < "$work/names")
  took=$((($(now) - t0) / 1000))
}
time_watcher() {
  fill
  local t0 rc=0 done
  t0=$(now)
  "$1" "$in" --once --workers "$workers" "${extra[@]}" -- true 2> "$work/stderr" || rc=$?
  took=$((($(now) - t0) / 1000))
  done=$(find "$in/processed" -maxdepth 1 -name '*.txt' | wc -l)
  if [ "$rc" -ne 0 ] || [ "$done" -ne "$files" ]; then
    echo "watcher failed (exit $rc, $done of $files processed):" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# What creating a file costs on this file system now: the watcher creates one status file per
# file, xargs none. On an ext4 without a journal each new inode skips the inodes freed in the
# last minutes one by one (`recently_deleted`), so after a mass deletion (another run's clean-up,
# a build, a test suite) this figure can grow 20-fold and, with it, the watcher's time. Printed
# before and after the rounds, so that a reader can tell a taxed run from a quiet one.

creation_cost() {

  local d=$work/probe-$1 t0
  mkdir "$d"
  t0=$(now)
  (cd "$d" && seq -f 'p%05g' 1 "$files" | xargs touch)
  awk -v t="$(($(now) - t0))" -v n="$files" 'BEGIN {printf "%.0f", t / n / 1000}'
}

echo "files=$files rounds=$rounds workers=$workers watcher args: ${extra[*]:-(none)}; $(nproc) cores"
echo "creating a file here: $(creation_cost before) µs (touch of $files files)"
declare -A ratios
for ((r = 1; r <= rounds; r++)); do
  # Alternate which side goes first, so that drift in the machine's load evens out.
  line="round $r:"
  if ((r % 2)); then time_xargs; xs=$took; fi
  wts=()
  for i in "${!bins[@]}"; do time_watcher "${bins[$i]}"; wts+=("$took"); done
  if ! ((r % 2)); then time_xargs; xs=$took; fi
  line+=$(awk -v x="$xs" 'BEGIN {printf " xargs %.3f s", x / 1e6}')
  for i in "${!bins[@]}"; do
    ratio=$(awk -v x="$xs" -v w="${wts[$i]}" 'BEGIN {printf "%.4f", x / w}')
    ratios[$i]+="$ratio "
    line+=$(awk -v i="$i" -v w="${wts[$i]}" -v r="$ratio" 'BEGIN {printf ", watcher[%d] %.3f s (%.2f×)", i, w / 1e6, r}')
  done
  echo "$line"
done
for i in "${!bins[@]}"; do
  m=$(tr ' ' '\n' <<< "${ratios[$i]}" | grep . | median)
  printf 'median ratio xargs/watcher[%d] (%s): %.3f×\n' "$i" "${bins[$i]}" "$m"
done
echo "creating a file here after the rounds: $(creation_cost after) µs"
[ "$smoke" = 1 ] && echo "smoke run: the figures above mean nothing"
exit 0
