#!/usr/bin/env bash
# vlmflow against DVC on the same pipelines, wall clock, process start included:
#   1. no-op rebuild of a 3-stage chain (each stage: an input file, a params file, one out)
#   2. a folder of 20,000 files of 4 KiB as a stage's input: first run and no-op
#   3. a 1 GiB file as a stage's input: first run
# DVC runs `dvc repro` in a `dvc init --no-scm` repository with the same stages in dvc.yaml;
# vlmflow runs `vlmflow -C DIR build` with the release binary.
#
#   benches/dvc_compare.sh            # installs DVC 3.67.x into a temporary venv (needs PyPI)
#   DVC_VENV=/path/to/venv benches/dvc_compare.sh    # reuse a venv that has dvc
#   VLMFLOW_BIN=/path/to/vlmflow ...                 # skip `cargo build --release`
#   REPS=7 FIRST_REPS=3 ...                          # repetitions of no-ops / first runs
#   QUIET_WAIT=120 ...      # before each measurement, wait up to 120 s for 3 s of idle CPUs (0: no wait)
#
# Needs ~1.3 GiB free in ${TMPDIR:-/tmp}; everything it creates is removed on exit.
set -euo pipefail
shopt -s inherit_errexit
# A '.' decimal point for $EPOCHREALTIME; UTF-8 so that printf pads "×" as one character.
if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then export LC_ALL=C.UTF-8; else export LC_ALL=C; fi

REPS=${REPS:-7}
FIRST_REPS=${FIRST_REPS:-3}
QUIET_WAIT=${QUIET_WAIT:-0}
DVC_WANT="3.67"
SETTLE=2.5 # > vlmflow's 2 s racy window: files younger than that are re-hashed on every build

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vlmflow-dvc-XXXXXX")
cleanup() {
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------

if [[ -n ${VLMFLOW_BIN:-} ]]; then
    vlmflow=$VLMFLOW_BIN
else
    log "building vlmflow (cargo build --release) ..."
    (cd "$repo" && cargo build --release --quiet)
    vlmflow=$repo/target/release/vlmflow
fi
[[ -x $vlmflow ]] || { log "no vlmflow binary at $vlmflow"; exit 1; }

if [[ -n ${DVC_VENV:-} ]]; then
    venv=$DVC_VENV
else
    venv=$work/venv
    log "installing dvc==$DVC_WANT.* into a temporary venv ($venv) ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "dvc==$DVC_WANT.*"; then
        log "dvc $DVC_WANT.* is not available; installing the newest dvc 3.x instead"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "dvc>=3,<4"
    fi
fi
dvc=$venv/bin/dvc
[[ -x $dvc ]] || { log "no dvc in $venv"; exit 1; }
export DVC_NO_ANALYTICS=1 VLMFLOW_NO_PROGRESS=1
unset VLMFLOW_LOG

dvc_version=$("$dvc" --version)
vlmflow_version="$("$vlmflow" --version) ($(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
[[ $dvc_version == "$DVC_WANT".* ]] || log "note: comparing with dvc $dvc_version, not $DVC_WANT.x"

# --- timing ------------------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

# time_ms LOG CMD...: runs CMD with its output in LOG, prints the wall time in milliseconds.
time_ms() {
    local logfile=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    if ! "$@" >"$logfile" 2>&1; then
        log "failed: $*"
        cat "$logfile" >&2
        return 1
    fi
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}

# cpu_mark: MARK_BUSY = CPU ticks all cores spent busy since boot; MARK_OWN = ticks of this shell
# and the children it has reaped. Their difference over a run is what other processes took: a
# timing on a shared 2-core machine is only as good as its quiet.
cpu_mark() {
    local _cpu u n s _idle _iow irq sirq steal _rest st
    read -r _cpu u n s _idle _iow irq sirq steal _rest </proc/stat
    read -r -a st <"/proc/$BASHPID/stat"
    MARK_BUSY=$((u + n + s + irq + sirq + steal))
    MARK_OWN=$((st[13] + st[14] + st[15] + st[16]))
}

# wait_quiet: with QUIET_WAIT > 0, waits (at most that many seconds) until the CPUs have been
# at least 95% idle for 3 s in a row, so that a shared machine's other work does not skew a run.
wait_quiet() {
    ((QUIET_WAIT > 0)) || return 0
    local deadline=$((SECONDS + QUIET_WAIT)) quiet=0 _cpu u n s idle iow irq sirq steal _rest b0 t0 b1 t1
    while ((quiet < 3)); do
        if ((SECONDS >= deadline)); then
            log "  (the CPUs did not become idle within ${QUIET_WAIT} s; measuring anyway)"
            return 0
        fi
        read -r _cpu u n s idle iow irq sirq steal _rest </proc/stat
        b0=$((u + n + s + irq + sirq + steal)) t0=$((b0 + idle + iow))
        sleep 1
        read -r _cpu u n s idle iow irq sirq steal _rest </proc/stat
        b1=$((u + n + s + irq + sirq + steal)) t1=$((b1 + idle + iow))
        if (((b1 - b0) * 20 <= t1 - t0)); then quiet=$((quiet + 1)); else quiet=0; fi
    done
}

# expect LOG TEXT: the run's output must contain TEXT (it did what we think we timed).
expect() {
    grep -qF -- "$2" "$1" || { log "expected '$2' in:"; cat "$1" >&2; exit 1; }
}

vl_build() { "$vlmflow" -C "$1" build; }
dvc_repro() { (cd "$1" && "$dvc" repro); }
# Back to never built: no run records, no hash/stat cache, no out.
vl_reset() { rm -rf "$1/cache" "$1/done.txt"; }
dvc_reset() { rm -rf "$1/dvc.lock" "$1/done.txt" "$1/.dvc/cache" "$1/.dvc/tmp" "$1-site-cache"; }

# measure LABEL DIR WANT RUNNER N [RESET]: N timed runs of RUNNER on DIR, each output checked for
# WANT. With RESET: the workspace is reset before each run (first runs); without: one untimed
# warm-up first (no-ops). Prints "median min others%" (others%: the share of all cores other
# processes used during the timed runs).
measure() {
    local label=$1 dir=$2 want=$3 runner=$4 n=$5 reset=${6:-} times=() i b0 o0 busy=0 own=0
    if [[ -z $reset ]]; then
        $runner "$dir" >"$work/warm.log" 2>&1
        expect "$work/warm.log" "$want"
    fi
    for ((i = 0; i < n; i++)); do
        if [[ -n $reset ]]; then $reset "$dir"; fi
        wait_quiet
        cpu_mark
        b0=$MARK_BUSY o0=$MARK_OWN
        times+=("$(time_ms "$work/run.log" $runner "$dir")")
        cpu_mark
        busy=$((busy + MARK_BUSY - b0)) own=$((own + MARK_OWN - o0))
        expect "$work/run.log" "$want"
    done
    log "  $label: ${times[*]} ms"
    printf '%s\n' "${times[@]}" | sort -n | awk -v busy="$busy" -v own="$own" -v hz="$CLK_TCK" \
        -v ncpu="$NCPU" '{ v[NR] = $1; sum += $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        others = (busy - own) / hz / (sum / 1000 * ncpu) * 100
        printf "%.1f %.1f %.0f\n", m, v[1], (others < 0 ? 0 : (others > 100 ? 100 : others)) }'
}

