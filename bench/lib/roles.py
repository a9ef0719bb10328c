"""The stacks bench/roles measures, one per role of issue 14, each started fresh per repetition:
an nsqd with one nsqgate signing a topic ([integrity]); nsqlookupd reached directly or through a
registration sidecar and guard; nsqgate's auth service with nsqd asking it or not."""

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from stacks import NSQD_FLAGS, free_port, wait_port

# Open to the anonymous identity (P1-noauth's policy): the integrity and registration stacks
# price their role, not the L7 checks bench/run already prices.
OPEN_POLICY = """wildcards = "segment"
[roles.open]
allow = [
  { action = "publish", topics = ["**"] },
  { action = "subscribe", topics = ["**"], channels = ["**"] },
]
[identities]
anonymous = ["open"]
"""


class Procs:
    """Processes of one stack, in a tmpfs folder of their own; stopped in reverse order."""

    def __init__(self, env, name):
        self.env, self.procs = env, []
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=env.work))

    def spawn(self, cmd, log, port=None, timeout=30, extra_env=None):
        env = dict(os.environ, NSQGATE_LOG="warn", **(extra_env or {}))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, cwd=self.dir, env=env,
                                stderr=open(self.dir / log, "w"))
        self.procs.append(proc)
        if port is not None:
            wait_port(port, proc, timeout=timeout, log=self.dir / log)
        return proc

    def write(self, name, text, mode=0o600):
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def nsqd(self, extra=(), tcp=None, http=None):
        """A fresh nsqd with its data on tmpfs; returns (process, tcp port, http port)."""
        tcp, http, https = tcp or free_port(), http or free_port(), free_port()
        data = Path(tempfile.mkdtemp(prefix="nsqd-", dir=self.dir))
        certs = self.env.work / "certs"
        proc = self.spawn([
            str(self.env.tools / "nsqd"), f"--tcp-address=127.0.0.1:{tcp}",
            f"--http-address=127.0.0.1:{http}", f"--https-address=127.0.0.1:{https}",
            f"--data-path={data}", f"--tls-cert={certs / 'nsqd.pem'}",
            f"--tls-key={certs / 'nsqd.key'}", *NSQD_FLAGS, *extra], f"nsqd-{tcp}.log", tcp)
        return proc, tcp, http

    def gate(self, name, config, port):
        path = self.write(f"{name}.toml", config)
        return self.spawn([str(self.env.gate), "run", "--config", str(path)], f"{name}.log",
                          port, timeout=60)

    def loadgen(self, args, timeout=120):
        done = subprocess.run([str(self.env.loadgen), *args], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]}: {done.stderr.strip()[-400:]}")
        return json.loads(done.stdout)

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def metrics(port):
    """nsqgate's /metrics as {"name{labels}": value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def gate_base(env, port, nsqd_tcp, admin, policies):
    """nsqgate with plaintext legs (bench/run's P0 without its JWT), every cap far above the
    load, no rate limits."""
    return f"""[client]
listen = "127.0.0.1:{port}"
require_tls = false
tls_cert = "{env.work}/certs/nsqgate.pem"
tls_key = "{env.work}/certs/nsqgate.key"
[upstream]
nsqd_tcp_address = "127.0.0.1:{nsqd_tcp}"
tls = false
[connections]
max_total = 9900
max_per_ip = 9900
max_per_identity = 9900
max_per_nsqd = 9900
[name_quotas]
new_topics_per_minute = 0
new_channels_per_minute = 0
max_names = 0
[rate_limits]
identity = {{}}
[admin]
listen = "127.0.0.1:{admin}"
[auth]
require_identity = false
policy_dir = "{policies}"
"""


class Integrity(Procs):
    """nsqd and one nsqgate: topics `signed.**` sealed with one key, every other topic not."""

    def __init__(self, env):
        super().__init__(env, "integrity")
        _, self.nsqd_tcp, _ = self.nsqd()
        self.port, self.admin = free_port(), free_port()
        self.write("policies/open.toml", OPEN_POLICY, 0o644)
        self.write("keys/bench.b64", base64.b64encode(secrets.token_bytes(32)).decode())
        config = gate_base(env, self.port, self.nsqd_tcp, self.admin, self.dir / "policies") + f"""
[integrity]
quarantine_topic = "quarantine"
[[integrity.keys]]
id = "bench-1"
file = "{self.dir / 'keys/bench.b64'}"
[[integrity.topics]]
topics = ["signed.**"]
signing_key = "bench-1"
"""
        self.gate_proc = self.gate("nsqgate", config, self.port)

    def client_args(self):
        return ["--addr", f"127.0.0.1:{self.port}", "--mode", "plain",
                "--watch", f"nsqgate={self.gate_proc.pid}"]

    def counters(self):
        found = metrics(self.admin)
        pick = lambda prefix: sum(v for k, v in found.items() if k.startswith(prefix))  # noqa: E731
        return {
            "sealed": pick('nsqgate_integrity_messages_total{outcome="sealed"'),
            "verified": pick('nsqgate_integrity_messages_total{outcome="verified"'),
            "quarantined": pick("nsqgate_integrity_quarantined_total"),
        }


class Registry(Procs):
    """nsqlookupd; a registration guard in front of it and a sidecar relaying to the guard
    (two nsqgate processes, as on two hosts). L0 is nsqlookupd's TCP port, L1 the sidecar's."""

    def __init__(self, env):
        super().__init__(env, "registry")
        certs = env.work / "certs"
        self.lookupd_tcp, self.lookupd_http = free_port(), free_port()
        self.lookupd = self.spawn([
            str(env.tools / "nsqlookupd"), f"--tcp-address=127.0.0.1:{self.lookupd_tcp}",
            f"--http-address=127.0.0.1:{self.lookupd_http}", "--log-level=error"],
            "nsqlookupd.log", self.lookupd_tcp)
        # The ports the nsqd entry may announce (the data-path nsqd listens on them).
        self.nsqd_tcp, self.nsqd_http = free_port(), free_port()
        self.guard_port, self.sidecar_port = free_port(), free_port()
        caps = "[connections]\nmax_total = 9900\nmax_per_ip = 9900\nmax_per_identity = 9900\n"
        self.guard = self.gate("guard", f"""[registry.guard]
listen = "127.0.0.1:{self.guard_port}"
nsqlookupd_tcp_address = "127.0.0.1:{self.lookupd_tcp}"
tls_cert = "{certs / 'nsqgate.pem'}"
tls_key = "{certs / 'nsqgate.key'}"
tls_client_ca = "{certs / 'ca.pem'}"
[[registry.guard.nsqd]]
identity = "spiffe://nsqgate.dev/dev-client"
broadcast_addresses = ["127.0.0.1"]
tcp_port = {self.nsqd_tcp}
http_port = {self.nsqd_http}
topics = ["**", "**#ephemeral"]
{caps}""", self.guard_port)
        self.sidecar = self.gate("sidecar", f"""[registry.sidecar]
listen = "127.0.0.1:{self.sidecar_port}"
guard_address = "127.0.0.1:{self.guard_port}"
tls_server_name = "127.0.0.1"
tls_ca = "{certs / 'ca.pem'}"
tls_cert = "{certs / 'client.pem'}"
tls_key = "{certs / 'client.key'}"
{caps}""", self.sidecar_port)

    def address(self, target):
        return self.lookupd_tcp if target == "L0" else self.sidecar_port

    def watch_args(self, target):
        args = ["--watch", f"nsqlookupd={self.lookupd.pid}"]
        if target == "L1":
            args += ["--watch", f"guard={self.guard.pid}", "--watch", f"sidecar={self.sidecar.pid}"]
        return args

    def registration_args(self, target):
        return ["--addr", f"127.0.0.1:{self.address(target)}", "--broadcast-address",
                "127.0.0.1", "--tcp-port", str(self.nsqd_tcp), "--http-port",
                str(self.nsqd_http), *self.watch_args(target)]

    def lookup(self, path):
        url = f"http://127.0.0.1:{self.lookupd_http}{path}"
        try:
            return json.loads(urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            return {}

    def data_path_nsqd(self, target):
        """An nsqd registering through `target`, once nsqlookupd lists it."""
        deadline = time.time() + 20
        while self.lookup("/nodes").get("producers"):  # the last one's peers, going
            if time.time() > deadline:
                raise RuntimeError("nsqlookupd still lists an earlier nsqd")
            time.sleep(0.1)
        proc, _, _ = self.nsqd([f"--lookupd-tcp-address=127.0.0.1:{self.address(target)}",
                                  "--broadcast-address=127.0.0.1"],
                                 tcp=self.nsqd_tcp, http=self.nsqd_http)
        while not self.lookup("/nodes").get("producers"):
            if time.time() > deadline:
                raise RuntimeError(f"the nsqd registering through {target} never appeared")
            time.sleep(0.1)
        return proc


def api_key():
    key = "nsqk_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key, hashlib.sha256(key.encode()).hexdigest()


class AuthService(Procs):
    """nsqgate with [auth_service] (its NSQ listener unused), two nsqd: A without
    --auth-http-address, B asking nsqgate. The policy grants one API key and the bench JWT's
    subject publishing to bench topics."""

    def __init__(self, env):
        super().__init__(env, "authsvc")
        self.key, digest = api_key()
        self.write("policies/svc.toml", f"""wildcards = "segment"
[roles.writer]
allow = [{{ action = "publish", topics = ["bench*", "orders.*"] }},
         {{ action = "subscribe", topics = ["orders.*"], channels = ["billing"] }}]
[identities]
bench = ["writer"]
[api_keys.bench-key]
sha256 = "{digest}"
roles = ["writer"]
""", 0o644)
        self.service, port, admin = free_port(), free_port(), free_port()
        config = gate_base(env, port, 9, admin, self.dir / "policies").replace(
            "require_identity = false", "require_identity = true") + f"""[auth.jwt]
keys = [{{ kid = "bench", algorithm = "ES256", file = "{env.work / 'jwt/es256.pub.pem'}" }}]
[auth_service]
listen = "127.0.0.1:{self.service}"
ttl_secs = 60
"""
        self.gate_proc = self.gate("nsqgate", config, port)
        wait_port(self.service, self.gate_proc, log=self.dir / "nsqgate.log")
        self.nsqd_a, self.tcp_a, _ = self.nsqd()
        self.nsqd_b, self.tcp_b, _ = self.nsqd([f"--auth-http-address=127.0.0.1:{self.service}"])

    def auth_path(self, secret):
        return f"/auth?common_name=&remote_ip=127.0.0.1&secret={secret}&tls=true"

    def nsqd_args(self, target, mode):
        proc, tcp = (self.nsqd_a, self.tcp_a) if target == "A0" else (self.nsqd_b, self.tcp_b)
        args = ["--addr", f"127.0.0.1:{tcp}", "--mode", mode, "--token", self.key,
                "--watch", f"nsqd={proc.pid}", "--watch", f"nsqgate={self.gate_proc.pid}"]
        if mode != "plain":
            args += ["--ca", str(self.env.ca)]
        return args
