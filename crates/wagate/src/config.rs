//! One typed configuration, merged from defaults, an optional TOML file, command-line flags
//! and `WAGATE_*` environment variables, in that order (the environment wins).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A value that must never be printed: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`; anything unparseable is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let path = path.map(|p| format!("/{}", p.split('?').next().unwrap_or_default())).unwrap_or_default();
    format!("{scheme}://{authority}{path}")
}

/// Every setting, each optional: one layer of configuration.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory for the embedded database and engine keys [default: ./wagate-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://... [default: sqlite in the data directory]
    #[arg(long)]
    pub database_url: Option<Secret>,
    /// Separate address for /metrics (otherwise served on the main listener)
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// JWKS of the frontend that mints login JWTs (JWT login is off without it)
    #[arg(long)]
    pub jwks_url: Option<String>,
    /// Required `iss` of login JWTs
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of login JWTs
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// Claim holding the organization [default: org_id]
    #[arg(long)]
    pub jwt_org_claim: Option<String>,
    /// Claim holding the role [default: role]
    #[arg(long)]
    pub jwt_role_claim: Option<String>,
    /// Log filter, e.g. `info,wagate=debug` [default: info]
    #[arg(long)]
    pub log: Option<String>,
    /// `text` or `json` [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// WhatsApp WebSocket URL override [default: WhatsApp's own]
    #[arg(long)]
    pub wa_url: Option<String>,
    /// WhatsApp Web version to announce, e.g. 2.3000.1027934701 [default: looked up online]
    #[arg(long)]
    pub wa_version: Option<String>,
    /// Linked-device name shown on the phone [default: wagate]
    #[arg(long)]
    pub wa_device_name: Option<String>,
    /// Most WhatsApp connection attempts in flight at once [default: 16]
    #[arg(long)]
    pub wa_max_connects: Option<usize>,
    /// Seconds one WhatsApp connection attempt may take [default: 20]
    #[arg(long)]
    pub wa_connect_timeout: Option<u64>,
    /// How long events are kept, e.g. `7d`, `12h`, `30m` [default: 7d]
    #[arg(long)]
    pub event_retention: Option<String>,
    /// Seconds a client may take to send a request's headers (and its first request) [default: 10]
    #[arg(long)]
    pub header_read_timeout: Option<u64>,
    /// Seconds an idle keep-alive connection stays open [default: 60]
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Most open HTTP connections; further ones wait in the listen backlog [default: 10000]
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a shutdown waits for open requests before closing every connection [default: 10]
    #[arg(long)]
    pub shutdown_grace: Option<u64>,
    /// How long one webhook attempt may take, e.g. `15s`, `500ms` [default: 15s]
    #[arg(long)]
    pub webhook_timeout: Option<String>,
    /// Delays before each retry of a webhook delivery, comma-separated [default: 5s,5m,30m,2h,5h,10h,10h]
    #[arg(long)]
    pub webhook_retry_schedule: Option<String>,
    /// Let webhooks target loopback and private networks [default: false]
    #[arg(long)]
    pub webhook_allow_private: Option<bool>,
    /// Webhook attempts in flight at once [default: 64]
    #[arg(long)]
    pub webhook_workers: Option<usize>,
    /// Webhook attempts in flight at once to one webhook [default: 16]
    #[arg(long)]
    pub webhook_concurrency: Option<u32>,
    /// Messages a session sends per minute unless its sendPolicy says otherwise, 1 to 600 [default: 20]
    #[arg(long)]
    pub send_per_minute: Option<u32>,
    /// Largest media a message may carry, sent or received, in bytes [default: 16777216]
    #[arg(long)]
    pub media_max_bytes: Option<u64>,
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

