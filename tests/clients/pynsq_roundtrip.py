#!/usr/bin/env python3
"""Publish and/or consume N messages through nsqd (or nsqgate) with pynsq, over TLS.

Run with tests/clients/.venv/bin/python (see scripts/install-clients). Used by the Rust
integration tests as a real third-party client; they check the exit code and the single
JSON line printed on stdout:

    {"published": P, "received": R, "errors": [...], "compression": [...]}

"compression" lists what each ready connection runs over: "snappy", "deflate" or "none"
(pynsq swaps its socket for a compressing one once the server agreed, so this is what was
negotiated, not what was asked).

Exit 0 only when every message got through and no error was seen: roundtrip P == R == N,
publish P == N (R is 0), consume R == N (P is 0). Exit 1 otherwise, including on timeout
(the program never waits longer than --timeout); exit 2 on bad usage.
Diagnostics (pynsq's own log, negotiated TLS version) go to stderr.

Message bodies are deterministic and shared with nsqjs_roundtrip.js, so one program can
publish and the other consume: body(i) = b"msg-<i>", and for even i it is followed by
b"|" and all 256 byte values (binary, invalid UTF-8, NUL and newlines included).

Quirks of pynsq 0.9.1 handled here:
- tls_options must be a dict (pynsq merges it into its defaults with dict.update) whose keys
  tornado accepts: ssl_version, certfile, keyfile, cert_reqs, ca_certs, ciphers.
- pynsq's default ssl_version is PROTOCOL_TLSv1_2: TLS 1.2 only, and with that protocol
  Python's SSLContext has check_hostname=False, so the server name is NOT verified. We pass
  ssl_version=PROTOCOL_TLS_CLIENT, which negotiates TLS 1.2 or 1.3 and turns hostname
  checking on. pynsq passes server_hostname=<host of the address>; Python checks an IP
  literal against the certificate's IP SANs and sends no SNI for it (a DNS name is sent
  as SNI). --server-name overrides that name (pynsq has no option: tornado's
  ssl_wrap_socket is wrapped); --tls-max-version 1.2 caps tornado's SSLContext likewise.
- With auth_secret set, pynsq sends AUTH only when IDENTIFY's reply says auth_required.
- Error frames reach the Reader/Writer as nsq.Error(b"E_CODE description"); the library
  then reconnects (Reader after 15 s, Writer after reconnect_interval). We fail fast
  instead of reconnecting, so a refusal shows up at once in "errors".
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import time

import nsq
import tornado.iostream
import tornado.netutil
from nsq import protocol

NON_FATAL_CODES = ("E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED")
log = logging.getLogger("pynsq_roundtrip")


def body(i):
    """The i-th message body, identical to nsqjs_roundtrip.js's."""
    data = b"msg-%d" % i
    if i % 2 == 0:
        data += b"|" + bytes(range(256))
    return data


def describe_body(data):
    text = data[:24].decode("utf-8", "replace")
    return "%r (%d bytes)" % (text, len(data))


def describe_error(error):
    """Turn what pynsq reports into one readable line."""
    if type(error) is protocol.Error and error.args and isinstance(error.args[0], bytes):
        # An error frame from the server: b"E_CODE description".
        return error.args[0].decode("utf-8", "replace")
    if isinstance(error, protocol.SendError):
        return "%s: %s" % (error.msg, error.error)
    if isinstance(error, protocol.ConnectionClosedError):
        return "connection closed"
    if isinstance(error, protocol.IntegrityError) and "unpack size" in str(error):
        # pynsq's read of the next frame header failed: the socket was closed or reset.
        return "connection lost while reading the next frame (pynsq: %s)" % error
    return "%s: %s" % (type(error).__name__, error)


def split_address(address):
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("--address must be HOST:PORT, got %r" % address)
    if ":" in host:
        raise ValueError("IPv6 addresses are not supported by pynsq's address parsing")
    return host, int(port)


