//! `boundary-agent-log-proxy`: stands in for the Coder workspace agent's boundary log proxy.
//! Listens on the audit Unix socket and forwards every batch to a coderd DRPC address.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use boundary_integration::coder::logproxy::{self, Config, Metrics};
use clap::Parser;

/// Accept boundary audit frames on a Unix socket and forward them to coderd over DRPC.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Unix socket to listen on (the agent's CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH).
    #[arg(long, env = "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH")]
    socket: PathBuf,
    /// coderd DRPC address (host:port, plain DRPC over TCP).
    #[arg(long)]
    coderd: String,
    /// Behave like an agent from before March 2026: close the connection on a tag-2 frame.
    #[arg(long)]
    v1_only: bool,
    /// Frames buffered for coderd before new ones are dropped.
    #[arg(long, default_value_t = 100)]
    buffer: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let metrics = Arc::new(Metrics::default());
    let cfg = Config {
        socket: args.socket.clone(),
        coderd: args.coderd,
        v1_only: args.v1_only,
        buffer: args.buffer,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let res = tokio::select! {
        r = logproxy::run(cfg, metrics.clone()) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    tracing::info!("{}", metrics.summary());
    let _ = std::fs::remove_file(&args.socket);
    res
}
