#!/usr/bin/env bash
# Run the project's benchmarks, one after another, and write their sections of BENCHMARKS.md.
# `scripts/bench.sh -h` says how; `scripts/bench.sh --list` lists every benchmark with its command.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One benchmark a line: name | set | minutes | tool:package ... | command | quick command
#   set: "default" runs without --only; "named" runs only when named in --only or with --all.
#   minutes: about how long the full command takes on a 2-core machine.
#   tool:package: a program the benchmark needs and the Debian package (scripts/debian-packages.txt)
#     that has it.
#   command / quick command: run from the repository's root; {write} becomes `--write FILE` (or
#     nothing when the run does not write), {logs} the directory the output goes to.
# A benchmark whose name is in another's "replaces" (the last field) does not run when that one does.
BENCHMARKS=$(cat <<'EOF'
dns|default|3|dnsperf:dnsperf dnsmasq:dnsmasq dig:bind9-dnsutils taskset:util-linux|uv run --frozen python bench/dns/run.py --duration 10 --reps 3 {write}|uv run --frozen python bench/dns/run.py --duration 1 --reps 1 {write}|
http|default|6|wrk:wrk taskset:util-linux|uv run --frozen python bench/http/run.py --duration 10 --rounds 5 --parked 10000 --acl {write}|uv run --frozen python bench/http/run.py --duration 1 --rounds 1 --parked 100 --acl {write}|
raft|default|6|wrk:wrk etcd:etcd-server|uv run --frozen python bench/raft/run.py --duration 10 --reps 3 --kills 20 {write}|uv run --frozen python bench/raft/run.py --duration 1 --reps 1 --kills 1 {write}|
connect|default|2|socat:socat|uv run --frozen python bench/connect/run.py --duration 5 --rounds 3 {write}|uv run --frozen python bench/connect/run.py --duration 1 --rounds 1 {write}|
sd|default|2||uv run --frozen python bench/sd/run.py --services 5000 --instances 3 --reps 20 --vmagent-intervals '' {write}|uv run --frozen python bench/sd/run.py --services 20 --reps 3 --vmagent-intervals '' {write}|
ui|default|2|chromium:chromium|uv run --frozen python bench/ui/run.py --services 5000 --runs 9 {write}|uv run --frozen python bench/ui/run.py --services 200 --runs 2 {write}|
reads|default|1||uv run --frozen python bench/reads/run.py --requests 300|uv run --frozen python bench/reads/run.py --requests 20|
local|default|4||uv run --frozen python bench/local/run.py --checks 30000 --services 100000|uv run --frozen python bench/local/run.py --checks 300 --services 1000|
scale|default|2||uv run --frozen python bench/scale/run.py --nodes 10000 --instances 100000 --reps 20|uv run --frozen python bench/scale/run.py --quick|
footprint|default|2||uv run --frozen python bench/footprint/run.py --idle 30 --runs 3 {write}|uv run --frozen python bench/footprint/run.py --idle 2 --runs 1 --top 3 {write}|
http-cpu|default|1|wrk:wrk|uv run --frozen python bench/http/cpu.py --duration 5|uv run --frozen python bench/http/cpu.py --duration 1|
raft-cpu|default|1|wrk:wrk|uv run --frozen python bench/raft/cpu.py --duration 8|uv run --frozen python bench/raft/cpu.py --duration 1|
gossip|default|14||uv run --frozen python bench/gossip/run.py --sizes 100:3600,1000:600 --idle 60 {write}|uv run --frozen python bench/gossip/run.py --sizes 30:240 --idle 5 {write}|
gossip-queries|default|3||uv run --frozen python bench/gossip/queries.py --sizes 10,100 --seeds 5|uv run --frozen python bench/gossip/queries.py --sizes 10 --seeds 1|
fuzz|default|7||uv run --frozen python bench/fuzz/run.py --inputs 1000000 --seed 1 --failures {logs}/fuzz-failures.txt|uv run --frozen python bench/fuzz/run.py --inputs 2500 --seed 1 --failures {logs}/fuzz-failures.txt|
hostile|default|3||env CAIRN_FUZZ_EXAMPLES=3000 uv run --frozen pytest -p no:cacheprovider -q -s tests/hostile/test_decoding.py -k 'fuzz or reader'|env CAIRN_FUZZ_EXAMPLES=20 uv run --frozen pytest -p no:cacheprovider -q -s tests/hostile/test_decoding.py -k 'fuzz or reader'|
scale-cluster|named|20|vmagent:victoria-metrics|uv run --frozen python bench/scale/cluster.py --nodes 10000 --instances 100000 --parked 50000 --flips 1000 {write}|uv run --frozen python bench/scale/cluster.py --quick {write}|
sd-vmagent|named|15|vmagent:victoria-metrics|uv run --frozen python bench/sd/run.py --services 5000 --instances 3 --reps 20 --vmagent-intervals 30s,1s --vmagent-wait 2m --cpu-window 150 --flips 4 {write}|uv run --frozen python bench/sd/run.py --services 20 --reps 3 --vmagent-intervals 1s --vmagent-wait 5s --cpu-window 6 --flips 1 {write}|sd
gossip-hour|named|85||uv run --frozen python bench/gossip/run.py --sizes 100:3600,1000:600,1000:3600 --idle 60 {write}|uv run --frozen python bench/gossip/run.py --sizes 30:240,40:240 --idle 5 {write}|gossip
EOF
)

