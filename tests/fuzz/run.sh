#!/usr/bin/env bash
# Builds the fuzz targets and runs each for <seconds>, one after the other (one libFuzzer process at a time),
# then prints a line per target: seconds, executions, exec/s, coverage (cov = edges, ft = features), corpus size,
# peak RSS and crashes (inputs libFuzzer kept as crash-, leak-, timeout- or oom- files).
#   tests/fuzz/run.sh 600                     # every target, 10 minutes each
#   tests/fuzz/run.sh 60 safetensors npy      # just these
# Environment: FOVEA_FUZZ_BUILD (build dir, default <repo>/build-fuzz), CXX (default clang++).
# The committed seeds (tests/fuzz/corpus/<target>) are read, never written: what a run finds goes to
# $FOVEA_FUZZ_BUILD/corpus/<target>, and a later run starts from both. A crash input is in
# $FOVEA_FUZZ_BUILD/artifacts/<target>/; reproduce it with ./build-fuzz/fuzz_<target> <file>.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 <seconds> [target...]   (targets: safetensors npy config image models)" >&2
  exit 2
fi
seconds=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FOVEA_FUZZ_BUILD:-$root/build-fuzz}
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(safetensors npy config image models)

cmake -S "$here" -B "$build" -DCMAKE_CXX_COMPILER="${CXX:-clang++}" >/dev/null
cmake --build "$build" -j2 --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

# A model file or image under the sanitizers takes milliseconds; 10 s without progress is a hang. 2 GiB is far
# above what any reader may allocate for the inputs' size under the harnesses' ceilings.
# UBSan's options (halt on every report, ubsan.supp) are built into the binaries (common.hpp).
export FOVEA_NUM_THREADS=1
summary=()
failed=0
for t in "${targets[@]}"; do
  work="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  log="$build/logs/$t.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  dict=()
  [[ -f "$here/dict/$t.dict" ]] && dict=(-dict="$here/dict/$t.dict")
  # First the inputs of earlier crashes (tests/fuzz/regressions/<target>-*): each must now run clean.
  shopt -s nullglob
  regressions=("$here/regressions/$t"-*)
  shopt -u nullglob
  if [[ ${#regressions[@]} -gt 0 ]]; then
    if ! "$build/fuzz_$t" "${regressions[@]}" >"$log.regressions" 2>&1; then
      echo "== fuzz_$t: a regression input crashes again (see $log.regressions)"
      failed=1
      continue
    fi
    echo "== fuzz_$t: ${#regressions[@]} regression inputs run clean"
  fi
  echo "== fuzz_$t for ${seconds}s (log: $log)"
  set +e
  "$build/fuzz_$t" "$work" "$here/corpus/$t" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")
  execs=$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+)/\1/p' "$log" | tail -1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: +([0-9]+)/\1/p' "$log" | tail -1)
  rss=$(sed -nE 's/^stat::peak_rss_mb: +([0-9]+)/\1/p' "$log" | tail -1)
  crashes=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' -o -name 'slow-unit-*' \) | wc -l)
  [[ $rc -ne 0 ]] && failed=1
  summary+=("$(printf '%-12s %6ss %12s %8s %6s %7s %12s %6sMB %4s  exit %s' "$t" "$seconds" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$crashes" "$rc")")
  tail -n 3 "$log"
done
echo
printf '%-12s %7s %12s %8s %6s %7s %12s %8s %4s\n' target time executions exec/s cov ft corpus peak_rss crashes
printf '%s\n' "${summary[@]}"
exit $failed
