"""The targets: a fresh nsqd (data on tmpfs) and the hop in front of it, per repetition."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# nsqd as issue 11 sets it up: nothing touches disk (each topic's in-memory queue holds every
# message a run publishes), consumers may flush every 1 ms, RDY up to 10,000.
NSQD_FLAGS = ["--mem-queue-size=5000000", "--max-rdy-count=10000",
              "--min-output-buffer-timeout=1ms", "--log-level=error"]

# CPU 0 for the hop, CPU 1 for nsqd and the load generator (pinned layout).
HOP_CPU, REST_CPU = "0", "1"

POLICY = """wildcards = "segment"
[roles.bench]
allow = [
  { action = "publish", topics = ["**"] },
  { action = "subscribe", topics = ["**"], channels = ["**"] },
]
[identities]
bench = ["bench"]
anonymous = ["bench"]
"""


# Every port free_port has handed out in this run. A port is free only until its caller binds
# it, and the kernel may give the same one to the next bind(0) before then: a stack asking for
# nsqd's three ports in a row once got one port twice (nsqd: "address already in use").
_HANDED_OUT = set()


def free_port():
    """A loopback port nothing listens on, never one handed out before in this run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port, proc, timeout=10.0, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            said = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening: "
                               f"{said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


class Env:
    """Binaries, certificates, the JWT key and token, and a tmpfs work folder for one run."""

    def __init__(self, repo, work, quick):
        self.repo, self.work, self.quick = repo, work, quick
        self.tools = repo / "tools/bin"
        self.gate = repo / "target/release/nsqgate"
        self.loadgen = repo / "target/release/nsqgate-bench"
        self.ca = work / "certs/ca.pem"

    @classmethod
    def create(cls, repo, quick):
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        work = Path(tempfile.mkdtemp(prefix="nsqgate-bench-", dir=base))
        env = cls(repo, work, quick)
        run = lambda *c: subprocess.run(c, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        run(str(env.gate), "certs", "dev", "--out", str(work / "certs"), "--host", "127.0.0.1")
        certs = work / "certs"
        # HAProxy wants the certificate and key in one file.
        (certs / "combined.pem").write_text(
            (certs / "nsqgate.pem").read_text() + (certs / "nsqgate.key").read_text())
        jwt = work / "jwt"
        jwt.mkdir()
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(jwt / "es256.key"))
        run("openssl", "pkey", "-in", str(jwt / "es256.key"), "-pubout",
            "-out", str(jwt / "es256.pub.pem"))
        env.token = subprocess.run(
            [str(env.loadgen), "jwt", "--key", str(jwt / "es256.key"), "--sub", "bench"],
            check=True, capture_output=True, text=True).stdout.strip()
        (work / "policies").mkdir()
        (work / "policies/bench.toml").write_text(POLICY)
        for path in [jwt / "es256.key", certs / "nsqgate.key", certs / "nsqd.key"]:
            if path.exists():
                path.chmod(0o600)
        return env

    def close(self):
        shutil.rmtree(self.work, ignore_errors=True)


def pinned(layout, cpu, cmd):
    return (["taskset", "-c", cpu] if layout == "pinned" else []) + cmd