usage() {
    local default_min=0 name set min rest
    while IFS='|' read -r name set min rest; do
        [[ $set == default ]] && default_min=$((default_min + min))
    done <<<"$BENCHMARKS"
    cat <<EOF
Usage: scripts/bench.sh [--only NAME[,NAME...]] [--all] [--quick] [--write FILE | --no-write]
                        [--logs DIR] [--list] [-h]

Runs the project's benchmarks one after another (each is a script under bench/ that starts cairn
and its real peer side by side on this machine, on 127.0.0.1 only) and lets each write its own
section of BENCHMARKS.md (the script's --write). Every section gives the machine: cores, CPU,
Python, kernel and the load average at the start and end of the run (bench/machine.py), so a
figure taken while other work loaded the machine shows it.

The default set is every benchmark but the three long ones and takes about $default_min minutes on a
2-core machine (--list gives each one's time). sd-vmagent (bench/sd with real
vmagent watches, about 15 minutes; it writes the whole Service discovery section, so it replaces
sd) and gossip-hour (the gossip benchmark with a simulated hour of 1,000 members, about 85
minutes; it replaces gossip) run only when named or with --all, and so does scale-cluster
(bench/scale/cluster.py: bench/scale's catalog loaded through the API into three servers and a
client agent, with 50,000 parked blocking queries and vmagent; about 20 minutes; it writes its
subsection of Catalog at scale). Benchmarks without a --write of
their own (reads, local, scale, http-cpu, raft-cpu, gossip-queries, fuzz, hostile) only print;
their BENCHMARKS.md sections are written by hand from the output.

  --only NAMES   run these (comma-separated, in the order of --list)
  --all          run every benchmark, the long ones too
  --quick        short runs with small sizes, to check that the benchmarks work (seconds to a few
                 minutes each); their figures mean nothing, so a quick run writes nothing unless
                 --write is given
  --write FILE   the file the sections go to (default BENCHMARKS.md; a quick run: none)
  --no-write     print the figures only
  --logs DIR     keep each benchmark's output in DIR/NAME.log (default: a new temporary directory)
  --list         list the benchmarks: name, set, minutes, the programs they need, command
  -n, --dry-run  print the commands that would run, run nothing
  -h, --help     this help

Each benchmark runs even when one before it failed; the exit status is 1 if any failed. The
programs a chosen benchmark needs (wrk, dnsperf, dnsmasq, dig, etcd, socat, chromium, vmagent)
are checked first: scripts/bootstrap.sh installs them with the other Debian packages of
scripts/debian-packages.txt. Run nothing else on the machine meanwhile: every figure is a
comparison made on it, and a busy machine moves them. To compare two commits of cairn on one
benchmark, interleaved, use bench/compare.py (uv run python bench/compare.py -h).
EOF
}

list() {
    local name set min tools full quick replaces needs
    printf '%-15s %-8s %5s  %-28s %s\n' NAME SET MINUTES NEEDS COMMAND
    while IFS='|' read -r name set min tools full quick replaces; do
        needs=$(sed -E 's/:[^ ]+//g' <<<"$tools")
        printf '%-15s %-8s %5s  %-28s %s\n' "$name" "$set" "~$min" "${needs:--}" "$full"
    done <<<"$BENCHMARKS"
}

