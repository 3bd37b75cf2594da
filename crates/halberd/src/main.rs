//! The `halberd` command: the gateway, key management, configuration checks and
//! the mock upstream. Output meant for people goes to stdout; logs go to stderr.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `println!` for the CLI's reports: when standard output is closed
/// (`halberd eval ... | head`) the process ends quietly with status 141, as a
/// command killed by SIGPIPE would (Rust ignores SIGPIPE, and `println!`
/// panics on the failed write); any other write error ends it with a message.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(&e)
        }
    }};
}

/// Ends the process after a failed write to standard output (see `outln!`).
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1)
}

mod eval_generated;
mod eval_sensitive;
mod injection_cli;
mod scan;
use serde_json::json;

use halberd_gateway::config::{Config, ConfigFile};
use halberd_gateway::duration::parse_duration;
use halberd_store::{KeyRecord, KeySpec, KeyUpdate, Keyring, now_unix};

/// mimalloc rather than the system allocator. A request's buffers are often
/// allocated on one Tokio worker and freed on another; glibc's malloc then
/// takes its arena locks across threads, and under load a profile showed
/// about 14 % of the gateway's CPU in malloc and free, part of it futex
/// waits on those locks (docs/performance.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "halberd",
    version,
    about = "A security gateway for AI APIs",
    after_help = "Examples:\n  halberd serve\n  halberd keys create --name app --models gpt-4o --rpm 600 --json\n  halberd keys rotate KEY_ID --grace 24h\n  halberd users limits ann --budget-usd-daily 5\n  halberd config check halberd.toml\n  echo '{\"text\": \"mail ann@example.com\"}' | halberd scan\n\nEnvironment: HALBERD_CONFIG (configuration file), HALBERD_LOG (log filter, e.g. info or halberd=debug), HALBERD_LOG_FORMAT=json, HALBERD_PEPPER (key-hashing pepper, hex), HALBERD_STORE_URL (Postgres URL), HALBERD_REDIS_URL (Redis URL), HALBERD_ADMIN_TOKEN (admin API token; the variable is configurable), and the provider and hash key variables the configuration names."
)]
struct Cli {
    /// Configuration file (TOML). Default: $HALBERD_CONFIG, else the embedded
    /// default (SQLite ./halberd.db, the built-in mock provider).
    #[arg(long, global = true, env = "HALBERD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Client API address (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Admin API address (overrides server.admin_listen).
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Manage Halberd API keys in the configured store.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Limits and usage of users (a user owns several keys).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Usage and cost from the usage records, grouped by key, user, model or
    /// UTC day: `halberd usage --by model --since 7d`.
    Usage {
        /// Start of the window: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, Unix
        /// seconds, or a duration ago (24h, 7d). Default: 30 days ago.
        #[arg(long)]
        since: Option<String>,
        /// End of the window (exclusive), in the same forms. Default: now.
        #[arg(long)]
        until: Option<String>,
        /// key, user, model or day.
        #[arg(long, default_value = "key")]
        by: String,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: `halberd completions bash >
    /// /etc/bash_completion.d/halberd`, or zsh, fish, elvish, powershell.
    Completions { shell: clap_complete::Shell },
    /// Inspect JSON Lines offline: one result per input line (`text` field).
    Scan {
        /// The policy whose input actions apply (default: `default`).
        #[arg(long)]
        policy: Option<String>,
        /// Input file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Evaluate the detectors on labelled data sets.
    Eval {
        /// Score the PII and secret detectors (per type precision, recall, F1).
        #[arg(long)]
        sensitive: bool,
        /// Score the prompt-injection detector on a JSON Lines file (`text`,
        /// `label` attack|benign, optional `source` and `provenance`).
        #[arg(long, conflicts_with = "sensitive")]
        dataset: Option<PathBuf>,
        /// Score the sensitive-data detectors and redaction (whole and
        /// streamed) on a generated set (scripts/pii_generate.py).
        #[arg(long, conflicts_with_all = ["sensitive", "dataset"])]
        generated: Option<PathBuf>,
        /// With --generated: fail when a type's recall is below this.
        #[arg(long, requires = "generated")]
        min_recall: Option<f64>,
        /// With --generated: fail when a type's precision is below this.
        #[arg(long, requires = "generated")]
        min_precision: Option<f64>,
        /// With --generated: a type's own minimum recall, `TYPE=R`
        /// (repeatable), in place of --min-recall.
        #[arg(long, requires = "generated")]
        min_recall_for: Vec<String>,
        /// With --dataset: score with this weights file instead of the model
        /// compiled into the binary.
        #[arg(long, requires = "dataset")]
        model: Option<PathBuf>,
        /// With --dataset: list this many of the most confident mistakes.
        #[arg(long, default_value_t = 0)]
        show_errors: usize,
        /// With --dataset: also write every item's score to this file (JSON
        /// Lines: source, label, trust, score, detected, blocked), for
        /// pooled figures across runs (scripts/injection_heldout.py).
        #[arg(long, requires = "dataset")]
        scores: Option<PathBuf>,
        /// With --sensitive: the directory holding the public data sets (see
        /// each data set's SOURCE.md; they are not part of this repository).
        #[arg(long, required_if_eq("sensitive", "true"))]
        data: Option<PathBuf>,
        /// Fail when any structured PII type (with --sensitive), or the
        /// overall detection (with --dataset), scores an F1 below this.
        #[arg(long)]
        fail_under: Option<f64>,
    },
    /// Train the prompt-injection classifier (see scripts/injection_dataset.py).
    TrainInjection {
        /// Training file (JSON Lines, as for `eval --dataset`).
        #[arg(long, default_value = "target/injection-data/train.jsonl")]
        train: PathBuf,
        /// Where to write the weights.
        #[arg(long, default_value = "crates/halberd-guard/models/injection.bin")]
        out: PathBuf,
        /// Also print thresholds chosen by k-fold cross-validation on the
        /// training file (0: skip).
        #[arg(long, default_value_t = 0)]
        folds: usize,
        /// Training epochs (default: what the shipped model used).
        #[arg(long)]
        epochs: Option<usize>,
        /// Initial learning rate.
        #[arg(long)]
        learning_rate: Option<f32>,
        /// L2 regularisation.
        #[arg(long)]
        l2: Option<f32>,
    },
    /// Run the deterministic mock OpenAI + Anthropic upstream.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[command(flatten)]
        attrs: KeyAttrs,
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a key's attributes.
    Update {
        /// The key's id (the part after `hbd_`, as `keys list` shows it).
        id: String,
        #[command(flatten)]
        attrs: KeyAttrs,
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Issue a successor; the old key keeps working for the grace period.
    Rotate {
        /// The key's id (as `keys list` shows it).
        id: String,
        /// How long the old key stays valid.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (as `keys list` shows it).
        id: String,
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct KeyAttrs {
    /// A name for people (required for create).
    #[arg(long)]
    name: Option<String>,
    /// The user who owns the key.
    #[arg(long)]
    user: Option<String>,
    /// Allowed models, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Allowed endpoints, comma-separated: chat_completions, responses,
    /// embeddings, messages, models (default: all).
    #[arg(long, value_delimiter = ',')]
    endpoints: Option<Vec<String>>,
    /// Lifetime from now, such as 30d or 12h (default: no expiry).
    #[arg(long)]
    expires: Option<String>,
    /// Policy name.
    #[arg(long)]
    policy: Option<String>,
    #[command(flatten)]
    limits: LimitFlags,
    /// Free-form JSON object.
    #[arg(long)]
    metadata: Option<String>,
}

/// Limits of a key or a user; 0 removes a limit.
#[derive(Args, Default)]
struct LimitFlags {
    /// Requests per second.
    #[arg(long)]
    rps: Option<u32>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// Requests per day (rolling 24 hours).
    #[arg(long)]
    rpd: Option<u32>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Tokens per minute: prompt plus maximum output.
    #[arg(long)]
    tpm: Option<u32>,
    /// Tokens per day (rolling 24 hours).
    #[arg(long)]
    tpd: Option<u64>,
    /// Tokens per UTC day.
    #[arg(long)]
    budget_tokens_daily: Option<u64>,
    /// Tokens per UTC calendar month.
    #[arg(long)]
    budget_tokens_monthly: Option<u64>,
    /// Spend in USD per UTC day, such as 5 or 0.25.
    #[arg(long, value_parser = parse_usd)]
    budget_usd_daily: Option<halberd_store::Usd>,
    /// Spend in USD per UTC calendar month.
    #[arg(long, value_parser = parse_usd)]
    budget_usd_monthly: Option<halberd_store::Usd>,
}

fn parse_usd(text: &str) -> Result<halberd_store::Usd, String> {
    text.parse()
}

impl LimitFlags {
    fn limits(&self) -> halberd_store::KeyLimits {
        halberd_store::KeyLimits {
            rps: self.rps,
            rpm: self.rpm,
            rpd: self.rpd,
            max_concurrent: self.max_concurrent,
            tpm: self.tpm,
            tpd: self.tpd,
            budget_tokens_daily: self.budget_tokens_daily,
            budget_tokens_monthly: self.budget_tokens_monthly,
            budget_usd_daily: self.budget_usd_daily,
            budget_usd_monthly: self.budget_usd_monthly,
        }
    }
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Set limits that apply to all of a user's keys together (0 removes one).
    Limits {
        /// The user, as given to `keys create --user`.
        user: String,
        #[command(flatten)]
        limits: LimitFlags,
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List users with limits.
    List {
        /// Print JSON (one object or array) for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Usage of a user (or, with --key, of one key) today and this month.
    Usage {
        /// The user; leave out with --key.
        user: Option<String>,
        #[arg(long, conflicts_with = "user")]
        key: Option<String>,
        /// Accepted for symmetry: the report is always JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print the effective settings.
    Check {
        /// The file to check (default: --config, $HALBERD_CONFIG, or the
        /// embedded default).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALBERD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: piped to a file or a collector, escape
    // codes are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("HALBERD_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads and validates the configuration. Relative paths in a file are taken
/// from the file's directory; the embedded default uses the working directory.
fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let (file, base) = read_config(path)?;
    file.build(&base, &env).map_err(|e| invalid(&e))
}

/// Every error of a configuration, one per line.
fn invalid(e: &halberd_gateway::config::ConfigError) -> String {
    if e.more.is_empty() {
        format!("invalid configuration: {e}")
    } else {
        let lines = e.to_string().replace('\n', "\n  ");
        format!(
            "invalid configuration ({} errors):\n  {lines}",
            e.more.len() + 1
        )
    }
}

fn read_config(path: Option<&Path>) -> Result<(ConfigFile, PathBuf), String> {
    Ok(match path {
        Some(p) => (
            ConfigFile::read(p).map_err(|e| e.to_string())?,
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        None => (ConfigFile::default(), PathBuf::from(".")),
    })
}

/// The configuration for commands that work on the store only (`keys`,
/// `users`): they call no provider and hash nothing, so the variables that
/// hold provider keys and hash keys need not be set for them (an operator
/// managing keys should not need every provider's credentials). Everything
/// else is validated as for `serve`.
fn load_config_for_store(path: Option<&Path>) -> Result<Config, String> {
    let (file, base) = read_config(path)?;
    let secrets: std::collections::HashSet<String> = file
        .providers
        .iter()
        .filter_map(|p| p.api_key_env.clone())
        .chain(
            file.policies
                .iter()
                .filter_map(|p| p.sensitive.hash_key_env.clone()),
        )
        .collect();
    let env = |name: &str| {
        env(name).or_else(|| {
            secrets
                .contains(name)
                .then(|| "unused-by-this-command-0000".to_owned())
        })
    };
    file.build(&base, &env).map_err(|e| invalid(&e))
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve {
            listen,
            admin_listen,
        } => serve(cli.config.as_deref(), listen, admin_listen).await,
        Command::Keys(cmd) => keys(cli.config.as_deref(), cmd).await,
        Command::Users(cmd) => users(cli.config.as_deref(), cmd).await,
        Command::Usage {
            since,
            until,
            by,
            json,
            csv,
        } => {
            let group = halberd_store::UsageGroup::parse(&by)
                .ok_or_else(|| format!("--by must be key, user, model or day, not {by:?}"))?;
            let now = now_unix();
            let bound = |s: Option<&str>, default: i64| match s {
                Some(s) => halberd_gateway::usage::parse_bound(s, now),
                None => Ok(default),
            };
            let since =
                bound(since.as_deref(), now - 30 * 86_400).map_err(|e| format!("--since: {e}"))?;
            let until = bound(until.as_deref(), now + 1).map_err(|e| format!("--until: {e}"))?;
            let config = load_config_for_store(cli.config.as_deref())?;
            let keyring: Keyring = halberd_gateway::open_keyring(&config, &env, false).await?;
            let rows = keyring
                .store()
                .usage_report(group, since, until)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|r| halberd_gateway::usage::row_json(group, r))
                    .collect();
                outln!(
                    "{}",
                    json!({"by": group.as_str(), "since": since, "until": until, "rows": rows})
                );
            } else if csv {
                print!("{}", halberd_gateway::usage::csv(group, &rows));
            } else {
                print!("{}", halberd_gateway::usage::table(group, &rows));
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "halberd", &mut std::io::stdout());
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            check(file.as_deref().or(cli.config.as_deref()))
        }
        Command::Scan { policy, file } => {
            let config = load_config(cli.config.as_deref())?;
            let name = policy.as_deref().unwrap_or("default");
            let policy = config
                .policies
                .get(name)
                .ok_or_else(|| format!("no policy named {name:?} in the configuration"))?;
            let stdout = std::io::stdout().lock();
            let failed = match file.as_deref().filter(|f| f.as_os_str() != "-") {
                Some(path) => {
                    let input = std::fs::File::open(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    scan::run(
                        policy,
                        std::io::BufReader::new(input),
                        std::io::BufWriter::new(stdout),
                    )
                }
                None => scan::run(
                    policy,
                    std::io::stdin().lock(),
                    std::io::BufWriter::new(stdout),
                ),
            }
            .map_err(|e| format!("scan failed: {e}"))?;
            if failed > 0 {
                return Err(format!("{failed} input line(s) could not be scanned"));
            }
            Ok(())
        }
        Command::Eval {
            sensitive,
            dataset,
            generated,
            min_recall,
            min_precision,
            min_recall_for,
            model,
            show_errors,
            scores,
            data,
            fail_under,
        } => match (sensitive, dataset) {
            _ if generated.is_some() => {
                let mut recall_for = std::collections::BTreeMap::new();
                for item in &min_recall_for {
                    let (kind, value) = item
                        .split_once('=')
                        .and_then(|(k, v)| Some((k, v.parse::<f64>().ok()?)))
                        .ok_or_else(|| {
                            format!("--min-recall-for {item:?}: expected TYPE=NUMBER")
                        })?;
                    if !eval_generated::TYPES.contains(&kind) {
                        return Err(format!(
                            "--min-recall-for {item:?}: unknown type (one of {})",
                            eval_generated::TYPES.join(", ")
                        ));
                    }
                    recall_for.insert(kind.to_owned(), value);
                }
                let gate = eval_generated::Gate {
                    recall: min_recall,
                    precision: min_precision,
                    recall_for,
                };
                let path = generated.unwrap_or_default();
                eval_generated::run(&path, &gate).map_err(|e| format!("{e:#}"))
            }
            (true, _) => {
                let data = data.ok_or("--sensitive needs --data DIR, the public data sets")?;
                eval_sensitive::run(&data, fail_under).map_err(|e| format!("{e:#}"))
            }
            (false, Some(dataset)) => injection_cli::eval(
                &dataset,
                model.as_deref(),
                show_errors,
                scores.as_deref(),
                fail_under,
            )
            .map_err(|e| format!("{e:#}")),
            (false, None) => Err(
                "choose what to evaluate: --sensitive, or --dataset FILE for prompt injection"
                    .into(),
            ),
        },
        Command::TrainInjection {
            train,
            out,
            folds,
            epochs,
            learning_rate,
            l2,
        } => {
            let mut config = halberd_guard::injection::model::TrainConfig::default();
            config.epochs = epochs.unwrap_or(config.epochs);
            config.learning_rate = learning_rate.unwrap_or(config.learning_rate);
            config.l2 = l2.unwrap_or(config.l2);
            injection_cli::train_command(&train, &out, folds, config).map_err(|e| format!("{e:#}"))
        }
        Command::MockUpstream { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            outln!(
                "halberd mock upstream listening on http://{}",
                listener.local_addr().map_err(|e| e.to_string())?
            );
            halberd_gateway::mock_server::run(listener, shutdown_signal()).await;
            Ok(())
        }
    }
}

async fn serve(
    path: Option<&Path>,
    listen: Option<String>,
    admin_listen: Option<String>,
) -> Result<(), String> {
    let mut config = load_config(path)?;
    if let Some(l) = listen {
        config.listen = l
            .parse()
            .map_err(|_| format!("--listen: {l:?} is not an address such as 127.0.0.1:8787"))?;
    }
    if let Some(l) = admin_listen {
        config.admin_listen = l.parse().map_err(|_| {
            format!("--admin-listen: {l:?} is not an address such as 127.0.0.1:8788")
        })?;
    }
    let state = halberd_gateway::build_state(config, &env).await?;
    let gateway = halberd_gateway::Gateway::bind(state.clone())
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = gateway.local_addr().map_err(|e| e.to_string())?;
    let admin = gateway.admin_addr().map_err(|e| e.to_string())?;
    let keys = state.keyring.list().await.map_err(|e| e.to_string())?;
    outln!("halberd listening on http://{addr} (admin API on http://{admin})");
    match state.config.store_url {
        // The URL may hold a password: the backend only.
        Some(_) => outln!("store: postgres ([store] url / HALBERD_STORE_URL)"),
        None => outln!("store: {}", state.config.store_path.display()),
    }
    outln!(
        "models: {}",
        state
            .config
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if state.admin_token.is_none() {
        outln!(
            "admin API disabled: set {} to enable it",
            state.config.admin_token_env
        );
    }
    if keys.is_empty() {
        let cfg = path
            .map(|p| format!(" --config {}", p.display()))
            .unwrap_or_default();
        outln!(
            "no keys yet; create the first one with:\n  halberd{cfg} keys create --name my-first-key"
        );
        // A model the configuration really has: the first named one.
        let example = state
            .config
            .models
            .iter()
            .find(|m| !m.is_pattern())
            .map_or("MODEL", |m| m.name.as_str());
        outln!(
            "then call it like OpenAI:\n  curl http://{addr}/v1/chat/completions -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"model\":\"{example}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'"
        );
    }
    gateway.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

fn actor() -> String {
    format!(
        "cli:{}",
        env("USER")
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "unknown".into())
    )
}

fn expires_at(expires: Option<&str>) -> Result<Option<i64>, String> {
    expires
        .map(|s| {
            parse_duration(s)
                .map(|d| now_unix().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
                .map_err(|e| format!("--expires: {e}"))
        })
        .transpose()
}

fn metadata(m: Option<&str>) -> Result<Option<serde_json::Value>, String> {
    m.map(|s| serde_json::from_str(s).map_err(|e| format!("--metadata: invalid JSON: {e}")))
        .transpose()
}

async fn keys(path: Option<&Path>, cmd: KeysCommand) -> Result<(), String> {
    let config = load_config_for_store(path)?;
    let keyring: Keyring = halberd_gateway::open_keyring(&config, &env, false).await?;
    let now = now_unix();
    let err = |e: halberd_store::StoreError| e.to_string();
    match cmd {
        KeysCommand::Create { attrs, json } => {
            let name = attrs.name.clone().ok_or("--name is required")?;
            config
                .known_policy(attrs.policy.as_deref())
                .map_err(|e| format!("--policy: {e}"))?;
            let spec = KeySpec {
                name,
                user: attrs.user,
                expires_at: expires_at(attrs.expires.as_deref())?,
                allowed_models: attrs.models.unwrap_or_default(),
                allowed_endpoints: attrs.endpoints.unwrap_or_default(),
                policy: attrs.policy,
                metadata: metadata(attrs.metadata.as_deref())?,
                limits: attrs.limits.limits(),
            };
            let issued = keyring.create(spec, &actor(), now).await.map_err(err)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string(&issued).map_err(|e| e.to_string())?
                );
            } else {
                outln!("created key {} ({})", issued.record.id, issued.record.name);
                outln!("{}", issued.key);
                outln!("store it now: it will not be shown again");
            }
        }
        KeysCommand::List { json } => {
            let keys = keyring.list().await.map_err(err)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string(&keys).map_err(|e| e.to_string())?
                );
            } else {
                outln!(
                    "{:<14} {:<24} {:<16} {:<10} {:<20} {:<12} {:<24} MODELS",
                    "ID",
                    "NAME",
                    "USER",
                    "STATE",
                    "EXPIRES",
                    "POLICY",
                    "LIMITS"
                );
                for k in &keys {
                    let limits = serde_json::to_value(k.limits)
                        .ok()
                        .and_then(|v| v.as_object().cloned())
                        .map(|m| {
                            m.iter()
                                .filter(|(_, v)| !v.is_null())
                                .map(|(name, v)| {
                                    format!("{name}={}", v.to_string().trim_matches('"'))
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| "-".into());
                    outln!(
                        "{:<14} {:<24} {:<16} {:<10} {:<20} {:<12} {:<24} {}",
                        k.id,
                        k.name,
                        k.user.as_deref().unwrap_or("-"),
                        state(k, now),
                        k.expires_at
                            .map_or_else(|| "-".into(), halberd_gateway::pipeline::admit::rfc3339),
                        k.policy.as_deref().unwrap_or("default"),
                        limits,
                        if k.allowed_models.is_empty() {
                            "*".into()
                        } else {
                            k.allowed_models.join(",")
                        }
                    );
                }
            }
        }
        KeysCommand::Update { id, attrs, json } => {
            config
                .known_policy(attrs.policy.as_deref())
                .map_err(|e| format!("--policy: {e}"))?;
            let change = KeyUpdate {
                name: attrs.name,
                user: attrs.user.map(Some),
                expires_at: expires_at(attrs.expires.as_deref())?.map(Some),
                allowed_models: attrs.models,
                allowed_endpoints: attrs.endpoints,
                policy: attrs.policy.map(Some),
                metadata: metadata(attrs.metadata.as_deref())?,
                limits: Some(attrs.limits.limits()).filter(|l| !l.is_empty()),
            };
            let k = keyring
                .update(&id, change, &actor(), now)
                .await
                .map_err(err)?;
            print_record(&k, json, "updated")?;
        }
        KeysCommand::Rotate { id, grace, json } => {
            let grace = parse_duration(&grace).map_err(|e| format!("--grace: {e}"))?;
            let issued = keyring
                .rotate(
                    &id,
                    i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
                    &actor(),
                    now,
                )
                .await
                .map_err(err)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string(&issued).map_err(|e| e.to_string())?
                );
            } else {
                outln!(
                    "rotated {id}: successor {} (the old key stays valid for {}s)",
                    issued.record.id,
                    grace.as_secs()
                );
                outln!("{}", issued.key);
                outln!("store it now: it will not be shown again");
            }
        }
        KeysCommand::Revoke { id, json } => {
            let k = keyring.revoke(&id, &actor(), now).await.map_err(err)?;
            print_record(&k, json, "revoked")?;
        }
    }
    Ok(())
}

fn state(k: &KeyRecord, now: i64) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if k.rotated_to.is_some() {
        "rotating"
    } else {
        "active"
    }
}

async fn users(path: Option<&Path>, cmd: UsersCommand) -> Result<(), String> {
    let config = load_config_for_store(path)?;
    let keyring: Keyring = halberd_gateway::open_keyring(&config, &env, false).await?;
    let err = |e: halberd_store::StoreError| e.to_string();
    let to_json = |v: &serde_json::Value| serde_json::to_string(v).map_err(|e| e.to_string());
    match cmd {
        UsersCommand::Limits { user, limits, json } => {
            let set = keyring
                .set_user_limits(&user, &limits.limits(), &actor(), now_unix())
                .await
                .map_err(err)?;
            if json {
                outln!("{}", to_json(&json!({"user": user, "limits": set}))?);
            } else {
                outln!("limits of user {user:?}: {}", to_json(&json!(set))?);
            }
        }
        UsersCommand::List { json } => {
            let all = keyring.store().list_user_limits().await.map_err(err)?;
            if json {
                let list: Vec<_> = all
                    .iter()
                    .map(|(u, l)| json!({"user": u, "limits": l}))
                    .collect();
                outln!("{}", to_json(&json!(list))?);
            } else {
                for (user, limits) in &all {
                    outln!("{user:<24} {}", to_json(&json!(limits))?);
                }
            }
        }
        UsersCommand::Usage { user, key, .. } => {
            let scope = match (&user, &key) {
                (Some(u), None) => halberd_store::UsageScope::User(u),
                (None, Some(k)) => halberd_store::UsageScope::Key(k),
                _ => return Err("name a user, or a key with --key".into()),
            };
            let report = halberd_gateway::usage_report(keyring.store(), scope, now_unix())
                .await
                .map_err(err)?;
            outln!("{}", to_json(&report)?);
        }
    }
    Ok(())
}

fn print_record(k: &KeyRecord, json: bool, verb: &str) -> Result<(), String> {
    if json {
        outln!("{}", serde_json::to_string(k).map_err(|e| e.to_string())?);
    } else {
        outln!("{verb} key {} ({})", k.id, k.name);
    }
    Ok(())
}

/// An OpenAI-kind `base_url` whose path has no version segment (`/v1`,
/// `/api/v2`, `/openai/v1`): the gateway appends `/chat/completions` to it, and
/// most OpenAI-compatible servers answer under `/v1`, so a missing one shows
/// up only as a 404 from the upstream at run time.
fn version_path_warning(provider: &halberd_gateway::config::Provider) -> Option<String> {
    if provider.kind != halberd_gateway::config::ProviderKind::Openai {
        return None;
    }
    let base = provider.base_url.as_deref()?;
    let path = base
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let versioned = path.split(['/', '?']).any(|s| {
        s.strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    (!versioned).then(|| {
        format!(
            "provider {:?}: base_url {base:?} has no version in its path (such as /v1); requests go to {base}/chat/completions, which most OpenAI-compatible servers do not answer",
            provider.name
        )
    })
}

fn check(path: Option<&Path>) -> Result<(), String> {
    let config = load_config(path)?;
    let source = path.map_or_else(
        || "embedded default".to_owned(),
        |p| p.display().to_string(),
    );
    outln!("configuration ok ({source})");
    if !config.admin_listen.ip().is_loopback() {
        outln!(
            "warning: the admin API listens on {} (not loopback) over plain HTTP; it manages every key: put it behind TLS and a firewall",
            config.admin_listen
        );
    }
    for provider in &config.providers {
        if let Some(warning) = version_path_warning(provider) {
            outln!("warning: {warning}");
        }
    }
    let summary = json!(config.describe());
    outln!(
        "{}",
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?
    );
    Ok(())
}
