//! `nsqgate policy explain`: the command-line face of [`super::explain`], for operators asking
//! why a caller may or may not publish or subscribe.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{explain, Credential, Request};
use crate::config::Config;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["identity", "token", "api_key"])))]
#[command(group(clap::ArgGroup::new("what").required(true).args(["publish", "subscribe"])))]
pub struct ExplainArgs {
    #[arg(long, env = "NSQGATE_CONFIG")]
    config: PathBuf,
    /// An identity as a certificate or token would name it.
    #[arg(long)]
    identity: Option<String>,
    /// A JWT, verified exactly as AUTH verifies it.
    #[arg(long)]
    token: Option<String>,
    /// An API key, looked up exactly as AUTH looks it up.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    #[arg(long, value_name = "TOPIC")]
    publish: Option<String>,
    #[arg(long, num_args = 2, value_names = ["TOPIC", "CHANNEL"])]
    subscribe: Option<Vec<String>>,
}

/// Runs `nsqgate policy explain`: exit 0 when allowed, 1 when denied, 2 on an error.
pub fn run(args: &ExplainArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(2);
        }
    };
    if config.auth.jwks_source.is_some() {
        let fetched = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(crate::auth::jwks::load_initial(&mut config))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = fetched {
            eprintln!("error: JWKS fetch failed: {e}");
            return ExitCode::from(2);
        }
    }
    let credential = match (&args.identity, &args.token, &args.api_key) {
        (Some(identity), _, _) => Credential::Identity(identity),
        (_, Some(token), _) => Credential::Secret(token.as_bytes()),
        (_, _, Some(key)) => Credential::Secret(key.as_bytes()),
        _ => return ExitCode::from(2),
    };
    let request = match (&args.publish, args.subscribe.as_deref()) {
        (Some(topic), _) => Request::Publish(topic),
        (_, Some([topic, channel])) => Request::Subscribe(topic, channel),
        _ => return ExitCode::from(2),
    };
    match explain(&config, credential, request) {
        Ok(explanation) => {
            println!("{explanation}");
            if explanation.allowed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
