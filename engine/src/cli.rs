//! The `sluice` command line: parses arguments and hands each command to the
//! module that owns it. It holds no logic of its own beyond printing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::model::event::{EventId, EventInput};
use crate::model::export::{ResponseMode, SigningSecret};
use crate::sandbox::{self, Limits, OutcomeResult, Params, Sandbox, SandboxConfig};
use crate::tools::catch::CatchOptions;
use crate::tools::{admin, author};

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A WebAssembly-scripted event router.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the engine: API, routing and delivery, on an embedded SQLite file
    /// or, with --database-url, as one node of several on PostgreSQL.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Directory for the database and compiled scripts (default ./sluice-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// PostgreSQL database shared by the nodes, e.g. postgres://sluice@db/sluice
        /// (or SLUICE_DATABASE_URL); the database must exist, sluice migrates it.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// This node's name among those sharing the database (default hostname:port).
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
        /// Settings file (default ./sluice.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs a test receiver: prints each request, checks its signature, answers.
    ///
    /// Point a configuration's endpoint at it before the real receiver exists.
    Catch {
        /// Address to listen on; port 0 picks a free one (the address is printed on stderr).
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// A signing secret (`whsec_…`) to verify signatures with; repeatable
        /// (during a rotation, either may match).
        #[arg(long = "secret", value_name = "WHSEC", value_parser = parse_secret)]
        secrets: Vec<SigningSecret>,
        /// `normal`: answer 200 with the body `[ACK]`; `loose`: 200 with an empty body.
        #[arg(long, value_name = "normal|loose", default_value = "normal", value_parser = parse_mode)]
        mode: ResponseMode,
        /// Answer this status code instead (the body is empty unless it is 200 in normal mode).
        #[arg(long, value_parser = clap::value_parser!(u16).range(200..=599))]
        status: Option<u16>,
        /// Print one JSON object per line instead of a readable block.
        #[arg(long)]
        json: bool,
    },
    /// Work with export scripts locally.
    #[command(subcommand)]
    Script(ScriptCommand),
    /// Export configurations on a server: list, show, create and update
    /// from a JSON or TOML file, enable, disable, test, rotate-secret,
    /// recover, stats, delete.
    Configurations {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::Configurations,
    },
    /// Script versions on a server: list, show, delete (upload with `script push`).
    Scripts {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::Scripts,
    },
    /// Events on a server: list, show, replay, and tail (follow deliveries live).
    Events {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::Events,
    },
    /// Deliveries on a server: list, show with their attempts, explain.
    Deliveries {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::Deliveries,
    },
    /// API keys of the key's tenant: list, create (secret shown once), revoke.
    Keys {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::Keys,
    },
    /// Tenants (operator keys): list, create, update.
    Tenants {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::Tenants,
    },
    /// Prints a shell completion script: `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ScriptCommand {
    /// Runs a script on one event and prints its decision and log lines as JSON.
    ///
    /// Exits 0 on a decision (deliver or skip), 2 when the script fails.
    Test {
        /// The script: a component, or a core module built with the SDK.
        script: PathBuf,
        /// The event, as JSON in the shape services post.
        #[arg(long)]
        event: PathBuf,
        /// A script parameter, `name=value`; repeatable.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Instruction budget (fuel) for the call.
        #[arg(long)]
        fuel: Option<u64>,
    },
    /// Checks that a file is a script sluice accepts; prints its sha256 and WIT version.
    Check { script: PathBuf },
    /// Turns a core module built with the SDK into a component.
    Componentize {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Creates a script crate that builds as it is: a filter with a native
    /// test, a sample event, and a copy of the SDK.
    New {
        /// The crate's name (lowercase, `-` and `_`).
        name: String,
        /// Where to create it (default ./NAME; must not exist).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Builds a script crate to a component, ready to push.
    Build {
        /// The crate's folder (default: the current one).
        dir: Option<PathBuf>,
    },
    /// Uploads a script as the next version of its name.
    Push {
        /// A component (`.wasm`), or a script crate's folder to build first.
        #[arg(default_value = ".")]
        script: PathBuf,
        /// The script's name on the server (default: the file's or crate's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Shows what a candidate would change on a configuration's stored
    /// events: the summary, then the first events whose decision or request changes.
    Preview {
        /// The configuration (`cfg_…`).
        #[arg(long)]
        configuration: String,
        /// The candidate script version (`scr_…`; default: the configured one).
        #[arg(long)]
        script: Option<String>,
        /// A candidate parameter, `name=value`; repeatable (default: the configured ones).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// On the last N events the configuration selected (default 100).
        #[arg(long)]
        last: Option<u64>,
        /// How many changed events to print.
        #[arg(long, default_value_t = 10)]
        show: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The server's URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API key (with `scripts:write` to push, `logs:read` to preview).
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true)]
    key: String,
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {raw:?}"))?;
    if name.is_empty() {
        return Err("parameter name is empty".into());
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn parse_secret(raw: &str) -> Result<SigningSecret, String> {
    SigningSecret::parse(raw).map_err(|e| e.reason)
}

fn parse_mode(raw: &str) -> Result<ResponseMode, String> {
    match raw {
        "normal" => Ok(ResponseMode::Normal),
        "loose" => Ok(ResponseMode::Loose),
        _ => Err("expected `normal` or `loose`".into()),
    }
}

/// The `sluice` binary: parses the command line and runs it.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { listen, data_dir, database_url, node_id, config } => serve(listen, data_dir, database_url, node_id, config),
        Command::Catch { listen, secrets, mode, status, json } => catch(CatchOptions {
            listen,
            secrets,
            mode,
            // In range: clap checked 200 to 599.
            status: status.and_then(|s| axum::http::StatusCode::from_u16(s).ok()),
            json,
        }),
        Command::Script(ScriptCommand::Test { script, event, params, fuel }) => script_test(script, event, params, fuel),
        Command::Script(ScriptCommand::Check { script }) => script_check(script),
        Command::Script(ScriptCommand::Componentize { input, output }) => componentize(input, output),
        Command::Script(ScriptCommand::New { name, dir }) => script_new(&name, dir.as_deref()),
        Command::Script(ScriptCommand::Build { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            author::build(&dir).map(|out| {
                println!("{}", out.display());
                ExitCode::SUCCESS
            })
        }
        Command::Script(ScriptCommand::Push { script, name, server }) => script_push(script, name, server),
        Command::Script(ScriptCommand::Preview { configuration, script, params, last, show, server }) => {
            let params = (!params.is_empty()).then(|| params.into_iter().collect());
            script_preview(author::PreviewRequest { configuration, script, params, last }, show, server)
        }
        Command::Configurations { connection, command } => admin(connection, async |c| admin::configurations(c, command).await),
        Command::Scripts { connection, command } => admin(connection, async |c| admin::scripts(c, command).await),
        Command::Events { connection, command } => {
            let json = connection.json;
            admin(connection, async |c| admin::events(c, command, json).await)
        }
        Command::Deliveries { connection, command } => admin(connection, async |c| admin::deliveries(c, command).await),
        Command::Keys { connection, command } => admin(connection, async |c| admin::keys(c, command).await),
        Command::Tenants { connection, command } => admin(connection, async |c| admin::tenants(c, command).await),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "sluice", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    node_id: Option<String>,
    config: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let mut settings = crate::settings::Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(listen) = listen {
        settings.listen = listen;
    }
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    if database_url.is_some() {
        settings.database_url = database_url;
    }
    if node_id.is_some() {
        settings.node_id = node_id;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log).map_err(|e| format!("log filter {:?}: {e}", settings.log))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if settings.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(crate::server::serve(settings))?;
    Ok(ExitCode::SUCCESS)
}

fn catch(options: CatchOptions) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(crate::tools::catch::run(options)).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn script_test(script: PathBuf, event: PathBuf, params: Vec<(String, String)>, fuel: Option<u64>) -> Result<ExitCode, String> {
    let mut limits = Limits::default();
    if let Some(fuel) = fuel {
        limits.fuel = fuel;
    }
    let sandbox = Sandbox::new(SandboxConfig { limits, max_concurrent_calls: 2, ..SandboxConfig::default() })
        .map_err(|e| format!("cannot start the sandbox: {e:#}"))?;
    let script = sandbox.load(&read(&script)?).map_err(|e| format!("script refused: {e}"))?;
    let text = String::from_utf8(read(&event)?).map_err(|_| format!("{} is not UTF-8", event.display()))?;
    let event = EventInput::from_json(&text)
        .and_then(|input| input.validate(|| EventId::parse("evt_local_test").expect("a valid literal id")))
        .map_err(|e| format!("{}: {e}", event.display()))?;
    let params: Arc<Params> = Arc::new(params.into_iter().collect());

    let outcome = sandbox.run(&script, &params, &event);
    let json = serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?;
    println!("{json}");
    match &outcome.result {
        OutcomeResult::Decision(_) => Ok(ExitCode::SUCCESS),
        OutcomeResult::Error(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(2))
        }
    }
}

fn script_check(script: PathBuf) -> Result<ExitCode, String> {
    let bytes = read(&script)?;
    let sandbox = Sandbox::new(SandboxConfig { max_concurrent_calls: 2, ..SandboxConfig::default() })
        .map_err(|e| format!("cannot start the sandbox: {e:#}"))?;
    let loaded = sandbox.load(&bytes).map_err(|e| format!("script refused ({}): {e}", e.code()))?;
    let report = serde_json::json!({
        "sha256": loaded.sha256().to_string(),
        "size": bytes.len(),
        "wit_version": loaded.wit_version(),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn componentize(input: PathBuf, output: PathBuf) -> Result<ExitCode, String> {
    let component = sandbox::componentize(&read(&input)?).map_err(|e| format!("{}: {e}", input.display()))?;
    std::fs::write(&output, component).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn script_new(name: &str, dir: Option<&std::path::Path>) -> Result<ExitCode, String> {
    let made = author::new(name, dir)?;
    println!("{}", made.display());
    eprintln!(
        "created {name}: `cargo test` runs its filter natively; `sluice script build` makes the component; \
         `sluice script push` uploads it"
    );
    Ok(ExitCode::SUCCESS)
}

/// A runtime for one client call.
fn client_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))
}

fn script_push(script: PathBuf, name: Option<String>, server: ServerArgs) -> Result<ExitCode, String> {
    let component = if script.is_dir() { author::build(&script)? } else { script };
    let name = match name {
        Some(name) => name,
        None => component.file_stem().map(|s| s.to_string_lossy().into_owned()).ok_or("give the script a --name")?,
    };
    let server = author::Server { url: server.server, key: server.key };
    let pushed = client_runtime()?.block_on(author::push(&server, &component, &name))?;
    println!("{pushed}");
    Ok(ExitCode::SUCCESS)
}

/// Runs an admin command against a server and prints its answer: a table,
/// or with `--json` the API's JSON.
fn admin(
    connection: admin::Connection,
    run: impl AsyncFnOnce(&admin::Client) -> Result<admin::Output, String>,
) -> Result<ExitCode, String> {
    let client = admin::Client::new(&connection)?;
    let output = client_runtime()?.block_on(run(&client))?;
    if connection.json {
        if !output.answer.is_null() {
            println!("{}", serde_json::to_string_pretty(&output.answer).map_err(|e| e.to_string())?);
        }
    } else if !output.table.is_empty() {
        println!("{}", output.table);
    }
    Ok(ExitCode::SUCCESS)
}

fn script_preview(req: author::PreviewRequest, show: usize, server: ServerArgs) -> Result<ExitCode, String> {
    let server = author::Server { url: server.server, key: server.key };
    let (summary, changed) = client_runtime()?.block_on(author::preview(&server, &req, show))?;
    println!("{summary}");
    for line in &changed {
        println!("{}", author::describe(line));
    }
    Ok(ExitCode::SUCCESS)
}
