//! `boundary-coderd-sink`: stands in for coderd's side of `ReportBoundaryLogs`, printing one
//! `boundary_request` line per record on stdout exactly as coderd logs it, for Loki/promtail
//! at sites without Coder and for end-to-end tests.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use boundary_integration::coder::coderd::{self, Format};
use clap::Parser;
use tokio::net::TcpListener;

/// Serve DRPC ReportBoundaryLogs and print coderd-style boundary_request lines.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TCP address to listen on; port 0 picks one (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Print slog's JSON shape instead of the human format.
    #[arg(long)]
    json: bool,
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
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The one machine-readable line on stderr: tests and scripts read the port from it.
    eprintln!("boundary-coderd-sink listening on {addr}");
    let format = if args.json {
        Format::Json
    } else {
        Format::Human
    };
    tokio::select! {
        r = coderd::serve(listener, format) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