def cap_tls_version(maximum):
    """Cap the TLS version of every context tornado builds (pynsq offers no knob for it)."""
    original = tornado.netutil.ssl_options_to_context

    def capped(ssl_options, *args, **kwargs):
        context = original(ssl_options, *args, **kwargs)
        context.maximum_version = maximum
        return context

    tornado.netutil.ssl_options_to_context = capped


def close_description(conn, who):
    """Why a connection closed, as well as pynsq lets us know."""
    stream_error = getattr(conn.stream, "error", None) if conn.stream is not None else None
    reason = " (%s: %s)" % (type(stream_error).__name__, stream_error) if stream_error else ""
    if not getattr(conn, "was_ready", False):
        return "%s: connection to %s closed before it was ready%s" % (who, conn.id, reason)
    return "%s: connection to %s closed by the server%s" % (who, conn.id, reason)


def pin_server_name(name):
    """Verify (and send as SNI, unless an IP) `name` instead of the dialled host."""
    original = tornado.iostream.ssl_wrap_socket

    def wrap(sock, ssl_options, server_hostname=None, server_side=None, **kwargs):
        if not server_side:
            server_hostname = name
        return original(sock, ssl_options, server_hostname=server_hostname,
                        server_side=server_side, **kwargs)

    tornado.iostream.ssl_wrap_socket = wrap


def compression_of(conn):
    """What the connection compresses with: pynsq wraps its socket once the server agreed."""
    name = type(getattr(conn, "socket", None)).__name__
    return {"SnappySocket": "snappy", "DeflateSocket": "deflate"}.get(name, "none")


def tls_description(conn):
    sock = getattr(conn, "socket", None)
    if isinstance(sock, ssl.SSLSocket):
        cipher = sock.cipher()
        return "%s %s" % (sock.version(), cipher[0] if cipher else "?")
    return "no TLS"


class Run:
    """Shared state of one run: what was published, received and went wrong."""

    def __init__(self, args):
        self.args = args
        self.expected = {body(i) for i in range(args.count)}
        self.published = 0
        self.received = set()
        self.errors = []
        self.compression = []
        self.failed = asyncio.Event()
        self.writer_ready = asyncio.Event()
        self.all_published = asyncio.Event()
        self.all_received = asyncio.Event()
        if args.count == 0:
            self.all_published.set()
            self.all_received.set()

    def error(self, text, fatal=True):
        if text not in self.errors:
            log.error("%s", text)
            self.errors.append(text)
        if fatal:
            self.failed.set()


class RecordingWriter(nsq.Writer):
    """A Writer that records errors and closes instead of reconnecting."""

    def __init__(self, run, **kwargs):
        self.run = run
        self.closing = False
        super().__init__(**kwargs)

    def close(self):
        self.closing = True
        for conn in list(self.conns.values()):
            conn.close()

    def _on_connection_ready(self, conn, **kwargs):
        conn.was_ready = True
        super()._on_connection_ready(conn, **kwargs)
        self.run.compression.append(compression_of(conn))
        print("pynsq writer: connected to %s with %s" % (conn.id, tls_description(conn)),
              file=sys.stderr)
        self.run.writer_ready.set()

    def _on_connection_error(self, conn, error, **kwargs):
        text = describe_error(error)
        if self.closing or conn.closed():
            # After a close (ours or the server's, already recorded) the pending read
            # fails with "failed to unpack size": not news.
            log.info("writer: after close: %s", text)
            return
        self.run.error("writer: %s" % text, fatal=not text.startswith(NON_FATAL_CODES))
        # Fail the pending publish callbacks (pynsq's own behaviour).
        super()._on_connection_error(conn, error, **kwargs)

    def _on_connection_close(self, conn, **kwargs):
        self.conns.pop(conn.id, None)
        pending, conn.callback_queue = conn.callback_queue, []
        if not self.closing:
            self.run.error(close_description(conn, "writer"))
        for callback in pending:
            callback(conn, protocol.ConnectionClosedError())


