//! nsqgate-bench: the load generator that bench/run drives. One JSON object per run on stdout
//! (messages, msg/s, latency percentiles where measured, CPU seconds of this process and of
//! every `--watch NAME=PID` over the measured window, steal time).

mod compress;
mod compressed;
mod conn;
mod consume;
mod counted;
mod handshake;
mod http_get;
mod http_pub;
mod lookupd;
mod open_loop;
mod publish;
mod relay;
mod repeat;
mod window;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use rustls_pki_types::ServerName;
use serde_json::Value;

use conn::{Mode, Target};
use window::Watched;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "NSQ load generator for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Debug, clap::Args)]
struct TargetArgs {
    /// The target's NSQ TCP address.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value = "plain")]
    mode: Mode,
    /// CA (PEM) the target's certificate must chain to (TLS modes).
    #[arg(long)]
    ca: Option<String>,
    /// Name to verify in the certificate; default: the address's IP.
    #[arg(long)]
    server_name: Option<String>,
    /// AUTH secret (a JWT), sent when the IDENTIFY reply says auth_required.
    #[arg(long)]
    token: Option<String>,
    /// IDENTIFY output_buffer_timeout in ms (nsqd's default is 250).
    #[arg(long)]
    output_buffer_timeout_ms: Option<u64>,
    /// Compression asked for in IDENTIFY (the target must agree).
    #[arg(long, value_enum, default_value = "none")]
    compression: compress::Codec,
    /// DEFLATE's level (IDENTIFY deflate_level).
    #[arg(long, default_value_t = 6)]
    deflate_level: u32,
    /// Resume TLS sessions (tickets) on new connections.
    #[arg(long)]
    resume: bool,
    /// A process whose CPU (and RSS for idle) is reported: NAME=PID.
    #[arg(long = "watch", value_parser = window::parse_watched)]
    watched: Vec<Watched>,
}

#[derive(Clone, Debug, clap::Args)]
struct Timing {
    /// Seconds run before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

impl Timing {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    fn seconds(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

#[derive(Subcommand)]
enum Command {
    /// PUB/MPUB closed loop, or open loop at --rate (latency).
    Pub {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        load: publish::Load,
        #[command(flatten)]
        timing: Timing,
        /// Offered messages per second (open loop, PUB only); unset: closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Open loop: writes every measured message's due time, latency and connection
        /// (CSV) here, to see when a stall struck and whom.
        #[arg(long, requires = "rate")]
        timeline: Option<std::path::PathBuf>,
    },
    /// SUB fan-out, FIN each message.
    Sub {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        fanout: consume::Fanout,
        #[command(flatten)]
        timing: Timing,
    },
    /// New connections per second: TCP + TLS + IDENTIFY + AUTH + 1 PUB + close.
    Connect {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[command(flatten)]
        timing: Timing,
    },
    /// Idle authenticated connections: RSS of the watched processes at each step.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        /// Connection counts to read RSS at, e.g. 1000,8000.
        #[arg(long, value_delimiter = ',', default_value = "1000,8000")]
        steps: Vec<usize>,
        /// Source addresses 127.0.0.2, .3, ... the connections are spread over.
        #[arg(long, default_value_t = 8)]
        sources: usize,
    },
    /// Registrations over nsqlookupd's TCP protocol V1 (nsqlookupd, or a registration sidecar).
    Lookupd {
        #[command(flatten)]
        registration: lookupd::Registration,
        #[command(flatten)]
        timing: Timing,
        /// A process whose CPU is reported: NAME=PID.
        #[arg(long = "watch", value_parser = window::parse_watched)]
        watched: Vec<Watched>,
    },
    /// HTTP GET on a new connection per request, as nsqd asks its auth server.
    HttpGet {
        #[command(flatten)]
        get: http_get::Get,
        #[command(flatten)]
        timing: Timing,
        /// A process whose CPU is reported: NAME=PID.
        #[arg(long = "watch", value_parser = window::parse_watched)]
        watched: Vec<Watched>,
    },
    /// Publishes a fixed number of messages straight to nsqd (plain TCP), then exits: a topic
    /// filled alike for every reader bench/run compares.
    Fill {
        /// nsqd's plain TCP address.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, value_enum, default_value = "repeated")]
        body: publish::Body,
    },
    /// HTTP POST /pub on kept-alive connections, one request in flight on each.
    HttpPub {
        #[command(flatten)]
        publish: http_pub::HttpPub,
        #[command(flatten)]
        timing: Timing,
        /// A process whose CPU is reported: NAME=PID.
        #[arg(long = "watch", value_parser = window::parse_watched)]
        watched: Vec<Watched>,
    },
    /// A floor relay in front of nsqd (targets F0, F0-framed): runs until killed.
    Relay {
        #[command(flatten)]
        relay: relay::Relay,
    },
    /// Prints an ES256 JWT signed with a PKCS#8 P-256 key.
    Jwt {
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "bench")]
        sub: String,
        #[arg(long, default_value_t = 86400)]
        ttl_secs: u64,
    },
}

