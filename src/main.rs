//! The `hookgate` command: CLI parsing, logging, exit codes (0 ok, 1 invalid input or
//! config, 2 runtime failure). Everything else lives in the library.

#[global_allocator]
static GLOBAL: hookgate::rules::budget::Budgeted<mimalloc::MiMalloc> =
    hookgate::rules::budget::Budgeted(mimalloc::MiMalloc);

use clap::{Args, Parser, Subcommand};
use hookgate::admin::cli::{self, AdminClient, CliError};
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
    /// With --sample, also run a route's filters and transforms on a sample payload.
    Check {
        #[arg(short, long, env = "HOOKGATE_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
        /// A sample body: show, per target, whether it would be delivered and exactly what.
        #[arg(long)]
        sample: Option<PathBuf>,
        /// The route to run the sample on (needed when there are several).
        #[arg(long)]
        route: Option<String>,
        /// A request header of the sample, `Name: value`; repeat for more.
        #[arg(long = "header")]
        headers: Vec<String>,
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
    /// Routes and targets at a glance: queues, dead letters, circuits, pauses.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Recent events and one event's attempts.
    Events {
        #[command(subcommand)]
        cmd: EventsCmd,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Dead letters: list and replay.
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        cmd: DeadCmd,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deliver one event again (all its targets, or one).
    Replay {
        event_id: String,
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hold or release a target's deliveries (they queue meanwhile).
    Targets {
        #[command(subcommand)]
        cmd: TargetsCmd,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Apply the PostgreSQL schema migrations and exit (for teams that apply schema
    /// separately; `run` applies them too).
    Migrate {
        #[arg(short, long, env = "HOOKGATE_CONFIG", default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Internal: a jq worker process of a running gateway (it serves on its standard input).
    #[command(hide = true)]
    JqWorker {
        /// Heap budget in bytes.
        #[arg(long)]
        memory: usize,
        /// The gateway's process id: the worker exits when its parent is another.
        #[arg(long)]
        parent: u32,
    },
    /// Reload the running gateway's config now.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
struct AdminArgs {
    /// Admin listener URL.
    #[arg(
        long,
        env = "HOOKGATE_ADMIN",
        default_value = "http://127.0.0.1:9900",
        global = true
    )]
    admin: String,
    /// Admin bearer token.
    #[arg(
        long,
        env = "HOOKGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum EventsCmd {
    /// Newest first.
    List {
        #[arg(long)]
        route: Option<String>,
        /// route/target or a target name.
        #[arg(long)]
        target: Option<String>,
        /// pending, delivered, dead or filtered.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One event: headers, body, deliveries, every attempt.
    Show { id: String },
}

#[derive(Subcommand)]
enum DeadCmd {
    List {
        /// route/target
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Replay some dead letters (--ids) or all of a target's (--all).
    Replay {
        /// route/target
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        all: bool,
        /// Delivery ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
    },
}

#[derive(Subcommand)]
enum TargetsCmd {
    /// route/target
    Pause { target: String },
    /// route/target
    Resume { target: String },
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
        Command::Check {
            config,
            sample: None,
            ..
        } => check(&config),
        Command::Check {
            config,
            sample: Some(sample),
            route,
            headers,
        } => check_sample(&config, &sample, route.as_deref(), &headers),
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
        Command::Migrate { config } => migrate(&config),
        Command::JqWorker { memory, parent } => {
            match hookgate::rules::worker::serve(memory, parent) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
        other => operate(other),
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// Loads the config, printing every `FILE:LINE:COL: message` when it is invalid.
fn load_or_report(path: &std::path::Path) -> Option<config::Loaded> {
    match config::load(path) {
        Ok(l) => Some(l),
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            None
        }
    }
}

/// A single-threaded runtime for the short-lived commands.
fn small_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            None
        }
    }
}

/// The operator commands: thin clients of the admin API.
fn operate(cmd: Command) -> ExitCode {
    let Some(rt) = small_runtime() else {
        return ExitCode::from(2);
    };
    match rt.block_on(run_operator(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_operator(cmd: Command) -> Result<(), CliError> {
    use http::Method;
    let mut out = std::io::stdout().lock();
    let show = |json: bool,
                v: &serde_json::Value,
                out: &mut std::io::StdoutLock,
                f: fn(&serde_json::Value, &mut std::io::StdoutLock)| {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            f(v, out);
        }
    };
    let split = |t: &str| -> Result<(String, String), CliError> {
        t.split_once('/')
            .map(|(r, t)| (r.to_owned(), t.to_owned()))
            .ok_or_else(|| CliError::Refused(format!("target `{t}` must be written route/target")))
    };
    match cmd {
        Command::Status { admin } => {
            let c = AdminClient::new(&admin.admin, admin.token);
            let v = c.call(Method::GET, "/api/v1/routes", None).await?;
            show(admin.json, &v, &mut out, |v, o| cli::print_status(v, o));
        }
        Command::Events { cmd, admin } => {
            let c = AdminClient::new(&admin.admin, admin.token);
            match cmd {
                EventsCmd::List {
                    route,
                    target,
                    status,
                    limit,
                    cursor,
                } => {
                    let q = query(&[
                        ("route", route),
                        ("target", target),
                        ("status", status),
                        ("limit", Some(limit.to_string())),
                        ("cursor", cursor),
                    ]);
                    let v = c
                        .call(Method::GET, &format!("/api/v1/events?{q}"), None)
                        .await?;
                    show(admin.json, &v, &mut out, |v, o| cli::print_events(v, o));
                }
                EventsCmd::Show { id } => {
                    let v = c
                        .call(Method::GET, &format!("/api/v1/events/{id}"), None)
                        .await?;
                    show(admin.json, &v, &mut out, |v, o| cli::print_event(v, o));
                }
            }
        }
        Command::DeadLetters { cmd, admin } => {
            let c = AdminClient::new(&admin.admin, admin.token);
            match cmd {
                DeadCmd::List { target, limit } => {
                    let q = query(&[("target", target), ("limit", Some(limit.to_string()))]);
                    let v = c
                        .call(Method::GET, &format!("/api/v1/dead-letters?{q}"), None)
                        .await?;
                    show(admin.json, &v, &mut out, |v, o| cli::print_dead(v, o));
                }
                DeadCmd::Replay { target, all, ids } => {
                    let n = match (all, ids.is_empty(), target) {
                        (true, true, Some(t)) => {
                            split(&t)?;
                            cli::replay_all(&c, &t, 100).await?
                        }
                        (false, false, _) => {
                            let v = c
                                .call(
                                    Method::POST,
                                    "/api/v1/dead-letters/replay",
                                    Some(serde_json::json!({ "ids": ids })),
                                )
                                .await?;
                            v["replayed"].as_u64().unwrap_or(0) as usize
                        }
                        _ => {
                            return Err(CliError::Refused(
                                "give --ids 1,2,3, or --all with --target route/target".into(),
                            ))
                        }
                    };
                    println!("replayed {n} dead letter(s)");
                }
            }
        }
        Command::Replay {
            event_id,
            target,
            admin,
        } => {
            let c = AdminClient::new(&admin.admin, admin.token);
            let q = query(&[("target", target)]);
            let v = c
                .call(
                    Method::POST,
                    &format!("/api/v1/events/{event_id}/replay?{q}"),
                    None,
                )
                .await?;
            if admin.json {
                println!("{v}");
            } else {
                println!("replaying {} deliver(y/ies) of {event_id}", v["replayed"]);
            }
        }
        Command::Targets { cmd, admin } => {
            let c = AdminClient::new(&admin.admin, admin.token);
            let (t, action) = match cmd {
                TargetsCmd::Pause { target } => (target, "pause"),
                TargetsCmd::Resume { target } => (target, "resume"),
            };
            let (route, target) = split(&t)?;
            let v = c
                .call(
                    Method::POST,
                    &format!("/api/v1/targets/{route}/{target}/{action}"),
                    None,
                )
                .await?;
            if admin.json {
                println!("{v}");
            } else {
                println!(
                    "{route}/{target}: {}",
                    if v["paused"] == true {
                        "paused"
                    } else {
                        "resumed"
                    }
                );
            }
        }
        Command::Reload { admin } => {
            let c = AdminClient::new(&admin.admin, admin.token);
            let v = c.call(Method::POST, "/api/v1/reload", None).await?;
            if admin.json {
                println!("{v}");
            } else {
                println!(
                    "{} (version {})",
                    v["result"].as_str().unwrap_or("?"),
                    v["version"].as_str().unwrap_or("?")
                );
            }
        }
        Command::Run { .. }
        | Command::Check { .. }
        | Command::Sign { .. }
        | Command::Migrate { .. }
        | Command::JqWorker { .. } => {}
    }
    Ok(())
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

fn check_sample(
    path: &std::path::Path,
    sample: &std::path::Path,
    route: Option<&str>,
    headers: &[String],
) -> ExitCode {
    let Some(loaded) = load_or_report(path) else {
        return ExitCode::from(1);
    };
    let body = match std::fs::read(sample) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => {
            eprintln!("cannot read {}: {e}", sample.display());
            return ExitCode::from(1);
        }
    };
    let mut pairs = Vec::new();
    for h in headers {
        match h.split_once(':') {
            Some((n, v)) => pairs.push((n.to_owned(), v.to_owned())),
            None => {
                eprintln!("--header must look like `Name: value`, got `{h}`");
                return ExitCode::from(1);
            }
        }
    }
    let route = match hookgate::rules::sample::route(&loaded.config, route) {
        Ok(r) => r.clone(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let Some(rt) = small_runtime() else {
        return ExitCode::from(2);
    };
    // The limits the gateway would run these programs with.
    let limits = hookgate::rules::pool::Limits::for_max_body(loaded.config.server.max_body);
    let report = rt.block_on(async {
        let jq = hookgate::rules::pool::JqPool::new(1, limits);
        hookgate::rules::sample::run(&route, body, &pairs, &jq).await
    });
    match report {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn migrate(path: &std::path::Path) -> ExitCode {
    let Some(loaded) = load_or_report(path) else {
        return ExitCode::from(1);
    };
    let config::StorageBackend::Postgres { url, .. } = &loaded.config.storage.backend else {
        eprintln!("storage.backend is not postgres: nothing to migrate");
        return ExitCode::from(1);
    };
    let Some(rt) = small_runtime() else {
        return ExitCode::from(2);
    };
    match rt.block_on(hookgate::store::postgres::migrate(url.expose(), None)) {
        Ok(v) if v.is_empty() => {
            println!("schema is up to date");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!("applied migrations {v:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let Some(loaded) = load_or_report(&path) else {
        return ExitCode::from(1);
    };
    print_warnings(&path, &loaded.warnings);
    // On one CPU, one thread runs everything: a current-thread runtime spares the
    // multi-thread scheduler's bookkeeping (docs/performance.md).
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        if one_cpu {
            tracing::info!("one CPU: running on a single-thread runtime");
        }
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

/// Returns on SIGTERM or SIGINT; SIGHUP reloads the config.
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
