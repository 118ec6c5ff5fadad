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
        }
    }

    /// The `WAGATE_*` variables, read through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
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
}

impl Config {
    /// Defaults < file < flags < environment.
    pub fn resolve(file: Option<Layer>, flags: Layer, env: Layer) -> Config {
        let l = Layer::default().merge(file.unwrap_or_default()).merge(flags).merge(env);
        let data_dir = l.data_dir.unwrap_or_else(|| PathBuf::from("./wagate-data"));
        let database_url = l
            .database_url
            .unwrap_or_else(|| Secret::new(format!("sqlite://{}", data_dir.join("wagate.db").display())));
        Config {
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
        }
    }

    /// Reads the file (if given) and the process environment.
    pub fn load(config_file: Option<&Path>, flags: Layer) -> Result<Config, String> {
        let file = config_file.map(Layer::from_toml_file).transpose()?;
        let env = Layer::from_env(|k| std::env::var(k).ok())?;
        Ok(Config::resolve(file, flags, env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::resolve(None, Layer::default(), Layer::default());
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./wagate-data"));
        assert_eq!(c.database_url.expose(), "sqlite://./wagate-data/wagate.db");
        assert_eq!(c.jwt_org_claim, "org_id");
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn environment_wins_over_flags_over_file() {
        let file: Layer = toml::from_str("listen = \"0.0.0.0:1\"\ndata_dir = \"/f\"\nlog = \"debug\"").unwrap();
        let flags = Layer { listen: Some("0.0.0.0:2".into()), data_dir: Some("/flag".into()), ..Layer::default() };
        let env = Layer::from_env(|k| (k == "WAGATE_LISTEN").then(|| "0.0.0.0:3".to_owned())).unwrap();
        let c = Config::resolve(Some(file), flags, env);
        assert_eq!(c.listen, "0.0.0.0:3");
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.log, "debug");
        assert_eq!(c.database_url.expose(), "sqlite:///flag/wagate.db");
    }

    #[test]
    fn unknown_file_keys_and_bad_env_values_are_errors() {
        assert!(toml::from_str::<Layer>("listne = \"x\"").is_err());
        assert!(Layer::from_env(|k| (k == "WAGATE_LOG_FORMAT").then(|| "xml".to_owned())).is_err());
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = Config::resolve(
            None,
            Layer { database_url: Some(Secret::new("postgres://app:hunter2@db:5432/wagate?sslmode=require&password=x")), ..Layer::default() },
            Layer::default(),
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("password=x"), "{dbg}");
        assert!(dbg.contains("postgres://app:***@db:5432/wagate"), "{dbg}");
    }
}
