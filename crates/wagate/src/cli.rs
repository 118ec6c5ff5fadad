//! The command line: `serve`, `keys create|list|revoke`, `openapi`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use wagate_core::{ApiKeyId, Capabilities, OrgId};
use wagate_runtime::{ApiKeyService, CreateApiKey};

use crate::app::{Application, open_store, shutdown_signal};
use crate::config::{Config, Layer, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "wagate", version, about = "Self-hosted, multi-tenant WhatsApp gateway")]
pub struct Cli {
    /// Optional TOML configuration file (its keys are the flag names with underscores)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway
    Serve(Layer),
    /// Manage API keys
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI document
    Openapi,
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Directory of the embedded database [default: ./wagate-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://...
    #[arg(long)]
    pub database_url: Option<crate::config::Secret>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (printed alone on the last line of stdout, once)
    Create {
        /// Organization (created if new)
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: manage,send,read
        #[arg(long)]
        capabilities: String,
        /// e.g. 30d, 12h, 90m
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an organization's keys
    List {
        #[arg(long)]
        org: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key at once
    Revoke {
        /// The key's id (key_...)
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(flags) => {
            let config = load(cli.config.as_deref(), flags)?;
            init_logging(&config);
            let shutdown = shutdown_signal();
            tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), database = ?config.database_url, "starting wagate");
            let app = Application::build(&config).await?;
            if let Some(key) = app.bootstrap_key() {
                println!("wagate: created organization `default` and its first API key, with every capability.");
                println!("wagate: it is shown only this once; store it now:");
                println!("{key}");
            }
            app.run_until(shutdown).await
        }
        Command::Keys { command } => keys(cli.config.as_deref(), command).await,
        Command::Openapi => {
            println!("{}", wagate_api::openapi::document_json());
            Ok(())
        }
    }
}

fn load(file: Option<&std::path::Path>, flags: Layer) -> anyhow::Result<Config> {
    Config::load(file, flags).map_err(anyhow::Error::msg)
}

fn store_config(file: Option<&std::path::Path>, store: StoreArgs) -> anyhow::Result<Config> {
    load(file, Layer { data_dir: store.data_dir, database_url: store.database_url, ..Layer::default() })
}

async fn keys(file: Option<&std::path::Path>, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { org, name, capabilities, expires_in, store } => {
            let org = OrgId::parse(&org).context("--org must be a non-empty printable string")?;
            let capabilities = Capabilities::parse_list(&capabilities)
                .map_err(|bad| anyhow::anyhow!("unknown capability `{bad}` (use manage, send, read)"))?;
            if capabilities.is_empty() {
                bail!("--capabilities must name at least one of manage, send, read");
            }
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let now = wagate_core::now();
            let expires_at = expires_in
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            let keys = api_keys(file, store).await?;
            let new = CreateApiKey { org, name: name.trim().to_owned(), capabilities, expires_at };
            let key = keys.create(new).await.map_err(|e| anyhow::anyhow!("cannot store the key: {e}"))?;
            let record = &key.record;
            eprintln!(
                "created {} in organization `{}` with {}{}; the key is shown only once:",
                record.id,
                record.org,
                capabilities.to_list(),
                expires_at.map(|t| format!(", expiring {}", t.to_rfc3339())).unwrap_or_default()
            );
            println!("{}", key.secret);
            Ok(())
        }
        KeysCommand::List { org, store } => {
            let org = OrgId::parse(&org).context("--org must be a non-empty printable string")?;
            let keys = api_keys(file, store).await?.list(&org).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{:<32} {:<20} {:<18} {:<10} {:<25} LAST USED", "ID", "NAME", "CAPABILITIES", "STATE", "CREATED");
            let now = wagate_core::now();
            for k in keys {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<32} {:<20} {:<18} {:<10} {:<25} {}",
                    k.id,
                    k.name,
                    k.capabilities.to_list(),
                    state,
                    k.created_at.to_rfc3339(),
                    k.last_used_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".to_owned())
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { key_id, store } => {
            let id = ApiKeyId::parse(&key_id).map_err(|_| anyhow::anyhow!("`{key_id}` is not a key id (key_...)"))?;
            if api_keys(file, store).await?.revoke(&id).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                println!("revoked {id}");
                Ok(())
            } else {
                bail!("no key {id}")
            }
        }
    }
}

/// The keys of the configured store.
async fn api_keys(file: Option<&std::path::Path>, store: StoreArgs) -> anyhow::Result<ApiKeyService> {
    Ok(ApiKeyService::new(open_store(&store_config(file, store)?).await?))
}

/// `30d`, `12h`, `90m`, `45s`, `2w`, `500ms`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("`{s}` is not a duration like 30d, 12h, 90m"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => bail!("`{s}` is not a duration like 30d, 12h, 90m"),
    };
    if n == 0 {
        bail!("the duration must be positive");
    }
    Ok(Duration::from_millis(n.saturating_mul(millis)))
}

pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("wagate: invalid log filter `{}` ({e}); using `info`", config.log);
        EnvFilter::new("info")
    });
    // Colours only for a person at a terminal: escape codes in a log file or a collector are
    // noise (and formatting them costs time on every request line).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
