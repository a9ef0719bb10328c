#!/usr/bin/env bash
# Self-test of the client programs against a stock nsqd (no nsqgate involved), so that a
# broken client harness is told apart from a broken proxy. Starts nsqd from tools/bin
# with TLS required and certificates made by openssl in a temp folder, runs
# pynsq_roundtrip.py and nsqjs_roundtrip.js through good and bad cases, and stops nsqd.
#
# Needs scripts/install-nsq and scripts/install-clients to have run, and openssl.
# Usage: tests/clients/selftest.sh        (exit 0 when every case behaved)
set -euo pipefail

clients_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$clients_dir/../.." && pwd)"
tools_bin="${NSQGATE_TOOLS_BIN:-$repo_root/tools/bin}"
python="$clients_dir/.venv/bin/python"

die() { printf 'selftest: error: %s\n' "$*" >&2; exit 1; }
[[ -x "$tools_bin/nsqd" ]] || die "no nsqd in $tools_bin (run scripts/install-nsq)"
[[ -x "$python" ]] || die "no $python (run scripts/install-clients)"
[[ -d "$clients_dir/node_modules/nsqjs" ]] || die "no nsqjs in tests/clients/node_modules (run scripts/install-clients)"
command -v openssl >/dev/null 2>&1 || die "openssl not found"

work="$(mktemp -d)"
nsqd_pid=""
cleanup() {
    if [[ -n "$nsqd_pid" ]]; then
        kill "$nsqd_pid" 2>/dev/null || true
        wait "$nsqd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- certificates: a CA and a server cert for localhost + 127.0.0.1 ----------------------
(
    cd "$work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout ca.key -out ca.pem -subj "/CN=selftest CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout server.key -out server.csr -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out server.pem -extfile server.ext
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; die "openssl failed"; }

# --- nsqd with TLS required ------------------------------------------------------------------
# Port 0 everywhere; the bound TCP address comes from nsqd's own "TCP: listening on" line.
mkdir -p "$work/data"
"$tools_bin/nsqd" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 \
    --https-address=127.0.0.1:0 --data-path="$work/data" \
    --tls-cert="$work/server.pem" --tls-key="$work/server.key" --tls-required=true \
    --log-level=info >"$work/nsqd.log" 2>&1 &
nsqd_pid=$!
address=""
for _ in $(seq 600); do
    address="$(sed -n 's/.*TCP: listening on \([0-9.]*:[0-9]*\).*/\1/p' "$work/nsqd.log" | head -n1)"
    [[ -n "$address" ]] && break
    kill -0 "$nsqd_pid" 2>/dev/null || { cat "$work/nsqd.log" >&2; die "nsqd exited"; }
    sleep 0.05
done
[[ -n "$address" ]] || { cat "$work/nsqd.log" >&2; die "nsqd did not say where it listens"; }

# --- cases -------------------------------------------------------------------------------------
passed=0
failed=0

# expect NAME WANT_EXIT JSON_CHECK -- COMMAND...: JSON_CHECK is a Python expression over
# `r` (the parsed JSON line), e.g. 'r["received"] == 5'.
expect() {
    local name="$1" want="$2" check="$3"
    shift 4
    local out rc=0
    out="$("$@" 2>"$work/stderr")" || rc=$?
    if [[ "$rc" == "$want" ]] && "$python" -c '
import json, sys
lines = sys.argv[1].strip().splitlines()
assert len(lines) == 1, "want exactly one stdout line"
r = json.loads(lines[0])
# pynsq also reports "compression" (what each connection ran over); nsqjs does not.
assert set(r) - {"compression"} == {"published", "received", "errors"}, r
assert isinstance(r.get("compression", []), list), r
assert eval(sys.argv[2]), r
' "$out" "$check" 2>"$work/check"; then
        printf 'ok    %s\n' "$name"
        passed=$((passed + 1))
    else
        printf 'FAIL  %s: exit %s (want %s)\n      stdout: %s\n' "$name" "$rc" "$want" "$out"
        sed 's/^/      check: /' "$work/check"
        tail -n 5 "$work/stderr" | sed 's/^/      stderr: /'
        failed=$((failed + 1))
    fi
}

py=("$python" "$clients_dir/pynsq_roundtrip.py")
js=(node "$clients_dir/nsqjs_roundtrip.js")
common=(--address "$address" --ca "$work/ca.pem" --timeout 15)

expect "pynsq roundtrip" 0 'r["published"] == r["received"] == 25 and not r["errors"]' -- \
    "${py[@]}" "${common[@]}" --topic py_rt --channel c --count 25
expect "nsqjs roundtrip" 0 'r["published"] == r["received"] == 25 and not r["errors"]' -- \
    "${js[@]}" "${common[@]}" --topic js_rt --channel c --count 25
expect "pynsq roundtrip, MPUB, TLS 1.2" 0 'r["received"] == 30' -- \
    "${py[@]}" "${common[@]}" --topic py_mpub --channel c --count 30 --mpub-batch 7 --tls-max-version 1.2
expect "nsqjs roundtrip, MPUB, TLS 1.2" 0 'r["received"] == 30' -- \
    "${js[@]}" "${common[@]}" --topic js_mpub --channel c --count 30 --mpub-batch 7 --tls-max-version 1.2
expect "pynsq publish" 0 'r["published"] == 9 and r["received"] == 0' -- \
    "${py[@]}" "${common[@]}" --topic cross1 --channel c --count 9 --mode publish
expect "nsqjs consumes what pynsq published" 0 'r["received"] == 9 and r["published"] == 0' -- \
    "${js[@]}" "${common[@]}" --topic cross1 --channel c --count 9 --mode consume
expect "nsqjs publish" 0 'r["published"] == 9' -- \
    "${js[@]}" "${common[@]}" --topic cross2 --channel c --count 9 --mode publish
expect "pynsq consumes what nsqjs published" 0 'r["received"] == 9' -- \
    "${py[@]}" "${common[@]}" --topic cross2 --channel c --count 9 --mode consume
expect "nsqjs --secret vs nsqd without auth: E_AUTH_DISABLED" 1 \
    'r["published"] == 0 and any("E_AUTH_DISABLED" in e for e in r["errors"])' -- \
    "${js[@]}" "${common[@]}" --topic auth --channel c --count 3 --secret s3cret
expect "pynsq --secret vs nsqd without auth: no AUTH sent, works" 0 'r["received"] == 3' -- \
    "${py[@]}" "${common[@]}" --topic auth_py --channel c --count 3 --secret s3cret
expect "pynsq rejects a wrong server name" 1 \
    'any("CERTIFICATE_VERIFY_FAILED" in e for e in r["errors"])' -- \
    "${py[@]}" "${common[@]}" --topic sn --channel c --count 1 --server-name nsqd
expect "nsqjs rejects a wrong server name" 1 \
    'any("ERR_TLS_CERT_ALTNAME_INVALID" in e for e in r["errors"])' -- \
    "${js[@]}" "${common[@]}" --topic sn --channel c --count 1 --server-name nsqd
expect "pynsq without TLS: E_INVALID" 1 'any("E_INVALID" in e for e in r["errors"])' -- \
    "${py[@]}" --address "$address" --no-tls --topic plain --channel c --count 1 --timeout 15
expect "nsqjs consume timeout is reported" 1 'any("timeout" in e for e in r["errors"])' -- \
    "${js[@]}" "${common[@]}" --topic nothing --channel c --count 1 --mode consume --timeout 1

printf '%d passed, %d failed\n' "$passed" "$failed"
[[ "$failed" == 0 ]]