class RecordingReader(nsq.Reader):
    """A Reader that records errors and does not reconnect."""

    def __init__(self, run, **kwargs):
        self.run = run
        self.closing = False
        super().__init__(**kwargs)

    def close(self):
        self.closing = True
        super().close()

    def _on_connection_ready(self, conn, **kwargs):
        conn.was_ready = True
        self.run.compression.append(compression_of(conn))
        print("pynsq reader: connected to %s with %s" % (conn.id, tls_description(conn)),
              file=sys.stderr)
        try:
            super()._on_connection_ready(conn, **kwargs)
        except AssertionError:
            # pynsq asserts valid names before sending SUB (and pynsq would swallow this).
            self.run.error("reader: pynsq refused to send SUB %s %s (invalid topic or channel"
                           " name?)" % (self.topic, self.channel))

    def _on_connection_error(self, conn, error, **kwargs):
        text = describe_error(error)
        if self.closing or conn.closed():
            log.info("reader: after close: %s", text)
        else:
            self.run.error("reader: %s" % text, fatal=not text.startswith(NON_FATAL_CODES))

    def _on_connection_close(self, conn, **kwargs):
        if not self.closing:
            self.run.error(close_description(conn, "reader"))
        self.conns.pop(conn.id, None)
        if conn.rdy_timeout:
            self.io_loop.remove_timeout(conn.rdy_timeout)
            conn.rdy_timeout = None


def conn_kwargs(args):
    kwargs = {}
    if not args.no_tls:
        tls_options = {
            # PROTOCOL_TLS_CLIENT: TLS 1.2 and 1.3, check_hostname on (see module doc).
            "ssl_version": ssl.PROTOCOL_TLS_CLIENT,
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": args.ca,
        }
        if args.cert:
            tls_options["certfile"] = args.cert
            tls_options["keyfile"] = args.key
        kwargs["tls_v1"] = True
        kwargs["tls_options"] = tls_options
    if args.secret is not None:
        kwargs["auth_secret"] = args.secret
    if args.snappy:
        kwargs["snappy"] = True
    if args.deflate:
        kwargs["deflate"] = True
        kwargs["deflate_level"] = args.deflate_level
    return kwargs


async def publish(run, address):
    args = run.args
    writer = RecordingWriter(
        run,
        nsqd_tcp_addresses=[address],
        reconnect_interval=3600.0,
        **conn_kwargs(args),
    )
    try:
        if not await wait_for_any(run, run.writer_ready, what=lambda: "the writer to connect"):
            return

        def on_reply(conn, data, count=1):
            if isinstance(data, protocol.Error):
                # Error frames and closes were recorded by the connection's handlers.
                if not run.failed.is_set():
                    run.error("writer: publish failed: %s" % describe_error(data))
                return
            if data == b"OK":
                run.published += count
            else:
                run.error("writer: unexpected reply to a publish: %r" % (data,))
            if run.published == args.count:
                run.all_published.set()

        bodies = [body(i) for i in range(args.count)]
        if args.mpub_batch > 0:
            for start in range(0, len(bodies), args.mpub_batch):
                batch = bodies[start:start + args.mpub_batch]
                writer.mpub(args.topic, batch,
                            callback=lambda c, d, n=len(batch): on_reply(c, d, n))
        else:
            for data in bodies:
                writer.pub(args.topic, data, callback=on_reply)
        await wait_for_any(run, run.all_published,
                           what=lambda: "OK for every publish (%d of %d so far)"
                           % (run.published, args.count))
    finally:
        writer.close()