fn target(args: &TargetArgs) -> Result<Arc<Target>, Error> {
    let tls = match &args.ca {
        Some(ca) => {
            let name = args
                .server_name
                .clone()
                .unwrap_or_else(|| args.addr.ip().to_string());
            let connector = conn::tls_connector(ca, args.resume)?;
            Some((connector, ServerName::try_from(name)?))
        }
        None => None,
    };
    let mut identify = serde_json::Map::new();
    if let Some(ms) = args.output_buffer_timeout_ms {
        identify.insert("output_buffer_timeout".into(), ms.into());
    }
    Ok(Arc::new(Target {
        addr: args.addr,
        mode: args.mode,
        tls,
        token: args.token.clone(),
        identify,
        compression: args.compression,
        deflate_level: args.deflate_level,
        wire: Arc::default(),
    }))
}

fn jwt(key: &str, sub: &str, ttl_secs: u64) -> Result<String, Error> {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(key)?)?;
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + ttl_secs;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let claims = serde_json::json!({ "sub": sub, "exp": exp });
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

async fn run(command: Command) -> Result<Value, Error> {
    let secs = Duration::from_secs_f64;
    let out = match command {
        Command::Pub {
            target: t,
            load,
            timing,
            rate,
            timeline,
        } => {
            let (warmup, seconds) = (secs(timing.warmup), secs(timing.seconds));
            match rate {
                Some(rate) => {
                    let timeline = timeline.as_deref();
                    let target = target(&t)?;
                    open_loop::open_loop(target, &load, rate, warmup, seconds, &t.watched, timeline)
                        .await?
                }
                None => {
                    publish::closed_loop(target(&t)?, &load, warmup, seconds, &t.watched).await?
                }
            }
        }
        Command::Sub {
            target: t,
            fanout,
            timing,
        } => consume::fanout(target(&t)?, &fanout, secs(timing.seconds), &t.watched).await?,
        Command::Connect {
            target: t,
            workers,
            timing,
        } => {
            let (warmup, seconds) = (secs(timing.warmup), secs(timing.seconds));
            handshake::connect_rate(target(&t)?, workers, warmup, seconds, &t.watched).await?
        }
        Command::Idle {
            target: t,
            steps,
            sources,
        } => handshake::idle(target(&t)?, &steps, sources, &t.watched).await?,
        Command::Lookupd {
            registration,
            timing,
            watched,
        } => lookupd::run(&registration, &timing, &watched).await?,
        Command::HttpGet {
            get,
            timing,
            watched,
        } => http_get::run(&get, &timing, &watched).await?,
        Command::HttpPub {
            publish,
            timing,
            watched,
        } => http_pub::run(&publish, &timing, &watched).await?,
        Command::Fill {
            addr,
            topic,
            count,
            size,
            body,
        } => {
            consume::fill(addr, &topic, count, size, body).await?;
            let mut out = serde_json::Map::new();
            out.insert("messages".into(), count.into());
            out
        }
        Command::Jwt { key, sub, ttl_secs } => {
            return Ok(Value::String(jwt(&key, &sub, ttl_secs)?))
        }
        // Runs on its own workers (main, below), never inside this runtime.
        Command::Relay { .. } => return Err("the relay runs on its own workers".into()),
    };
    Ok(Value::Object(out))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Relay { relay } = &cli.command {
        return match relay::serve(relay) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nsqgate-bench relay: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nsqgate-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(Value::String(text)) => println!("{text}"),
        Ok(value) => println!("{value}"),
        Err(e) => {
            eprintln!("nsqgate-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
