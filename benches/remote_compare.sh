#!/usr/bin/env bash
# vlmflow push/pull against dvc push/pull, to the same S3-compatible server (moto on 127.0.0.1,
# started by tests/servers/moto), wall clock, process start included:
#   1. one stage out of one 1 GiB file
#   2. one stage out of 20,000 files of 4 KiB
# Each repetition pushes to an emptied server (moto's reset) and pulls into a fresh clone that holds
# only the pipeline's files (vlmflow: Stagefile; DVC: .dvc/config and the .dvc file).
#
#   benches/remote_compare.sh                       # builds the release binary, installs DVC
#   DVC_VENV=/path/to/venv VLMFLOW_BIN=/path/to/vlmflow REPS=3 benches/remote_compare.sh
#
# Needs ~4 GiB free in ${TMPDIR:-/tmp} and ~3 GiB of memory for moto; everything it creates is
# removed on exit.
set -euo pipefail
if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then export LC_ALL=C.UTF-8; else export LC_ALL=C; fi

REPS=${REPS:-3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vlmflow-remote-XXXXXX")
port=$((30000 + $$ % 20000))
moto_pid=""
cleanup() {
    [[ -n $moto_pid ]] && kill "$moto_pid" 2>/dev/null
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

if [[ -n ${VLMFLOW_BIN:-} ]]; then
    vlmflow=$VLMFLOW_BIN
else
    log "building vlmflow (cargo build --release) ..."
    (cd "$repo" && cargo build --release --quiet)
    vlmflow=$repo/target/release/vlmflow
fi
if [[ -n ${DVC_VENV:-} ]]; then
    venv=$DVC_VENV
else
    venv=$work/venv
    log "installing dvc[s3] into a temporary venv ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "dvc[s3]>=3,<4"
fi
dvc=$venv/bin/dvc

moto_pid=$("$repo/tests/servers/moto" "$port" vlmflow-bench)
python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$port/dvc-bench', method='PUT'))"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$port DVC_NO_ANALYTICS=1 VLMFLOW_NO_PROGRESS=1
reset_server() {
    python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$port/moto-api/reset', method='POST'))"
    for b in vlmflow-bench dvc-bench; do
        python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$port/$b', method='PUT'))"
    done
}

# time_ms CMD...: runs CMD quietly (its output in $work/run.log), prints milliseconds.
time_ms() {
    local t0 t1
    t0=$EPOCHREALTIME
    "$@" >"$work/run.log" 2>&1 || { log "failed: $*"; cat "$work/run.log" >&2; exit 1; }
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", (b - a) * 1000 }'
}

stagefile() {
    cat <<'EOF'
[stages.big]
kind = "cmd"
cmd = "mkdir -p out && head -c 1073741824 /dev/urandom > out/big.bin"
outs = ["out/big.bin"]

[stages.many]
kind = "cmd"
cmd = "python3 -c \"import os; os.makedirs('out/many', exist_ok=True); [open(f'out/many/f{i:05}', 'wb').write(os.urandom(4096)) for i in range(20000)]\""
outs = ["out/many"]
EOF
}

# The data once, in a vlmflow workspace; the DVC workspace tracks copies of the same files.
src=$work/src
mkdir -p "$src"
stagefile >"$src/Stagefile"
log "making the data (1 GiB file, 20,000 files) ..."
"$vlmflow" -C "$src" build >/dev/null
dsrc=$work/dvc-src
mkdir -p "$dsrc"
(cd "$dsrc" && "$dvc" init --no-scm -q && cp "$src/out/big.bin" big.bin && cp -r "$src/out/many" many &&
    chmod -R u+w big.bin many && "$dvc" add -q big.bin && "$dvc" add -q many)

declare -A times
for ((rep = 0; rep < REPS; rep++)); do
    reset_server
    remote_v=s3://vlmflow-bench/rep$rep
    (cd "$dsrc" && "$dvc" remote add -f -d bench "s3://dvc-bench/rep$rep" >/dev/null &&
        "$dvc" remote modify bench endpointurl "$AWS_ENDPOINT_URL")
    for what in big many; do
        times[v_push_$what]+="$(time_ms env VLMFLOW_REMOTE="$remote_v" "$vlmflow" -C "$src" push "$what") "
        target=$([[ $what == big ]] && echo big.bin.dvc || echo many.dvc)
        times[d_push_$what]+="$(cd "$dsrc" && time_ms "$dvc" push -q "$target") "

        clone=$work/clone-v
        rm -rf "$clone" && mkdir -p "$clone" && cp "$src/Stagefile" "$clone/"
        times[v_pull_$what]+="$(time_ms env VLMFLOW_REMOTE="$remote_v" "$vlmflow" -C "$clone" pull "$what") "
        chmod -R u+w "$clone" && rm -rf "$clone"

        dclone=$work/clone-d
        rm -rf "$dclone" && mkdir -p "$dclone/.dvc" && cp "$dsrc/.dvc/config" "$dclone/.dvc/" && cp "$dsrc/$target" "$dclone/"
        times[d_pull_$what]+="$(cd "$dclone" && time_ms "$dvc" pull -q "$target") "
        rm -rf "$dclone"
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-28s %12s %12s %8s\n' "median of $REPS (ms)" vlmflow dvc "dvc/vlm"
for what in big many; do
    for op in push pull; do
        v=$(median <<<"${times[v_${op}_$what]}")
        d=$(median <<<"${times[d_${op}_$what]}")
        label=$([[ $what == big ]] && echo "1 GiB file" || echo "20,000 files")
        printf '%-28s %12s %12s %7.1f×\n' "$op, $label" "$v" "$d" "$(awk -v a="$d" -v b="$v" 'BEGIN { print a / b }')"
    done
done
log "raw: $(for k in "${!times[@]}"; do printf '%s=[%s] ' "$k" "${times[$k]}"; done)"
log "$("$vlmflow" --version), $("$dvc" --version 2>/dev/null | head -1) (dvc), moto 5.2.6, $(nproc) cores"