# --- workspaces --------------------------------------------------------------------------------

# new_pair NAME: $work/NAME/{dvc,vlmflow}, the DVC one initialized.
new_pair() {
    mkdir -p "$work/$1/dvc" "$work/$1/vlmflow"
    (
        cd "$work/$1/dvc"
        "$dvc" init --no-scm --quiet
        "$dvc" config core.analytics false
        # DVC's hash cache ("state") goes here rather than /var/tmp/dvc, so it starts empty
        # and is removed with the rest.
        "$dvc" config core.site_cache_dir "$work/$1/dvc-site-cache"
    ) >/dev/null
}

# chain3 DIR: the 3-stage chain's files (inputs and params), the same for both tools.
chain3_files() {
    local i
    mkdir -p "$1/stages"
    for i in 1 2 3; do
        echo "input of s$i" >"$1/in$i.txt"
        printf '# params of s%d\nseed = %d\nlr = 1e-3\n' "$i" "$i" >"$1/stages/s$i.toml"
    done
}

setup_chain3() {
    local d=$work/chain3 i prev
    new_pair chain3
    chain3_files "$d/dvc"
    chain3_files "$d/vlmflow"
    {
        echo "stages:"
        for i in 1 2 3; do
            prev=""
            if ((i > 1)); then prev=", o$((i - 1))"; fi
            echo "  s$i:"
            echo "    cmd: printf $i > o$i"
            echo "    deps: [in$i.txt$prev]"
            echo "    params:"
            echo "      - stages/s$i.toml:"
            echo "          - seed"
            echo "          - lr"
            echo "    outs: [o$i]"
        done
    } >"$d/dvc/dvc.yaml"
    for i in 1 2 3; do
        prev=""
        if ((i > 1)); then prev=", \"o$((i - 1))\""; fi
        echo "[stages.s$i]"
        echo 'kind = "cmd"'
        echo "cmd = \"printf $i > o$i\""
        # o1, o2 are outs of the stage before: an implicit need, as in DVC.
        echo "inputs = [\"in$i.txt\"$prev]"
        echo "outs = [\"o$i\"]"
        echo
    done >"$d/vlmflow/Stagefile"
}

# one_stage NAME INPUT: a one-stage pipeline reading INPUT (a file or folder made by the caller).
one_stage() {
    local d=$work/$1
    cat >"$d/dvc/dvc.yaml" <<EOF
stages:
  use:
    cmd: printf done > done.txt
    deps: [$2]
    outs: [done.txt]
EOF
    cat >"$d/vlmflow/Stagefile" <<EOF
[stages.use]
kind = "cmd"
cmd = "printf done > done.txt"
inputs = ["$2"]
outs = ["done.txt"]
EOF
}

