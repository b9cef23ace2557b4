#!/usr/bin/env bash
# Build Dovecot's imaptest from a checkout and run its test groups against our IMAP server.
#
#   bench/imaptest_run.sh /path/to/imaptest [port]
#
# Needs Debian's dovecot-dev (apt-get install dovecot-dev autoconf automake libtool make gcc).
# Debian 12 ships Dovecot 2.3.19: imaptest's current head targets Dovecot 2.4, so use a
# checkout of commit 924f619 (2022-03, the last before the 2.4 API changes); the one-line
# imap_parser_create() difference of Dovecot 2.3.19 is patched here. Nothing of imaptest is
# ever copied into this repository.
set -euo pipefail

checkout=${1:?usage: $0 /path/to/imaptest [port]}
port=${2:-14300}
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
        [ -x configure ] || ./autogen.sh
        ./configure --with-dovecot=/usr/lib/dovecot
        make -j"$(nproc)"
    )
fi

data=$(mktemp -d /tmp/imaptest-data.XXXXXX)
"$python" "$here/bench/imap_bench.py" --serve --data "$data" --port "$port" >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.1
done

cd "$checkout/src"
./imaptest host=127.0.0.1 port="$port" user=testuser pass=pass test=tests | tee "$data/imaptest.log" | tail -4
if grep -q Traceback "$data/server.log"; then
    echo "server errors:"; grep -B2 -A20 Traceback "$data/server.log" | head -60
fi
