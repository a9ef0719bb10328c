#!/usr/bin/env node
/*
 * Publish and/or consume N messages through nsqd (or nsqgate) with nsqjs, over TLS.
 *
 * Run with node from anywhere: nsqjs is loaded from tests/clients/node_modules next to this
 * file (see scripts/install-clients). Used by the Rust integration tests as a real
 * third-party client; they check the exit code and the single JSON line on stdout:
 *
 *     {"published": P, "received": R, "errors": [...]}
 *
 * Exit 0 only when every message got through and no error was seen: roundtrip
 * P == R == N, publish P == N (R is 0), consume R == N (P is 0). Exit 1 otherwise,
 * including on timeout (never waits longer than --timeout); exit 2 on bad usage.
 * Diagnostics (negotiated TLS version, events) go to stderr.
 *
 * Message bodies are deterministic and shared with pynsq_roundtrip.py: body(i) is
 * "msg-<i>", and for even i it is followed by "|" and all 256 byte values.
 *
 * Quirks of nsqjs 0.13.0 handled here:
 * - `ca`, `cert` and `key` must each be a Buffer: its option validation rejects an array
 *   ("ca must be a buffer"), although Node's tls would take one. A Buffer may hold several
 *   PEM certificates.
 * - The TLS upgrade calls tls.connect({socket, ca, cert, key, rejectUnauthorized}) with no
 *   servername and no host, so no SNI is sent and Node checks the certificate against
 *   the name "localhost", whatever address was dialled (a cert without a localhost SAN
 *   always fails; one with it passes even when dialling 127.0.0.1 or another host).
 *   nsqjs offers no option for the server name or TLS versions, so this program wraps
 *   tls.connect: the certificate is checked against --server-name (default: the host
 *   part of --address; an IP is matched against IP SANs). SNI stays as nsqjs sends it
 *   (none). --tls-max-version 1.2 lowers tls.DEFAULT_MAX_VERSION for the process.
 * - nsqjs sends AUTH whenever authSecret is set, even when IDENTIFY's reply says
 *   auth_required=false; a stock nsqd without auth answers a fatal E_AUTH_DISABLED.
 * - Error frames surface as Error("E_CODE description") on the Reader/Writer "error"
 *   event (an unhandled "error" event would crash the process); the connection is then
 *   closed. We fail fast instead of waiting for nsqjs's reconnects.
 */
'use strict'

const fs = require('fs')
const path = require('path')
const tls = require('tls')

const NON_FATAL_CODES = ['E_FIN_FAILED', 'E_REQ_FAILED', 'E_TOUCH_FAILED']
const USAGE = `usage: nsqjs_roundtrip.js --address HOST:PORT --topic T --channel C --count N
       (--ca CA_PEM | --no-tls) [--cert PEM --key PEM] [--secret S]
       [--mode roundtrip|publish|consume] [--timeout SECONDS (30)]
       [--mpub-batch K] [--tls-max-version 1.2|1.3] [--server-name NAME] [--verbose]`

function loadNsqjs() {
  const local = path.join(__dirname, 'node_modules', 'nsqjs')
  try {
    return require(local)
  } catch (e) {
    // Fall back to NODE_PATH / the usual resolution.
    return require('nsqjs')
  }
}

/** The i-th message body, identical to pynsq_roundtrip.py's. */
function body(i) {
  const head = Buffer.from(`msg-${i}`, 'latin1')
  if (i % 2 !== 0) return head
  const all = Buffer.alloc(256)
  for (let b = 0; b < 256; b++) all[b] = b
  return Buffer.concat([head, Buffer.from('|', 'latin1'), all])
}

function describeBody(buf) {
  return `${JSON.stringify(buf.subarray(0, 24).toString('latin1'))} (${buf.length} bytes)`
}

function describeError(err) {
  if (err instanceof Error) {
    const code = err.code ? `${err.code}: ` : ''
    return `${code}${String(err.message).trim().replace(/\s*\n\s*/g, " ")}`
  }
  return String(err)
}