class Stack:
    """One target: nsqd plus the hop in front (None for D0 and D1). `client` holds the
    load generator's connection arguments."""

    def __init__(self, env, target, layout, wrap=()):
        self.env, self.target, self.layout = env, target, layout
        self.wrap = list(wrap)  # a command the hop runs under (valgrind, strace)
        self.procs, self.hop = [], None
        self.dir = Path(tempfile.mkdtemp(prefix=f"{target}-", dir=env.work))
        self.start_nsqd()
        self.port = free_port()
        # The hop's HTTP(S) front for /pub (None: this target has none).
        self.http_port, self.http_tls = None, False
        starter = {"D0": self.direct, "D1": self.direct, "H0": self.haproxy,
                   "H1": self.haproxy, "S1": self.stunnel, "P0": self.nsqgate,
                   "P1": self.nsqgate, "P1-noauth": self.nsqgate,
                   "P1-plain-nsqd": self.nsqgate, "F0": self.floor,
                   "F0-framed": self.floor}[target]
        starter()

    def spawn(self, cpu, cmd, log):
        proc = subprocess.Popen(pinned(self.layout, cpu, cmd), stdout=subprocess.DEVNULL,
                                stderr=open(self.dir / log, "w"), cwd=self.dir)
        self.procs.append(proc)
        return proc

    def start_nsqd(self):
        self.nsqd_tcp, self.nsqd_http, self.nsqd_https = free_port(), free_port(), free_port()
        http, https = self.nsqd_http, self.nsqd_https
        certs = self.env.work / "certs"
        (self.dir / "data").mkdir()
        self.nsqd = self.spawn(REST_CPU, [
            str(self.env.tools / "nsqd"), f"--tcp-address=127.0.0.1:{self.nsqd_tcp}",
            f"--http-address=127.0.0.1:{http}", f"--https-address=127.0.0.1:{https}",
            f"--data-path={self.dir / 'data'}", f"--tls-cert={certs / 'nsqd.pem'}",
            f"--tls-key={certs / 'nsqd.key'}", *NSQD_FLAGS], "nsqd.log")
        wait_port(self.nsqd_tcp, self.nsqd, log=self.dir / "nsqd.log")

    def direct(self):
        self.port = self.nsqd_tcp
        self.mode = "inband" if self.target == "D1" else "plain"
        self.http_tls = self.target == "D1"
        self.http_port = self.nsqd_https if self.http_tls else self.nsqd_http

    def haproxy(self):
        certs = self.env.work / "certs"
        ssl = f" ssl crt {certs / 'combined.pem'}" if self.target == "H1" else ""
        self.http_port, self.http_tls = free_port(), self.target == "H1"
        (self.dir / "haproxy.cfg").write_text(f"""global
  maxconn 9500
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend nsq
  bind 127.0.0.1:{self.port}{ssl}
  default_backend nsqd
backend nsqd
  server nsqd 127.0.0.1:{self.nsqd_tcp}
frontend http
  bind 127.0.0.1:{self.http_port}{ssl}
  default_backend nsqd_http
backend nsqd_http
  server nsqd 127.0.0.1:{self.nsqd_http}
""")
        self.hop = self.spawn(HOP_CPU, [*self.wrap, "haproxy", "-db", "-f", "haproxy.cfg"],
                              "haproxy.log")
        wait_port(self.port, self.hop, log=self.dir / "haproxy.log")
        self.mode = "tls-first" if self.target == "H1" else "plain"

    def stunnel(self):
        certs = self.env.work / "certs"
        self.http_port, self.http_tls = free_port(), True
        service = f"""cert = {certs / 'nsqgate.pem'}
key = {certs / 'nsqgate.key'}
ciphers = ECDHE-ECDSA-AES128-GCM-SHA256
ciphersuites = TLS_AES_128_GCM_SHA256
"""
        (self.dir / "stunnel.conf").write_text(f"""foreground = yes
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[nsq]
accept = 127.0.0.1:{self.port}
connect = 127.0.0.1:{self.nsqd_tcp}
{service}[http]
accept = 127.0.0.1:{self.http_port}
connect = 127.0.0.1:{self.nsqd_http}
{service}""")
        self.hop = self.spawn(HOP_CPU, ["stunnel4", "stunnel.conf"], "stunnel.log")
        wait_port(self.port, self.hop, log=self.dir / "stunnel.log")
        self.mode = "tls-first"

    def floor(self):
        """The load generator's floor relay (bench/src/relay.rs): what a tokio hop costs
        before any NSQ work (F0), and when it forwards only whole frames (F0-framed)."""
        framed = ["--framed"] if self.target == "F0-framed" else []
        self.hop = self.spawn(HOP_CPU, [
            *self.wrap, str(self.env.loadgen), "relay", "--listen", f"127.0.0.1:{self.port}",
            "--upstream", f"127.0.0.1:{self.nsqd_tcp}", *framed], "relay.log")
        wait_port(self.port, self.hop, log=self.dir / "relay.log")
        self.mode = "plain"

    def nsqgate(self):
        work, tls = self.env.work, self.target != "P0"
        auth = self.target != "P1-noauth"
        # P1-plain-nsqd: P1 with a plaintext leg to nsqd, so a new connection's cost without
        # the upstream TLS handshake is measured, not estimated.
        upstream_tls = tls and self.target != "P1-plain-nsqd"
        client = (f'require_tls = {"true" if tls else "false"}\n'
                  f'tls_cert = "{work}/certs/nsqgate.pem"\n'
                  f'tls_key = "{work}/certs/nsqgate.key"\ntls_min_version = "1.2"')
        upstream = (f'tls = true\ntls_server_name = "127.0.0.1"\ntls_ca = "{work}/certs/ca.pem"'
                    if upstream_tls else "tls = false")
        if auth:
            identity = (f'require_identity = true\n[auth.jwt]\nkeys = [{{ kid = "bench", '
                        f'algorithm = "ES256", file = "{work}/jwt/es256.pub.pem" }}]')
            # Configured, never binding: 100x what this machine can push.
            limits = ("identity = { messages_per_sec = 100000000, bytes_per_sec = "
                      "4000000000 }\nidentity_topic = { messages_per_sec = 100000000 }")
        else:
            identity, limits = "require_identity = false", "identity = {}"
        # The HTTPS front for /pub, in front of nsqd's HTTPS port (client TLS is always on),
        # which it verifies with the upstream leg's CA: none for P1-plain-nsqd.
        http = ""
        if upstream_tls:
            self.http_port, self.http_tls = free_port(), True
            http = (f'[http.nsqd]\nlisten = "127.0.0.1:{self.http_port}"\n'
                    f'upstream = "127.0.0.1:{self.nsqd_https}"\nupstream_tls = true\n')
        (self.dir / "proxy.toml").write_text(f"""[client]
listen = "127.0.0.1:{self.port}"
{client}
[upstream]
nsqd_tcp_address = "127.0.0.1:{self.nsqd_tcp}"
{upstream}
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
{limits}
[admin]
listen = "127.0.0.1:0"
{http}[auth]
policy_dir = "{work}/policies"
{identity}
""")
        (self.dir / "proxy.toml").chmod(0o600)
        env_log = dict(os.environ, NSQGATE_LOG="warn")
        self.hop = subprocess.Popen(
            pinned(self.layout, HOP_CPU,
                   [*self.wrap, str(self.env.gate), "run", "--config",
                    str(self.dir / "proxy.toml")]),
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "nsqgate.log", "w"),
            cwd=self.dir, env=env_log)
        self.procs.append(self.hop)
        wait_port(self.port, self.hop, timeout=60, log=self.dir / "nsqgate.log")
        self.mode = "inband" if tls else "plain"

    def client_args(self):
        args = ["--addr", f"127.0.0.1:{self.port}", "--mode", self.mode]
        if self.mode != "plain":
            args += ["--ca", str(self.env.ca)]
        if self.target in ("P0", "P1", "P1-plain-nsqd"):
            args += ["--token", self.env.token]
        return args + self.watch_args()

    def http_args(self):
        """The load generator's arguments for the HTTP(S) /pub front, or None without one."""
        if self.http_port is None:
            return None
        args = ["--addr", f"127.0.0.1:{self.http_port}"]
        if self.http_tls:
            args += ["--ca", str(self.env.ca)]
        if self.target in ("P1", "P1-plain-nsqd"):
            args += ["--token", self.env.token]
        return args + self.watch_args()

    def watch_args(self):
        args = ["--watch", f"nsqd={self.nsqd.pid}"]
        if self.hop is not None:
            args += ["--watch", f"hop={self.hop.pid}"]
        return args

    def loadgen(self, args, timeout):
        """Runs the load generator (pinned beside nsqd) and returns its JSON report."""
        cmd = pinned(self.layout, REST_CPU, [str(self.env.loadgen), *args])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} on {self.target}: {done.stderr.strip()}")
        return __import__("json").loads(done.stdout)

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                # nsqd writes its in-memory queues to disk on SIGTERM (a second or more
                # after a fill); the data is thrown away, so it gets SIGKILL.
                proc.kill() if proc is self.nsqd else proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
