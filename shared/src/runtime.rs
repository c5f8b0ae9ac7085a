//! Process plumbing both daemons share (behind the `runtime` feature, so the
//! pure domain code stays free of tokio): logging set-up and the shutdown
//! signal.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global log subscriber: human-readable lines by default, one
/// JSON object per line when `json` (for log shippers). The filter comes from
/// `RUST_LOG`, else `default_filter`. Errors (instead of panicking) when a
/// subscriber is already installed, which tests do more than once.
pub fn init_logging(json: bool, default_filter: &str) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to stderr: stdout is for what a command prints as its
    // answer (`controller issue-agent-credential` prints one credential).
    if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    }
}

/// Resolves when the process receives SIGTERM (what Docker and systemd send)
/// or SIGINT (Ctrl-C). A handler that cannot be installed is never awaited,
/// so the other signal still works.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
