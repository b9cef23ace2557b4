#!/usr/bin/env bash
# Build Dovecot's imaptest from a checkout and run its test groups, one by one, against our
# IMAP server and against a private Dovecot in the same run; print what executed and passed.
#
#   bench/imaptest_run.sh /path/to/imaptest [port] [group...]
#
# Needs Debian's dovecot-dev (apt-get install dovecot-dev autoconf automake libtool make gcc)
# and dovecot-imapd for the side-by-side run (without it, only our server is tested).
# Debian 12 ships Dovecot 2.3.19: imaptest's current head targets Dovecot 2.4, so use a
# checkout of commit 924f619 (2022-03, the last before the 2.4 API changes); the one-line
# imap_parser_create() difference of Dovecot 2.3.19 is patched here. Nothing of imaptest is
# ever copied into this repository.
#
# imaptest prints its counts for a whole run only, so each group runs alone
# (test=tests/<group>). A group counts as passed when it executed at least one command and
# none failed: a group skipped for a missing capability executes nothing and is not passed.
# Ports: ours on [port] (default 14300), Dovecot on [port]+1.
set -euo pipefail

checkout=${1:?usage: $0 /path/to/imaptest [port] [group...]}
port=${2:-14300}
shift $(($# < 2 ? $# : 2))
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
export LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if [ ! -x "$checkout/src/imaptest" ]; then
    (
        cd "$checkout"
        if grep -q 'imap_parser_params' /usr/include/dovecot/imap-parser.h \
            && grep -q '(size_t)-1);' src/commands.c; then
            sed -i 's/imap_parser_create(\(.*\), (size_t)-1)/imap_parser_create(\1, (size_t)-1, NULL)/' \
                src/commands.c src/imap-client.c src/test-parser.c
        fi
        # A checkout without .git (git archive) has no version for configure.
        [ -e .git ] || [ -s version ] || echo "0.0.0-924f619" >version
        [ -x configure ] || ./autogen.sh
        ./configure --with-dovecot=/usr/lib/dovecot
        make -j"$(nproc)"
    )
fi

data=$(mktemp -d /tmp/imaptest-data.XXXXXX)
chmod 755 "$data"  # Dovecot's mail user (nobody) must reach its Maildir
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$data"
}
trap cleanup EXIT

# start NAME MODE PORT: run bench/imap_bench.py --MODE in the background, wait for its port.
start() {
    local name=$1 mode=$2 at=$3
    mkdir -p "$data/$name"
    "$python" "$here/bench/imap_bench.py" "--$mode" --data "$data/$name/srv" --port "$at" \
        --ready "$data/$name/ready" >"$data/$name/server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do
        [ -s "$data/$name/ready" ] && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name: the server did not start"; cat "$data/$name/server.log"
    return 1
}

groups=("$@")
if [ ${#groups[@]} -eq 0 ]; then
    for file in "$checkout"/src/tests/*; do
        case $file in *.mbox) continue ;; esac
        [ -f "$file" ] || continue  # tests/broken: known-broken tests, not a group
        groups+=("$(basename "$file")")
    done
fi

# run_groups NAME PORT: every group alone; one line per group in $data/NAME/groups.
run_groups() {
    local name=$1 at=$2 group out counts
    : >"$data/$name/groups"
    for group in "${groups[@]}"; do
        out="$data/$name/$group.log"
        (cd "$checkout/src" && timeout 120 ./imaptest host=127.0.0.1 port="$at" user=testuser \
            pass=pass test="tests/$group") >"$out" 2>&1 || true
        # "1 test groups: F failed, S skipped ...", "base protocol: a/b ...", "extensions: c/d ..."
        counts=$(sed -n \
            -e 's/^[0-9]* test groups: \([0-9]*\) failed, \([0-9]*\) skipped.*/\1 \2/p' \
            -e 's/^base protocol: \([0-9]*\)\/\([0-9]*\) .*/\1 \2/p' \
            -e 's/^extensions: \([0-9]*\)\/\([0-9]*\) .*/\1 \2/p' "$out" | tr '\n' ' ')
        [ "$(wc -w <<<"$counts")" -eq 6 ] || counts="1 0 0 0 0 0"  # no summary: crashed
        echo "$group $counts" >>"$data/$name/groups"
    done
}

# summarise NAME: the figures of one server.
summarise() {
    local name=$1
    awk -v name="$name" '
        { failed = $2; base_failed += $4; base += $5; ext_failed += $6; ext += $7
          executed = $5 + $7
          total++
          if (executed > 0) ran++; else idle = idle " " $1
          if (failed > 0) { bad++; failures = failures " " $1 }
          else if (executed > 0) passed++ }
        END {
          printf "%s: %d groups: %d executed commands, %d passed, %d failed, %d executed nothing\n",
              name, total, ran, passed, bad, total - ran
          printf "%s: base protocol %d/%d commands failed, extensions %d/%d commands failed\n",
              name, base_failed, base, ext_failed, ext
          if (failures != "") printf "%s: failed groups:%s\n", name, failures
          if (idle != "") printf "%s: groups that executed nothing:%s\n", name, idle
        }' "$data/$name/groups"
}

servers=(ours)
start ours serve "$port"
if command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ]; then
    start dovecot serve-dovecot "$((port + 1))" && servers+=(dovecot)
else
    echo "dovecot: not installed (apt-get install dovecot-imapd), our server only"
fi

for name in "${servers[@]}"; do
    run_groups "$name" "$(cat "$data/$name/ready")"
done

echo
for name in "${servers[@]}"; do
    summarise "$name"
done
for name in "${servers[@]}"; do
    awk '$2 > 0 { print $1 }' "$data/$name/groups" | while read -r group; do
        echo; echo "--- $name, group $group:"
        grep -v '^[0-9]* test groups:\|^base protocol:\|^extensions:' "$data/$name/$group.log" \
            | cut -c1-300 | head -20
    done
    if grep -q Traceback "$data/$name/server.log"; then
        echo "$name: server errors:"; grep -B2 -A20 Traceback "$data/$name/server.log" | head -60
    fi
done
