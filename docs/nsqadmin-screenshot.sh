#!/usr/bin/env bash
# Reproduces docs/nsqadmin.png: stock nsqlookupd + nsqd + nsqadmin behind nsqgate's nsqadmin
# front, then a headless Chromium screenshot of https://127.0.0.1:14171 (through nsqgate).
# The demo policy lets the anonymous caller read (subscribe on `*`), so no client certificate is
# needed in the browser; in production keep auth.require_identity = true and use client certs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${NSQGATE_TOOLS_BIN:-$root/tools/bin}
gate=${NSQGATE_BIN:-$root/target/debug/nsqgate}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$gate" certs dev --out "$work/certs" >/dev/null
mkdir -p "$work/policies" "$work/data"
cat > "$work/policies/demo.toml" <<'TOML'
[roles.viewer]
allow = [
  { action = "subscribe", topics = ["**", "**#ephemeral"], channels = ["**", "**#ephemeral"] },
  { action = "publish", topics = ["**"] },
]
[identities]
anonymous = ["viewer"]
TOML
cat > "$work/gate.toml" <<TOML
[client]
listen = "127.0.0.1:14150"
tls_cert = "certs/nsqgate.pem"
tls_key = "certs/nsqgate.key"
[upstream]
nsqd_tcp_address = "127.0.0.1:24150"
tls_server_name = "localhost"
tls_ca = "certs/ca.pem"
[auth]
require_identity = false
policy_dir = "policies"
[http.nsqd]
listen = "127.0.0.1:14152"
upstream = "127.0.0.1:24152"
[http.nsqadmin]
listen = "127.0.0.1:14171"
upstream = "127.0.0.1:24171"
TOML

"$bin/nsqlookupd" --tcp-address=127.0.0.1:24160 --http-address=127.0.0.1:24161 \
  --broadcast-address=127.0.0.1 --log-level=error & pids+=($!)
sleep 0.5
"$bin/nsqd" --tcp-address=127.0.0.1:24150 --http-address=127.0.0.1:24151 \
  --https-address=127.0.0.1:24152 --data-path="$work/data" --broadcast-address=127.0.0.1 \
  --lookupd-tcp-address=127.0.0.1:24160 --tls-cert="$work/certs/nsqd.pem" \
  --tls-key="$work/certs/nsqd.key" --tls-required=tcp-https --log-level=error & pids+=($!)
"$bin/nsqadmin" --http-address=127.0.0.1:24171 --lookupd-http-address=127.0.0.1:24161 \
  --log-level=error & pids+=($!)
"$gate" run --config "$work/gate.toml" 2>"$work/gate.log" & pids+=($!)
sleep 2

# Some traffic so the page has content: publish through nsqgate's nsqd HTTPS front.
for topic in orders payments audit; do
  for i in 1 2 3; do
    curl -sS --cacert "$work/certs/ca.pem" -X POST \
      "https://localhost:14152/pub?topic=$topic" -d "message $i" >/dev/null
  done
done
curl -sS -X POST "http://127.0.0.1:24151/channel/create?topic=orders&channel=billing" >/dev/null
sleep 1

chromium --headless --no-sandbox --disable-gpu --ignore-certificate-errors \
  --virtual-time-budget=5000 --window-size=1280,800 \
  --screenshot="$root/docs/nsqadmin.png" "https://127.0.0.1:14171/" 2>/dev/null
echo "wrote docs/nsqadmin.png"
