//! `wa-emulator`: a local WhatsApp server and phone, for trying wagate without WhatsApp.
//!
//! Only a wagate built for tests (with `danger-skip-cert-chain-verify`) accepts its
//! certificate; the release binary refuses it, by design.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use wa_emulator::{Emulator, EmulatorConfig, control};

#[derive(Parser)]
#[command(version, about = "A local emulator of the WhatsApp Web server and of the primary phone")]
struct Args {
    /// WebSocket address clients connect to (`ws://ADDR/ws/chat`).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// HTTP control surface (scan QR, enter code, unlink, drop, refuse logins, …).
    #[arg(long, default_value = "127.0.0.1:7071")]
    control: SocketAddr,
    /// The blob host for media uploads and downloads (plain HTTP); by default the IP of
    /// `--listen` and a free port.
    #[arg(long)]
    media: Option<SocketAddr>,
    /// Keep the server key and the accounts here across restarts.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wa_emulator=debug")),
        )
        .init();
    let args = Args::parse();
    let config = EmulatorConfig { bind: args.listen, media_bind: args.media, data_dir: args.data_dir, ..Default::default() };
    let emulator = Arc::new(Emulator::start(config).await?);
    let listener = tokio::net::TcpListener::bind(args.control).await?;
    tracing::info!(ws = %emulator.ws_url(), media = %emulator.media_host(), control = %listener.local_addr()?, "ready");
    axum::serve(listener, control::router(emulator))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