impl Layer {
    /// Fields set in `other` replace ours.
    fn merge(self, other: Layer) -> Layer {
        Layer {
            listen: other.listen.or(self.listen),
            data_dir: other.data_dir.or(self.data_dir),
            database_url: other.database_url.or(self.database_url),
            metrics_listen: other.metrics_listen.or(self.metrics_listen),
            jwks_url: other.jwks_url.or(self.jwks_url),
            jwt_issuer: other.jwt_issuer.or(self.jwt_issuer),
            jwt_audience: other.jwt_audience.or(self.jwt_audience),
            jwt_org_claim: other.jwt_org_claim.or(self.jwt_org_claim),
            jwt_role_claim: other.jwt_role_claim.or(self.jwt_role_claim),
            log: other.log.or(self.log),
            log_format: other.log_format.or(self.log_format),
            wa_url: other.wa_url.or(self.wa_url),
            wa_version: other.wa_version.or(self.wa_version),
            wa_device_name: other.wa_device_name.or(self.wa_device_name),
            wa_max_connects: other.wa_max_connects.or(self.wa_max_connects),
            wa_connect_timeout: other.wa_connect_timeout.or(self.wa_connect_timeout),
            event_retention: other.event_retention.or(self.event_retention),
            header_read_timeout: other.header_read_timeout.or(self.header_read_timeout),
            idle_timeout: other.idle_timeout.or(self.idle_timeout),
            max_connections: other.max_connections.or(self.max_connections),
            shutdown_grace: other.shutdown_grace.or(self.shutdown_grace),
            webhook_timeout: other.webhook_timeout.or(self.webhook_timeout),
            webhook_retry_schedule: other.webhook_retry_schedule.or(self.webhook_retry_schedule),
            webhook_allow_private: other.webhook_allow_private.or(self.webhook_allow_private),
            webhook_workers: other.webhook_workers.or(self.webhook_workers),
            webhook_concurrency: other.webhook_concurrency.or(self.webhook_concurrency),
            send_per_minute: other.send_per_minute.or(self.send_per_minute),
            media_max_bytes: other.media_max_bytes.or(self.media_max_bytes),
        }
    }

    /// The `WAGATE_*` variables, read through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let positive = |name: &str, what: &str| -> Result<Option<u64>, String> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| format!("{name} must be a positive {what}")),
            }
        };
        let log_format = match var("WAGATE_LOG_FORMAT").as_deref() {
            None => None,
            Some("text") => Some(LogFormat::Text),
            Some("json") => Some(LogFormat::Json),
            Some(other) => return Err(format!("WAGATE_LOG_FORMAT must be `text` or `json`, not `{other}`")),
        };
        Ok(Layer {
            listen: var("WAGATE_LISTEN"),
            data_dir: var("WAGATE_DATA_DIR").map(PathBuf::from),
            database_url: var("WAGATE_DATABASE_URL").map(Secret::new),
            metrics_listen: var("WAGATE_METRICS_LISTEN"),
            jwks_url: var("WAGATE_JWKS_URL"),
            jwt_issuer: var("WAGATE_JWT_ISSUER"),
            jwt_audience: var("WAGATE_JWT_AUDIENCE"),
            jwt_org_claim: var("WAGATE_JWT_ORG_CLAIM"),
            jwt_role_claim: var("WAGATE_JWT_ROLE_CLAIM"),
            log: var("WAGATE_LOG"),
            log_format,
            wa_url: var("WAGATE_WA_URL"),
            wa_version: var("WAGATE_WA_VERSION"),
            wa_device_name: var("WAGATE_WA_DEVICE_NAME"),
            wa_max_connects: match var("WAGATE_WA_MAX_CONNECTS") {
                None => None,
                Some(v) => Some(v.parse().ok().filter(|n| *n > 0).ok_or("WAGATE_WA_MAX_CONNECTS must be a positive integer")?),
            },
            wa_connect_timeout: match var("WAGATE_WA_CONNECT_TIMEOUT") {
                None => None,
                Some(v) => Some(v.parse().ok().filter(|n| *n > 0).ok_or("WAGATE_WA_CONNECT_TIMEOUT must be a positive number of seconds")?),
            },
            event_retention: var("WAGATE_EVENT_RETENTION"),
            header_read_timeout: positive("WAGATE_HEADER_READ_TIMEOUT", "number of seconds")?,
            idle_timeout: positive("WAGATE_IDLE_TIMEOUT", "number of seconds")?,
            max_connections: positive("WAGATE_MAX_CONNECTIONS", "integer")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            shutdown_grace: positive("WAGATE_SHUTDOWN_GRACE", "number of seconds")?,
            webhook_timeout: var("WAGATE_WEBHOOK_TIMEOUT"),
            webhook_retry_schedule: var("WAGATE_WEBHOOK_RETRY_SCHEDULE"),
            webhook_allow_private: match var("WAGATE_WEBHOOK_ALLOW_PRIVATE").as_deref().map(str::trim) {
                None => None,
                Some("true" | "1" | "yes") => Some(true),
                Some("false" | "0" | "no") => Some(false),
                Some(other) => return Err(format!("WAGATE_WEBHOOK_ALLOW_PRIVATE must be `true` or `false`, not `{other}`")),
            },
            webhook_workers: positive("WAGATE_WEBHOOK_WORKERS", "integer")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            webhook_concurrency: positive("WAGATE_WEBHOOK_CONCURRENCY", "integer")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            send_per_minute: match var("WAGATE_SEND_PER_MINUTE") {
                None => None,
                Some(v) => Some(v.trim().parse().map_err(|_| "WAGATE_SEND_PER_MINUTE must be an integer from 1 to 600")?),
            },
            media_max_bytes: positive("WAGATE_MEDIA_MAX_BYTES", "number of bytes")?,
        })
    }

    pub fn from_toml_file(path: &Path) -> Result<Layer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid configuration file {}: {e}", path.display()))
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub metrics_listen: Option<String>,
    pub jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_org_claim: String,
    pub jwt_role_claim: String,
    pub log: String,
    pub log_format: LogFormat,
    pub whatsapp: WhatsappSettings,
    /// How long events are kept (`WAGATE_EVENT_RETENTION`).
    pub event_retention: std::time::Duration,
    pub connections: crate::server::ConnectionLimits,
    pub webhooks: wagate_runtime::WebhookConfig,
    pub messaging: wagate_runtime::MessagingConfig,
}

