//! Building and running the gateway: the piece `main` and the integration tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use wagate_api::{AppState, HttpLimits, Metrics};
use wagate_auth::Authenticator;
use wagate_auth::jwt::{JwtConfig, JwtVerifier};
use wagate_core::OrgId;
use wagate_runtime::supervisor::{Supervisor, SupervisorConfig};
use wagate_runtime::{ApiKeyService, EventConfig, EventHub, MessageService, WebhookService};
use wagate_store::prelude::*;

use crate::config::Config;

/// The organization created on the first start.
pub const BOOTSTRAP_ORG: &str = "default";

/// A gateway bound to its port, ready to serve.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    bootstrap_key: Option<String>,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Held until `run_until` returns: no second gateway on the same data store meanwhile.
    owner: wagate_store::owner::OwnerLock,
    connections: crate::server::ConnectionLimits,
}

/// Opens the configured store (creating the data directory for the SQLite default).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url.expose();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    }
    wagate_store::connect(url).await.map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        // Before the database is touched (migrations, bootstrap): a second gateway stops here.
        let owner = wagate_store::owner::acquire_owner_lock(&config.data_dir, config.database_url.expose())
            .await
            .map_err(anyhow::Error::msg)?;
        let store = open_store(config).await?;
        tracing::info!(backend = store.backend(), "database ready");
        let bootstrap_key = bootstrap(Arc::clone(&store)).await?;

        let mut background = Vec::new();
        let jwt = match &config.jwks_url {
            Some(url) => {
                let verifier = JwtVerifier::new(JwtConfig {
                    issuer: config.jwt_issuer.clone(),
                    audience: config.jwt_audience.clone(),
                    org_claim: config.jwt_org_claim.clone(),
                    role_claim: config.jwt_role_claim.clone(),
                    ..JwtConfig::new(url.clone())
                })
                .map_err(|e| anyhow::anyhow!("invalid JWT configuration: {e}"))?;
                let verifier = Arc::new(verifier);
                background.push(verifier.spawn_refresh());
                Some(verifier)
            }
            None => {
                tracing::info!("no WAGATE_JWKS_URL: login JWTs are off, API keys only");
                None
            }
        };
        let auth = Arc::new(Authenticator::new(Arc::clone(&store) as _, jwt));
        let engines = crate::engines::build(config);
        let supervisor = Supervisor::new(Arc::clone(&store), engines, SupervisorConfig::default());
        let metrics = Arc::new(Metrics::default());
        let events = EventHub::start(Arc::clone(&store), Arc::clone(&metrics), EventConfig::with_retention(config.event_retention))
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the event log: {e}"))?;
        let webhooks = Arc::new(WebhookService::new(Arc::clone(&store), Arc::clone(&metrics), config.webhooks.clone()));
        background.extend(webhooks.start().await.map_err(|e| anyhow::anyhow!("cannot start webhook delivery: {e}"))?);
        // Before any session starts: the engines deliver their traffic to it.
        let messages = MessageService::new(Arc::clone(&store), Arc::clone(&supervisor), config.messaging.clone());
        messages.start().await.map_err(|e| anyhow::anyhow!("cannot read the send queue: {e}"))?;
        let state = AppState::new(store, auth, supervisor, metrics, events, webhooks, messages);

        let listener = TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics_listener = match &config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?),
            None => None,
        };
        Ok(Self { listener, metrics_listener, state, bootstrap_key, background, owner, connections: config.connections })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The bootstrap API key, when this start created it (printed once by `serve`).
    pub fn bootstrap_key(&self) -> Option<&str> {
        self.bootstrap_key.as_deref()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops every session cleanly (they resume on the
    /// next start) and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, metrics_listener, state, background, owner, connections, .. } = self;
        let sessions = Arc::clone(&state.sessions);
        let resume = tokio::spawn({
            let sessions = Arc::clone(&sessions);
            async move {
                match sessions.resume_all().await {
                    Ok(report) if report.total > 0 => {
                        tracing::info!(total = report.total, started = report.started, failed = report.failed, "sessions resumed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "could not resume sessions"),
                }
            }
        });
        let metrics_server = metrics_listener.map(|l| {
            let router = axum::Router::new().route("/metrics", axum::routing::get(wagate_api::ops::metrics)).with_state(state.clone());
            tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics listening");
            // Runs until aborted below, once the main listener has stopped.
            tokio::spawn(crate::server::serve(l, router, connections, std::future::pending()))
        });
        let events = Arc::clone(&state.events);
        let webhooks = Arc::clone(&state.webhooks);
        let messages = Arc::clone(&state.messages);
        let limits = HttpLimits::with_media(messages.media_max_bytes());
        let router = wagate_api::router(state, limits);
        tracing::info!(addr = %listener.local_addr()?, "wagate listening");
        // Open event streams never end by themselves: end them when shutdown begins, so that
        // the graceful shutdown does not wait for them.
        let shutdown = async move {
            shutdown.await;
            events.close();
        };
        crate::server::serve(listener, router, connections, shutdown).await;
        tracing::info!("shutting down: stopping sessions");
        resume.abort();
        // Deliveries in flight are finished by the next start (their claims expire).
        webhooks.close();
        // Messages in flight are sent again by the next start, under the same WhatsApp ids.
        messages.close();
        sessions.shutdown().await;
        for task in background.into_iter().chain(metrics_server) {
            task.abort();
        }
        tracing::info!("stopped");
        drop(owner);
        Ok(())
    }
}

/// On an empty database: creates the `default` organization and one key with every capability.
async fn bootstrap(store: Arc<dyn Store>) -> anyhow::Result<Option<String>> {
    let org = OrgId::parse(BOOTSTRAP_ORG).expect("a valid org id");
    let created = ApiKeyService::new(store).bootstrap(org).await.map_err(|e| anyhow::anyhow!("bootstrap failed: {e}"))?;
    Ok(created.map(|key| {
        tracing::info!(key_id = %key.record.id, org = BOOTSTRAP_ORG, "empty database: created the bootstrap API key");
        key.secret
    }))
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed by this call, not on first poll,
/// so a signal that arrives once the gateway says it is listening always shuts it down cleanly.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
