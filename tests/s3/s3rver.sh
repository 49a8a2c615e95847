#!/bin/sh
# s3rver.sh — run s3rver (npm, test-only fake S3) on loopback for tests.
#
#   tests/s3/s3rver.sh start DIR [BUCKET]   start one in DIR (a temp dir the
#                                           caller owns); prints its endpoint
#   tests/s3/s3rver.sh stop DIR             stop the one started in DIR
#   tests/s3/s3rver.sh install              only install node deps
#
# start installs the npm dependencies into tests/s3/node_modules when they
# are missing (`npm ci` from package-lock.json), listens on 127.0.0.1 on a
# random port, keeps its data in DIR/data, creates BUCKET (default
# lanes-test) and writes:
#   DIR/s3rver.pid  DIR/s3rver.port  DIR/s3rver.log
#   DIR/credentials  an AWS-style credentials file (mode 600) with s3rver's
#                    fixed account (access key and secret "S3RVER")
# Virtual-host-style requests work for Host "BUCKET.s3.lanes.test:PORT"
# (pin it to 127.0.0.1 with --resolve; .test is a reserved TLD).
# Exit status 77 if node/npm are missing (callers skip).
#
# s3rver checks that the access key exists but does NOT verify SigV4
# signatures, and ignores If-None-Match / If-Match on PUT: tests against it
# prove the data path, never signing or conditional writes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

install_deps() {
    command -v node >/dev/null 2>&1 || { echo "SKIP: node not installed" >&2; exit 77; }
    if [ -f "$here/node_modules/s3rver/package.json" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || { echo "SKIP: npm not installed" >&2; exit 77; }
    echo "s3rver.sh: installing node dependencies into $here/node_modules" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
}

cmd=${1:-}
case "$cmd" in
install)
    install_deps
    ;;
start)
    dir=${2:?usage: s3rver.sh start DIR [BUCKET]}
    bucket=${3:-lanes-test}
    install_deps
    mkdir -p "$dir/data"
    umask 077
    printf '[default]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n' \
        >"$dir/credentials"
    # s3rver encrypts ListObjectsV2 continuation tokens with a cipher that
    # OpenSSL 3 only has in its legacy provider.
    node --openssl-legacy-provider "$here/node_modules/s3rver/bin/s3rver.js" -d "$dir/data" \
        -a 127.0.0.1 -p 0 --service-endpoint lanes.test \
        --configure-bucket "$bucket" \
        >"$dir/s3rver.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/s3rver.pid"
    i=0
    port=""
    while [ $i -lt 300 ]; do
        port=$(sed -n 's/.*S3rver listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
               "$dir/s3rver.log" 2>/dev/null | head -n1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/s3rver.log" >&2; echo "s3rver.sh: s3rver exited" >&2; exit 1; }
        sleep 0.1
        i=$((i + 1))
    done
    [ -n "$port" ] || { kill "$pid" 2>/dev/null; echo "s3rver.sh: s3rver did not start in 30s" >&2; exit 1; }
    echo "$port" >"$dir/s3rver.port"
    echo "http://127.0.0.1:$port"
    ;;
stop)
    dir=${2:?usage: s3rver.sh stop DIR}
    [ -f "$dir/s3rver.pid" ] || exit 0
    pid=$(cat "$dir/s3rver.pid")
    if kill "$pid" 2>/dev/null; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/s3rver.pid"
    ;;
*)
    echo "usage: s3rver.sh start DIR [BUCKET] | stop DIR | install" >&2
    exit 2
    ;;
esac