/// Settings of the real WhatsApp engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsappSettings {
    pub url: Option<String>,
    pub version: Option<(u32, u32, u32)>,
    pub device_name: String,
    pub max_concurrent_connects: usize,
    pub connect_timeout: std::time::Duration,
}

/// `2.3000.1027934701` → `(2, 3000, 1027934701)`.
pub fn parse_wa_version(s: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<_> = s.trim().split('.').map(str::parse::<u32>).collect();
    match parts.as_slice() {
        [Ok(a), Ok(b), Ok(c)] => Ok((*a, *b, *c)),
        _ => Err(format!("WhatsApp version `{s}` must look like 2.3000.1027934701")),
    }
}

impl Config {
    /// Defaults < file < flags < environment.
    pub fn resolve(file: Option<Layer>, flags: Layer, env: Layer) -> Result<Config, String> {
        let l = Layer::default().merge(file.unwrap_or_default()).merge(flags).merge(env);
        let webhooks = webhook_settings(&l)?;
        let data_dir = l.data_dir.unwrap_or_else(|| PathBuf::from("./wagate-data"));
        let database_url = l
            .database_url
            .unwrap_or_else(|| Secret::new(format!("sqlite://{}", data_dir.join("wagate.db").display())));
        let whatsapp = WhatsappSettings {
            url: l.wa_url,
            version: l.wa_version.as_deref().map(parse_wa_version).transpose()?,
            device_name: l.wa_device_name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "wagate".to_owned()),
            max_concurrent_connects: l.wa_max_connects.unwrap_or(16).max(1),
            connect_timeout: std::time::Duration::from_secs(l.wa_connect_timeout.unwrap_or(20).max(1)),
        };
        let event_retention = match l.event_retention.as_deref() {
            None => wagate_runtime::EventConfig::DEFAULT_RETENTION,
            Some(raw) => crate::cli::parse_duration(raw)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("WAGATE_EVENT_RETENTION must be a duration such as 7d, 12h, 30m or 45s, not `{raw}`"))?,
        };
        let secs = |v: Option<u64>, default: u64| std::time::Duration::from_secs(v.unwrap_or(default).max(1));
        let connections = crate::server::ConnectionLimits {
            header_read_timeout: secs(l.header_read_timeout, 10),
            idle_timeout: secs(l.idle_timeout, 60),
            max_connections: l.max_connections.unwrap_or(10_000).max(1),
            shutdown_grace: secs(l.shutdown_grace, 10),
        };
        let default_per_minute = l.send_per_minute.unwrap_or(wagate_runtime::messages::DEFAULT_PER_MINUTE);
        if !(1..=600).contains(&default_per_minute) {
            return Err(format!("WAGATE_SEND_PER_MINUTE must be an integer from 1 to 600, not {default_per_minute}"));
        }
        let media_max_bytes = l
            .media_max_bytes
            .map_or(wagate_runtime::messages::DEFAULT_MEDIA_MAX_BYTES, |n| usize::try_from(n).unwrap_or(usize::MAX))
            .clamp(1, 1 << 30);
        let messaging = wagate_runtime::MessagingConfig {
            default_per_minute,
            media_dir: Some(data_dir.join("media")),
            media_max_bytes,
            allow_private: webhooks.allow_private,
        };
        Ok(Config {
            messaging,
            webhooks,
            event_retention,
            listen: l.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
            data_dir,
            database_url,
            metrics_listen: l.metrics_listen,
            jwks_url: l.jwks_url,
            jwt_issuer: l.jwt_issuer,
            jwt_audience: l.jwt_audience,
            jwt_org_claim: l.jwt_org_claim.unwrap_or_else(|| "org_id".to_owned()),
            jwt_role_claim: l.jwt_role_claim.unwrap_or_else(|| "role".to_owned()),
            log: l.log.unwrap_or_else(|| "info".to_owned()),
            log_format: l.log_format.unwrap_or_default(),
            whatsapp,
            connections,
        })
    }

    /// Reads the file (if given) and the process environment.
    pub fn load(config_file: Option<&Path>, flags: Layer) -> Result<Config, String> {
        let file = config_file.map(Layer::from_toml_file).transpose()?;
        let env = Layer::from_env(|k| std::env::var(k).ok())?;
        Config::resolve(file, flags, env)
    }
}