async def consume(run, address):
    args = run.args

    def handler(message):
        data = message.body
        if data in run.received:
            run.error("reader: duplicate message %s (attempts=%d)"
                      % (describe_body(data), message.attempts), fatal=False)
        elif data not in run.expected:
            run.error("reader: unexpected message %s" % describe_body(data), fatal=False)
        else:
            run.received.add(data)
            if len(run.received) == args.count:
                run.all_received.set()
        return True  # FIN

    reader = RecordingReader(
        run,
        topic=args.topic,
        channel=args.channel,
        message_handler=handler,
        nsqd_tcp_addresses=[address],
        max_in_flight=max(1, min(args.count, 1000)),
        **conn_kwargs(args),
    )
    try:
        await wait_for_any(run, run.all_received,
                           what=lambda: "every message (%d of %d so far)"
                           % (len(run.received), args.count))
        # Let the FINs of the last messages leave (and any E_FIN_FAILED come back).
        await flush(reader.conns.values())
    finally:
        reader.close()


async def flush(conns, limit=2.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not any(c.stream is not None and c.stream.writing() for c in conns):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)


async def wait_for_any(run, event, what):
    """Wait for `event`, a fatal error, or the run's deadline. True when `event` fired."""
    remaining = run.deadline - time.monotonic()
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(run.failed.wait())]
    done, pending = await asyncio.wait(waiters, timeout=max(remaining, 0),
                                       return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    if event.is_set():
        return True
    if not run.failed.is_set():
        run.error("timeout after %ss waiting for %s" % (run.args.timeout, what()))
    return False


async def main_async(args):
    run = Run(args)
    run.deadline = time.monotonic() + args.timeout
    host, port = split_address(args.address)
    address = "%s:%d" % (host, port)
    if args.mode in ("roundtrip", "publish"):
        await publish(run, address)
    if args.mode in ("roundtrip", "consume") and not run.failed.is_set():
        await consume(run, address)
    return run, run.published, len(run.received)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="nsqd/nsqgate TCP address HOST:PORT")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--count", type=int, required=True, help="number of messages (N)")
    parser.add_argument("--ca", help="CA bundle (PEM) to verify the server's certificate")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client certificate's private key (PEM)")
    parser.add_argument("--secret", help="AUTH secret (sent when the server says auth_required)")
    parser.add_argument("--mode", choices=("roundtrip", "publish", "consume"),
                        default="roundtrip")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--mpub-batch", type=int, default=0,
                        help="publish with MPUB in batches of this size (default: one PUB each)")
    parser.add_argument("--tls-max-version", choices=("1.2", "1.3"), default="1.3",
                        help="highest TLS version to offer (default 1.3)")
    parser.add_argument("--server-name",
                        help="name to verify the server certificate against "
                             "(default: the host part of --address)")
    parser.add_argument("--no-tls", action="store_true",
                        help="do not ask for TLS (for negative tests)")
    parser.add_argument("--snappy", action="store_true", help="ask for snappy compression")
    parser.add_argument("--deflate", action="store_true", help="ask for deflate compression")
    parser.add_argument("--deflate-level", type=int, default=6,
                        help="deflate level to ask for and compress with (default 6)")
    parser.add_argument("--verbose", action="store_true", help="log pynsq's INFO messages")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be >= 0")
    if not args.no_tls and not args.ca:
        parser.error("--ca is required unless --no-tls is given")
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.mpub_batch < 0:
        parser.error("--mpub-batch must be >= 0")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.tls_max_version == "1.2":
        cap_tls_version(ssl.TLSVersion.TLSv1_2)
    if args.server_name:
        pin_server_name(args.server_name)

    errors = []
    compression = []
    published = received = 0
    try:
        run, published, received = asyncio.run(main_async(args))
        errors = run.errors
        compression = run.compression
    except Exception as exc:  # report, never hang or die silently
        errors.append("client failure: %s: %s" % (type(exc).__name__, exc))

    print(json.dumps({"published": published, "received": received, "errors": errors,
                      "compression": compression}))
    sys.stdout.flush()
    expected_p = args.count if args.mode != "consume" else 0
    expected_r = args.count if args.mode != "publish" else 0
    ok = not errors and published == expected_p and received == expected_r
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