only="" all=0 quick=0 write="" nowrite=0 logs="" dry=0
while (($#)); do
    case $1 in
        --only) only=${2:?--only needs names}; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        --all) all=1; shift ;;
        --quick) quick=1; shift ;;
        --write) write=${2:?--write needs a file}; shift 2 ;;
        --write=*) write=${1#--write=}; shift ;;
        --no-write) nowrite=1; shift ;;
        --logs) logs=${2:?--logs needs a directory}; shift 2 ;;
        --logs=*) logs=${1#--logs=}; shift ;;
        --list) list; exit 0 ;;
        -n|--dry-run) dry=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see scripts/bench.sh -h)" >&2; exit 2 ;;
    esac
done
if ((nowrite)); then
    write=""
elif [[ -z $write ]] && ! ((quick)); then
    write=BENCHMARKS.md
fi

# The chosen benchmarks, in the table's order.
declare -A known=() wanted=()
while IFS='|' read -r name set _; do known[$name]=$set; done <<<"$BENCHMARKS"
if [[ -n $only ]]; then
    IFS=',' read -ra names <<<"$only"
    for name in "${names[@]}"; do
        [[ -n ${known[$name]:-} ]] || { echo "bench.sh: no benchmark named '$name' (see scripts/bench.sh --list)" >&2; exit 2; }
        wanted[$name]=1
    done
else
    for name in "${!known[@]}"; do
        [[ ${known[$name]} == default || $all == 1 ]] && wanted[$name]=1
    done
fi
chosen=()
while IFS='|' read -r name set min tools full quick_cmd replaces; do
    [[ -n ${wanted[$name]:-} ]] || continue
    [[ -n $replaces && -n ${wanted[$replaces]:-} ]] && unset "wanted[$replaces]"
done <<<"$BENCHMARKS"
while IFS='|' read -r name _; do
    [[ -n ${wanted[$name]:-} ]] && chosen+=("$name")
done <<<"$BENCHMARKS"

# The programs they need, all checked before anything runs.
declare -A missing=()
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }
# where scripts/bootstrap.sh's pip install puts uv for a user
command -v uv >/dev/null 2>&1 || PATH=$PATH:$(python3 -m site --user-base 2>/dev/null || echo "$HOME/.local")/bin
if ! command -v uv >/dev/null 2>&1; then
    echo "bench.sh: uv is not on PATH (scripts/bootstrap.sh installs it)" >&2
    exit 1
fi
while IFS='|' read -r name set min tools _; do
    [[ -n ${wanted[$name]:-} ]] || continue
    for pair in $tools; do
        have "${pair%%:*}" || missing[${pair#*:}]+="${missing[${pair#*:}]:+, }${pair%%:*} for $name"
    done
done <<<"$BENCHMARKS"
if ((${#missing[@]})); then
    echo "bench.sh: missing programs:" >&2
    for package in "${!missing[@]}"; do echo "  $package: ${missing[$package]}" >&2; done
    echo "install them with: sudo apt-get install --no-install-recommends ${!missing[*]}" >&2
    echo "(scripts/debian-packages.txt lists them and scripts/bootstrap.sh installs that list;" \
         "util-linux comes with every Debian system)" >&2
    exit 1
fi

if ((dry)); then
    logs=${logs:-LOGS}
else
    [[ -n $logs ]] || logs=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench.XXXXXX")
    mkdir -p "$logs"
    logs=$(cd "$logs" && pwd)
fi
echo "bench.sh: ${chosen[*]}$( ((quick)) && echo ' (quick)'); writing ${write:-nothing}; output in $logs"

failed=() results=()
for name in "${chosen[@]}"; do
    line=$(grep "^$name|" <<<"$BENCHMARKS")
    IFS='|' read -r _ _ _ _ full quick_cmd _ <<<"$line"
    cmd=$full
    ((quick)) && cmd=$quick_cmd
    cmd=${cmd//\{write\}/${write:+--write $(printf '%q' "$write")}}
    cmd=${cmd//\{logs\}/$(printf '%q' "$logs")}
    cmd=${cmd% }
    echo
    echo "== $name: $cmd"
    ((dry)) && continue
    start=$SECONDS
    eval "$cmd" 2>&1 | tee "$logs/$name.log"
    status=${PIPESTATUS[0]}
    took=$((SECONDS - start))
    if ((status == 0)); then
        results+=("$name: ok in ${took} s")
    else
        results+=("$name: FAILED (exit $status) after ${took} s, see $logs/$name.log")
        failed+=("$name")
    fi
done

((dry)) && exit 0
echo
echo "== summary (output in $logs)"
printf '  %s\n' "${results[@]}"
((${#failed[@]} == 0))