/// The webhook settings of a merged layer.
fn webhook_settings(l: &Layer) -> Result<wagate_runtime::WebhookConfig, String> {
    use wagate_runtime::WebhookConfig;
    let defaults = WebhookConfig::default();
    let timeout = match l.webhook_timeout.as_deref() {
        None => defaults.timeout,
        Some(raw) => crate::cli::parse_duration(raw)
            .map_err(|_| format!("WAGATE_WEBHOOK_TIMEOUT must be a duration such as 15s or 500ms, not `{raw}`"))?,
    };
    let retry_schedule = match l.webhook_retry_schedule.as_deref() {
        None => defaults.retry_schedule.clone(),
        Some(raw) => parse_retry_schedule(raw)?,
    };
    Ok(WebhookConfig {
        timeout,
        retry_schedule,
        allow_private: l.webhook_allow_private.unwrap_or(false),
        workers: l.webhook_workers.unwrap_or(WebhookConfig::DEFAULT_WORKERS).max(1),
        per_webhook_concurrency: l.webhook_concurrency.unwrap_or(WebhookConfig::DEFAULT_PER_WEBHOOK).max(1),
        ..defaults
    })
}

/// `5s,5m,30m`: the delays before each retry (an empty schedule: no retries).
pub fn parse_retry_schedule(raw: &str) -> Result<Vec<std::time::Duration>, String> {
    if raw.trim().is_empty() || raw.trim() == "none" {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(|delay| {
            crate::cli::parse_duration(delay).map_err(|_| {
                format!("WAGATE_WEBHOOK_RETRY_SCHEDULE must be comma-separated durations such as 5s,5m,30m, not `{raw}`")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::resolve(None, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.whatsapp.device_name, "wagate");
        assert_eq!(c.whatsapp.version, None);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./wagate-data"));
        assert_eq!(c.database_url.expose(), "sqlite://./wagate-data/wagate.db");
        assert_eq!(c.jwt_org_claim, "org_id");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.event_retention.as_secs(), 7 * 86_400);
        assert_eq!(c.connections, crate::server::ConnectionLimits::default());
    }

    #[test]
    fn connection_limits_from_every_layer() {
        let file: Layer = toml::from_str("header_read_timeout = 3\nidle_timeout = 4\nmax_connections = 5\nshutdown_grace = 6").unwrap();
        let c = Config::resolve(Some(file.clone()), Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.connections.header_read_timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.connections.idle_timeout, std::time::Duration::from_secs(4));
        assert_eq!(c.connections.max_connections, 5);
        assert_eq!(c.connections.shutdown_grace, std::time::Duration::from_secs(6));
        let env = Layer::from_env(|k| (k == "WAGATE_MAX_CONNECTIONS").then(|| "7".to_owned())).unwrap();
        assert_eq!(Config::resolve(Some(file), Layer::default(), env).unwrap().connections.max_connections, 7);
        for var in ["WAGATE_HEADER_READ_TIMEOUT", "WAGATE_IDLE_TIMEOUT", "WAGATE_MAX_CONNECTIONS", "WAGATE_SHUTDOWN_GRACE"] {
            assert!(Layer::from_env(|k| (k == var).then(|| "0".to_owned())).is_err(), "{var}");
            assert!(Layer::from_env(|k| (k == var).then(|| "x".to_owned())).is_err(), "{var}");
        }
    }

    #[test]
    fn environment_wins_over_flags_over_file() {
        let file: Layer = toml::from_str("listen = \"0.0.0.0:1\"\ndata_dir = \"/f\"\nlog = \"debug\"").unwrap();
        let flags = Layer { listen: Some("0.0.0.0:2".into()), data_dir: Some("/flag".into()), ..Layer::default() };
        let env = Layer::from_env(|k| (k == "WAGATE_LISTEN").then(|| "0.0.0.0:3".to_owned())).unwrap();
        let c = Config::resolve(Some(file), flags, env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:3");
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.log, "debug");
        assert_eq!(c.database_url.expose(), "sqlite:///flag/wagate.db");
    }

    #[test]
    fn unknown_file_keys_and_bad_env_values_are_errors() {
        assert!(toml::from_str::<Layer>("listne = \"x\"").is_err());
        assert!(Layer::from_env(|k| (k == "WAGATE_LOG_FORMAT").then(|| "xml".to_owned())).is_err());
        assert!(Layer::from_env(|k| (k == "WAGATE_WA_MAX_CONNECTS").then(|| "0".to_owned())).is_err());
        for bad in ["0s", "7 days", "-1d", "d"] {
            let env = Layer::from_env(|k| (k == "WAGATE_EVENT_RETENTION").then(|| bad.to_owned())).unwrap();
            assert!(Config::resolve(None, Layer::default(), env).is_err(), "{bad}");
        }
        let env = Layer::from_env(|k| (k == "WAGATE_EVENT_RETENTION").then(|| "12h".to_owned())).unwrap();
        assert_eq!(Config::resolve(None, Layer::default(), env).unwrap().event_retention.as_secs(), 12 * 3600);
        let bad_version = Layer { wa_version: Some("2.3000".into()), ..Layer::default() };
        assert!(Config::resolve(None, bad_version, Layer::default()).is_err());
        assert_eq!(parse_wa_version("2.3000.1027934701"), Ok((2, 3000, 1_027_934_701)));
    }

    #[test]
    fn webhook_settings_from_every_layer() {
        let c = Config::resolve(None, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.webhooks, wagate_runtime::WebhookConfig::default());
        assert_eq!(c.webhooks.timeout.as_secs(), 15);
        assert_eq!(c.webhooks.retry_schedule, parse_retry_schedule(wagate_runtime::WebhookConfig::DEFAULT_RETRY_SCHEDULE).unwrap());
        assert!(!c.webhooks.allow_private);
        let file: Layer = toml::from_str("webhook_timeout = \"2s\"\nwebhook_retry_schedule = \"50ms, 1s\"\nwebhook_workers = 3\nwebhook_concurrency = 2").unwrap();
        let env = Layer::from_env(|k| (k == "WAGATE_WEBHOOK_ALLOW_PRIVATE").then(|| "true".to_owned())).unwrap();
        let c = Config::resolve(Some(file), Layer::default(), env).unwrap();
        assert_eq!(c.webhooks.timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.webhooks.retry_schedule, vec![std::time::Duration::from_millis(50), std::time::Duration::from_secs(1)]);
        assert_eq!((c.webhooks.workers, c.webhooks.per_webhook_concurrency, c.webhooks.allow_private), (3, 2, true));
        assert!(Layer::from_env(|k| (k == "WAGATE_WEBHOOK_ALLOW_PRIVATE").then(|| "maybe".to_owned())).is_err());
        assert!(Layer::from_env(|k| (k == "WAGATE_WEBHOOK_WORKERS").then(|| "0".to_owned())).is_err());
        assert!(Layer::from_env(|k| (k == "WAGATE_WEBHOOK_CONCURRENCY").then(|| "0".to_owned())).is_err());
        for bad in [("WAGATE_WEBHOOK_TIMEOUT", "soon"), ("WAGATE_WEBHOOK_RETRY_SCHEDULE", "5s,,5m"), ("WAGATE_WEBHOOK_RETRY_SCHEDULE", "5x")] {
            let env = Layer::from_env(|k| (k == bad.0).then(|| bad.1.to_owned())).unwrap();
            assert!(Config::resolve(None, Layer::default(), env).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = Config::resolve(
            None,
            Layer { database_url: Some(Secret::new("postgres://app:hunter2@db:5432/wagate?sslmode=require&password=x")), ..Layer::default() },
            Layer::default(),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("password=x"), "{dbg}");
        assert!(dbg.contains("postgres://app:***@db:5432/wagate"), "{dbg}");
    }
}