class UsageError extends Error {}

function parseArgs(argv) {
  const opts = {
    mode: 'roundtrip',
    timeout: 30,
    mpubBatch: 0,
    tlsMaxVersion: '1.3',
    noTls: false,
    verbose: false,
  }
  const valued = {
    '--address': 'address',
    '--topic': 'topic',
    '--channel': 'channel',
    '--count': 'count',
    '--ca': 'ca',
    '--cert': 'cert',
    '--key': 'key',
    '--secret': 'secret',
    '--mode': 'mode',
    '--timeout': 'timeout',
    '--mpub-batch': 'mpubBatch',
    '--tls-max-version': 'tlsMaxVersion',
    '--server-name': 'serverName',
  }
  const flags = {'--no-tls': 'noTls', '--verbose': 'verbose'}
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    const eq = arg.indexOf('=')
    if (arg.startsWith('--') && eq !== -1) {
      value = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    if (arg === '-h' || arg === '--help') {
      process.stderr.write(USAGE + '\n')
      process.exit(0)
    } else if (flags[arg]) {
      if (value !== undefined) throw new UsageError(`${arg} takes no value`)
      opts[flags[arg]] = true
    } else if (valued[arg]) {
      if (value === undefined) {
        if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`)
        value = argv[++i]
      }
      opts[valued[arg]] = value
    } else {
      throw new UsageError(`unknown argument ${arg}`)
    }
  }
  for (const required of ['address', 'topic', 'channel', 'count']) {
    if (opts[required] === undefined) throw new UsageError(`--${required} is required`)
  }
  const count = Number(opts.count)
  if (!Number.isInteger(count) || count < 0) throw new UsageError('--count must be an integer >= 0')
  opts.count = count
  const timeout = Number(opts.timeout)
  if (!(timeout > 0)) throw new UsageError('--timeout must be a positive number of seconds')
  opts.timeout = timeout
  const batch = Number(opts.mpubBatch)
  if (!Number.isInteger(batch) || batch < 0) throw new UsageError('--mpub-batch must be >= 0')
  opts.mpubBatch = batch
  if (!['roundtrip', 'publish', 'consume'].includes(opts.mode)) {
    throw new UsageError('--mode must be roundtrip, publish or consume')
  }
  if (!['1.2', '1.3'].includes(opts.tlsMaxVersion)) {
    throw new UsageError('--tls-max-version must be 1.2 or 1.3')
  }
  if (!opts.noTls && !opts.ca) throw new UsageError('--ca is required unless --no-tls is given')
  if (Boolean(opts.cert) !== Boolean(opts.key)) throw new UsageError('--cert and --key go together')
  const match = /^(.+):(\d+)$/.exec(opts.address)
  if (!match) throw new UsageError(`--address must be HOST:PORT, got ${opts.address}`)
  opts.host = match[1].replace(/^\[(.*)\]$/, '$1')
  opts.port = Number(match[2])
  if (opts.serverName === undefined) opts.serverName = opts.host
  if (!opts.serverName) throw new UsageError('--server-name must not be empty')
  return opts
}

function connectionOptions(opts) {
  const options = {}
  if (!opts.noTls) {
    options.tls = true
    options.tlsVerification = true
    options.ca = fs.readFileSync(opts.ca) // a Buffer: nsqjs rejects arrays
    if (opts.cert) {
      options.cert = fs.readFileSync(opts.cert)
      options.key = fs.readFileSync(opts.key)
    }
  }
  if (opts.secret !== undefined) options.authSecret = opts.secret
  return options
}

/**
 * Make every TLS upgrade nsqjs starts check the certificate against `serverName`
 * instead of Node's fallback "localhost" (see the header comment).
 */
function verifyServerName(serverName) {
  const connect = tls.connect
  tls.connect = function connectCheckingServerName(...args) {
    const options = args[0]
    if (options && typeof options === 'object' && options.socket && !options.checkServerIdentity) {
      args[0] = {
        ...options,
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(serverName, cert),
      }
    }
    return connect.apply(this, args)
  }
}

function tlsDescription(socket) {
  if (socket && typeof socket.getProtocol === 'function') {
    const cipher = socket.getCipher()
    return `${socket.getProtocol()} ${cipher ? cipher.name : '?'}`
  }
  return 'no TLS'
}

class Run {
  constructor(opts) {
    this.opts = opts
    this.expected = new Set()
    for (let i = 0; i < opts.count; i++) this.expected.add(body(i).toString('hex'))
    this.published = 0
    this.received = new Set()
    this.errors = []
    this.failedWaiters = []
    this.failed = false
    this.deadline = Date.now() + opts.timeout * 1000
  }

  error(text, fatal = true) {
    // nsqjs reports some failures twice (as "error" and "connection_error"): keep one.
    if (!this.errors.includes(text)) {
      if (this.opts.verbose) process.stderr.write(`nsqjs_roundtrip: ERROR ${text}\n`)
      this.errors.push(text)
    }
    if (fatal && !this.failed) {
      this.failed = true
      for (const wake of this.failedWaiters.splice(0)) wake()
    }
  }

  /** Resolves true when `until(resolve)` calls resolve, false on failure or deadline. */
  waitFor(what, until) {
    return new Promise((resolve) => {
      if (this.failed) return resolve(false)
      let settled = false
      const finish = (ok) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve(ok)
      }
      const timer = setTimeout(() => {
        if (!this.failed) {
          this.error(`timeout after ${this.opts.timeout}s waiting for ${what()}`)
        }
        finish(false)
      }, Math.max(this.deadline - Date.now(), 0))
      this.failedWaiters.push(() => finish(false))
      until(() => finish(true))
    })
  }
}

function isFatal(text) {
  return !NON_FATAL_CODES.some((code) => text.startsWith(code))
}

async function publish(nsq, run) {
  const {opts} = run
  const writer = new nsq.Writer(opts.host, opts.port, connectionOptions(opts))
  let closing = false
  let ready = false
  let onReady = () => {}
  writer.on('ready', () => {
    ready = true
    const socket = writer.conn && writer.conn.conn
    process.stderr.write(
      `nsqjs writer: connected to ${opts.host}:${opts.port} with ${tlsDescription(socket)}\n`
    )
    onReady()
  })
  writer.on('error', (err) => {
    if (closing) return
    const text = describeError(err)
    run.error(`writer: ${text}`, isFatal(text))
  })
  writer.on('closed', () => {
    if (closing) return
    run.error(
      ready
        ? `writer: connection to ${opts.host}:${opts.port} closed by the server`
        : `writer: connection to ${opts.host}:${opts.port} closed before it was ready`
    )
  })
  writer.connect()

  try {
    const connected = await run.waitFor(
      () => 'the writer to connect',
      (resolve) => {
        if (ready) resolve()
        onReady = resolve
      }
    )
    if (!connected) return

    const bodies = []
    for (let i = 0; i < opts.count; i++) bodies.push(body(i))
    const batches = []
    if (opts.mpubBatch > 0) {
      for (let s = 0; s < bodies.length; s += opts.mpubBatch) {
        batches.push(bodies.slice(s, s + opts.mpubBatch))
      }
    } else {
      for (const b of bodies) batches.push(b)
    }
    await run.waitFor(
      () => `OK for every publish (${run.published} of ${opts.count} so far)`,
      (resolve) => {
        if (opts.count === 0) return resolve()
        for (const batch of batches) {
          const n = Array.isArray(batch) ? batch.length : 1
          writer.publish(opts.topic, batch, (err) => {
            if (err) {
              // nsqjs fails the callback just before it emits "error" for the same frame:
              // let that event be the one reported.
              setImmediate(() => {
                if (!run.failed) run.error(`writer: publish failed: ${describeError(err)}`)
              })
              return
            }
            run.published += n
            if (run.published === opts.count) resolve()
          })
        }
      }
    )
  } finally {
    closing = true
    if (writer.conn) writer.close()
  }
}

async function consume(nsq, run) {
  const {opts} = run
  const reader = new nsq.Reader(opts.topic, opts.channel, {
    nsqdTCPAddresses: [`${opts.host}:${opts.port}`],
    maxInFlight: Math.max(1, Math.min(opts.count, 1000)),
    ...connectionOptions(opts),
  })
  let closing = false
  let onAll = () => {}
  const readyConns = new WeakSet()

  // Hook each connection to log its TLS version and know whether it got ready.
  const register = reader.registerConnectionListeners.bind(reader)
  reader.registerConnectionListeners = (conn) => {
    register(conn)
    conn.on('ready', () => {
      readyConns.add(conn)
      process.stderr.write(
        `nsqjs reader: connected to ${conn.id()} with ${tlsDescription(conn.conn)}\n`
      )
    })
    conn.on('closed', () => {
      if (closing) return
      run.error(
        readyConns.has(conn)
          ? `reader: connection to ${conn.id()} closed by the server`
          : `reader: connection to ${conn.id()} closed before it was ready`
      )
    })
  }

  reader.on('error', (err) => {
    if (closing) return
    const text = describeError(err)
    run.error(`reader: ${text}`, isFatal(text))
  })
  reader.on('message', (msg) => {
    const data = msg.body
    const key = data.toString('hex')
    if (run.received.has(key)) {
      run.error(`reader: duplicate message ${describeBody(data)} (attempts=${msg.attempts})`, false)
    } else if (!run.expected.has(key)) {
      run.error(`reader: unexpected message ${describeBody(data)}`, false)
    } else {
      run.received.add(key)
    }
    msg.finish()
    if (run.received.size === opts.count) onAll()
  })
  reader.connect()

  try {
    const all = await run.waitFor(
      () => `every message (${run.received.size} of ${opts.count} so far)`,
      (resolve) => {
        if (run.received.size === opts.count) resolve()
        onAll = resolve
      }
    )
    if (all) {
      // Let the last FINs leave (and any E_FIN_FAILED come back) before closing.
      await new Promise((resolve) => setTimeout(resolve, 150))
    }
  } finally {
    closing = true
    reader.close()
  }
}

async function main() {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (e) {
    if (!(e instanceof UsageError)) throw e
    process.stderr.write(`nsqjs_roundtrip: ${e.message}\n${USAGE}\n`)
    return 2
  }
  if (opts.tlsMaxVersion === '1.2') tls.DEFAULT_MAX_VERSION = 'TLSv1.2'
  if (!opts.noTls) verifyServerName(opts.serverName)

  const run = new Run(opts)
  // nsqjs throws from inside its event handlers (e.g. "Invalid topic" before SUB):
  // report it like any other failure instead of dying without the JSON line.
  process.on('uncaughtException', (e) => run.error(`client failure: ${describeError(e)}`))
  let published = 0
  let received = 0
  try {
    const nsq = loadNsqjs()
    if (opts.mode !== 'consume') await publish(nsq, run)
    if (opts.mode !== 'publish' && !run.failed) await consume(nsq, run)
  } catch (e) {
    run.error(`client failure: ${e && e.stack ? e.stack.split('\n')[0] : e}`)
  }
  published = run.published
  received = run.received.size

  const line = JSON.stringify({published, received, errors: run.errors})
  const expectedP = opts.mode !== 'consume' ? opts.count : 0
  const expectedR = opts.mode !== 'publish' ? opts.count : 0
  const ok = run.errors.length === 0 && published === expectedP && received === expectedR
  await new Promise((resolve) => process.stdout.write(line + '\n', resolve))
  return ok ? 0 : 1
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stdout.write(
      JSON.stringify({published: 0, received: 0, errors: [`client failure: ${e}`]}) + '\n',
      () => process.exit(1)
    )
  }
)
