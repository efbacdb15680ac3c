//! The `hookgate` command: CLI parsing, logging, exit codes (0 ok, 1 invalid input or
//! config, 2 runtime failure). Everything else lives in the library.

use clap::{Parser, Subcommand};
use hookgate::app::Gateway;
use hookgate::config;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Webhook relay gateway: TLS, routing, signature verification, forwarding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Config file (default: $HOOKGATE_CONFIG, else ./routes.yaml).
        #[arg(short, long, env = "HOOKGATE_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Validate the config without serving: every problem as FILE:LINE:COL: message.
    Check {
        #[arg(short, long, env = "HOOKGATE_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Print the headers a provider would send for a body, for testing with curl.
    Sign {
        /// Provider: github, stripe, slack, shopify, twilio, gitlab, standard, paddle,
        /// linear, zoom, meta, square, bearer, basic (user:password as the secret).
        #[arg(long)]
        provider: String,
        #[arg(long)]
        secret: String,
        /// Body file (default: stdin).
        #[arg(long)]
        body: Option<PathBuf>,
        /// The public URL the provider calls (URL-signed providers).
        #[arg(long)]
        url: Option<String>,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HOOKGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            init_logging();
            run(config)
        }
        Command::Sign {
            provider,
            secret,
            body,
            url,
        } => sign(&provider, &secret, body, url),
    }
}

fn print_warnings(path: &std::path::Path, warnings: &[config::Diagnostic]) {
    for w in warnings {
        eprintln!("warning: {}", config::format_diag(path, w));
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            print_warnings(path, &loaded.warnings);
            let c = &loaded.config;
            let targets: usize = c.routes.iter().map(|r| r.targets.len()).sum();
            println!(
                "{}: ok — {} route(s), {} target(s), listening on {} ({})",
                path.display(),
                c.routes.len(),
                targets,
                c.server
                    .listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if c.server.tls.is_some() {
                    "TLS"
                } else {
                    "plain HTTP"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let loaded = match config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::from(1);
        }
    };
    print_warnings(&path, &loaded.warnings);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let gw = match Gateway::start(loaded.config).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = wait_for_signal(&gw.reloader).await {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(2);
        }
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        gw.drain().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Returns on SIGTERM or SIGINT; SIGHUP reloads the config (SPEC §5).
async fn wait_for_signal(reloader: &hookgate::config::reload::Reloader) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                let _ = reloader.reload("SIGHUP").await;
            }
        }
    }
}

fn sign(provider: &str, secret: &str, body: Option<PathBuf>, url: Option<String>) -> ExitCode {
    let bytes = match body {
        Some(p) => std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map(|_| b)
                .map_err(|e| format!("cannot read stdin: {e}"))
        }
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let Some(p) = hookgate::config::Provider::parse(provider) else {
        let names: Vec<&str> = hookgate::config::Provider::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        eprintln!(
            "sign: unknown provider `{provider}` (one of: {})",
            names.join(", ")
        );
        return ExitCode::from(1);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match hookgate::verify::sender::headers(p, secret, &bytes, url.as_deref(), now) {
        Ok((headers, note)) => {
            for (n, v) in headers {
                println!("{n}: {v}");
            }
            if let Some(n) = note {
                eprintln!("note: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sign: {e}");
            ExitCode::from(1)
        }
    }
}