# make_folder DIR: 20,000 files of 4 KiB, distinct contents.
make_folder() {
    python3 - "$1" <<'EOF'
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
pad = bytes(4088)
for i in range(20000):
    with open(os.path.join(d, f"img_{i:05}.png"), "wb") as f:
        f.write(i.to_bytes(8, "little") + pad)
EOF
}

# --- scenarios ---------------------------------------------------------------------------------

results=()
row() { results+=("$1|$2|$3"); } # scenario | dvc "median min others" | vlmflow "median min others"
DVC_UP="Data and pipelines are up to date."

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "load before: $load_before"

log "[1/3] no-op of a 3-stage chain"
setup_chain3
time_ms "$work/first.log" dvc_repro "$work/chain3/dvc" >/dev/null
time_ms "$work/first.log" vl_build "$work/chain3/vlmflow" >/dev/null
expect "$work/first.log" "3 stages: 3 ran"
sleep "$SETTLE"
d=$(measure dvc "$work/chain3/dvc" "$DVC_UP" dvc_repro "$REPS")
v=$(measure vlmflow "$work/chain3/vlmflow" "3 stages: 3 fresh" vl_build "$REPS")
row "no-op, 3-stage chain" "$d" "$v"

log "[2/3] a folder of 20,000 × 4 KiB files as input"
new_pair folder
make_folder "$work/folder/dvc/data/raw"
cp -a "$work/folder/dvc/data" "$work/folder/vlmflow/"
one_stage folder data/raw
sleep "$SETTLE"
d=$(measure "dvc first" "$work/folder/dvc" "Running stage 'use'" dvc_repro "$FIRST_REPS" dvc_reset)
v=$(measure "vlmflow first" "$work/folder/vlmflow" "1 stage: 1 ran" vl_build "$FIRST_REPS" vl_reset)
row "20,000-file folder, first run" "$d" "$v"
sleep "$SETTLE"
d=$(measure dvc "$work/folder/dvc" "$DVC_UP" dvc_repro "$REPS")
v=$(measure vlmflow "$work/folder/vlmflow" "1 stage: 1 fresh" vl_build "$REPS")
row "20,000-file folder, no-op" "$d" "$v"
rm -rf "$work/folder" # free the inodes before the big file

log "[3/3] a 1 GiB file as input"
new_pair big
mkdir -p "$work/big/dvc/data" "$work/big/vlmflow/data"
head -c $((1 << 30)) /dev/urandom >"$work/big/dvc/data/big.bin"
cp "$work/big/dvc/data/big.bin" "$work/big/vlmflow/data/big.bin"
sync
cat "$work/big/dvc/data/big.bin" "$work/big/vlmflow/data/big.bin" >/dev/null # page cache
one_stage big data/big.bin
d=$(measure "dvc first" "$work/big/dvc" "Running stage 'use'" dvc_repro "$FIRST_REPS" dvc_reset)
v=$(measure "vlmflow first" "$work/big/vlmflow" "1 stage: 1 ran" vl_build "$FIRST_REPS" vl_reset)
row "1 GiB file, first run" "$d" "$v"
rm -rf "$work/big"

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
log "load after: $load_after"

# --- table -------------------------------------------------------------------------------------

fmt_time() { # ms → "0.55 s" / "12.3 ms"
    awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.2f s", v / 1000; else printf "%.1f ms", v }'
}

echo
echo "DVC $dvc_version vs $vlmflow_version — $(date -u +%Y-%m-%d), $NCPU cores, $(uname -sr)"
echo "wall clock, process start included; median (min) of $REPS no-ops after a warm-up, of $FIRST_REPS first runs"
echo "(each from a reset workspace); load average (1, 5, 15 min) before: $load_before; after: $load_after"
echo
printf '| %-30s | %-20s | %-20s | %-11s | %-16s |\n' "scenario" "DVC" "vlmflow" "DVC/vlmflow" "others' CPU d/v"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..32})" "$(printf -- '-%.0s' {1..22})" \
    "$(printf -- '-%.0s' {1..22})" "$(printf -- '-%.0s' {1..13})" "$(printf -- '-%.0s' {1..18})"
busy_rows=0
for r in "${results[@]}"; do
    IFS='|' read -r name dv vv <<<"$r"
    read -r dmed dmin dbusy <<<"$dv"
    read -r vmed vmin vbusy <<<"$vv"
    ds="$(fmt_time "$dmed") ($(fmt_time "$dmin"))"
    vs="$(fmt_time "$vmed") ($(fmt_time "$vmin"))"
    ratio=$(awk -v a="$dmed" -v b="$vmed" 'BEGIN { r = a / b; printf (r < 10 ? "%.1f×" : "%.0f×"), r }')
    printf '| %-30s | %-20s | %-20s | %-11s | %-16s |\n' "$name" "$ds" "$vs" "$ratio" "$dbusy% / $vbusy%"
    if ((dbusy >= 5 || vbusy >= 5)); then busy_rows=$((busy_rows + 1)); fi
done
echo
echo "others' CPU: share of all cores that other processes used during the timed runs (DVC / vlmflow)."
if ((busy_rows > 0)); then
    echo "WARNING: $busy_rows row(s) ran while other processes used ≥ 5% of the CPUs; rerun when the machine is idle."
fi
