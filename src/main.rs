//! The `flowctl` binary: parse, set up logging, dispatch, map errors to exit codes.

use clap::{CommandFactory, FromArgMatches};
use flowctl::cli::{Cli, Command, KeysCommand, LogFormat};
use flowctl::commands::{self, exit};

fn main() {
    // `.env` (or --env-file) first, so that clap sees its values as environment (flags >
    // env > file).
    let env_file = flowctl::config::env_file_arg(std::env::args_os());
    let dotenv = flowctl::config::load_dotenv(env_file.as_deref());
    let cli = parse();
    // `init` writes the settings file: one that does not exist yet is what it is for.
    let dotenv = match (&cli.command, dotenv) {
        (Command::Init(_), Err(_))
            if !env_file.as_deref().is_some_and(std::path::Path::is_file) =>
        {
            Ok(())
        }
        (_, result) => result,
    };
    commands::set_quiet(cli.quiet);
    init_tracing(&cli);
    let code = match dotenv.map_err(anyhow::Error::from).and_then(|_| run(cli)) {
        Ok(code) => code,
        // `flowctl … | head`: the reader went away; a closed pipe is a normal end, not an
        // error to report (every command that prints checks this too; this is the net).
        Err(err) if closed_stdout(&err) => exit::OK,
        Err(err) => {
            eprintln!(
                "flowctl: {}",
                flowctl::secret::redact_noted(&one_line(&err))
            );
            exit_code(&err)
        }
    };
    std::process::exit(code);
}

/// Whether `err` comes from writing to a stdout whose reader has gone.
fn closed_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parses the command line; `--db` given on the command line to a command that uses no
/// database is a usage error (exit 2) rather than silently ignored. `FLOWCTL_DB` from the
/// environment or the settings file is not: it is there for the commands that use it.
fn parse() -> Cli {
    let mut cmd = Cli::command();
    let matches = cmd.get_matches_mut();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    // Without --db or FLOWCTL_DB, DATABASE_URL (the name hosting platforms set) is used.
    if matches.value_source("db") == Some(clap::parser::ValueSource::DefaultValue) {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            match url.parse() {
                Ok(db) => cli.db = db,
                Err(e) => cmd
                    .error(
                        clap::error::ErrorKind::ValueValidation,
                        format!("DATABASE_URL: {e}"),
                    )
                    .exit(),
            }
        }
    }
    let on_command_line =
        |m: &clap::ArgMatches| m.value_source("db") == Some(clap::parser::ValueSource::CommandLine);
    let mut given = on_command_line(&matches);
    let mut sub = matches.subcommand();
    let mut path = Vec::new();
    while let Some((name, m)) = sub {
        path.push(name.to_string());
        given |= on_command_line(m);
        sub = m.subcommand();
    }
    // A password on the command line shows in the process list (`ps`) to every user of the
    // machine: like every other secret, it is read from the environment only.
    if given {
        if let flowctl::store::DbTarget::Postgres(url) = &cli.db {
            if url.has_password() {
                cmd.error(
                    clap::error::ErrorKind::ValueValidation,
                    format!(
                        "--db {url}: a password on the command line shows in the process list; put the URL in FLOWCTL_DB or DATABASE_URL (environment or settings file) instead"
                    ),
                )
                .exit();
            }
        }
    }
    if given && !cli.command.uses_db() {
        cmd.error(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "`flowctl {}` uses no database: --db is not accepted here (it is for send, bulk, serve, export, stats, report and doctor)",
                path.join(" ")
            ),
        )
        .exit();
    }
    cli
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    // Synchronous commands run without a runtime: they only read SQLite and write files.
    match &cli.command {
        Command::Init(args) => {
            let path = cli.env_file.clone().unwrap_or_else(|| ".env".into());
            return commands::init::run(&path, args);
        }
        Command::Completions(args) => return commands::completions::run_completions(args.shell),
        Command::Man(args) => return commands::completions::run_man(args.out.as_deref()),
        Command::Keygen(args) => return commands::keys::run_keygen(args),
        Command::Export(args) => return commands::export::run(&cli.db, args),
        Command::Stats(args) => return commands::stats::run(&cli.db, args),
        Command::Suppress(args) => return commands::suppress::run(&cli.db, args),
        Command::Report(args) => return commands::report::run(&cli.db, args),
        Command::Db(args) => return commands::db::run(&cli.db, args),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let db = cli.db.clone();
    rt.block_on(async move {
        match cli.command {
            Command::Send(args) => commands::send::run(&db, args.resolve()?).await,
            Command::Bulk(args) => commands::bulk::run(&db, args.resolve()?).await,
            Command::Serve(args) => commands::serve::run(&db, args.resolve()?).await,
            Command::Sandbox(args) => commands::sandbox::run(args.resolve()?).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Doctor(args) => commands::doctor::run(&db, &args).await,
            Command::Keys(KeysCommand::Upload(args)) => {
                commands::keys::run_upload(args.keys.resolve()?, args.yes).await
            }
            Command::Keys(KeysCommand::Check(args)) => {
                commands::keys::run_check(args.resolve()?).await
            }
            Command::Flows(cmd) => {
                let settings = cmd.account().map(|a| a.resolve()).transpose()?;
                commands::flows::run(&cmd, settings).await
            }
            Command::Templates(cmd) => {
                commands::templates::run(&cmd, cmd.account().resolve()?).await
            }
            other => Err(
                commands::UsageError(format!("{other:?} is not available in this build")).into(),
            ),
        }
    })
}

fn init_tracing(cli: &Cli) {
    let server = matches!(cli.command, Command::Serve(_) | Command::Sandbox(_));
    let default = if server { "info" } else { "off" };
    let filter = cli.log.clone().unwrap_or_else(|| default.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_ansi(commands::colours_on_stderr())
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// stderr for log lines, with every secret read so far blanked out (see
/// `flowctl::secret::redact`): a field carrying text from elsewhere, such as an error message
/// that echoes a credential, must not put the credential in the logs. The formatter writes
/// each event with one `write`, so a line is redacted whole.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => err.write_all(flowctl::secret::redact(text).as_bytes())?,
            Err(_) => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The whole error chain on one line, without repeating a cause already in its parent.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

fn exit_code(err: &anyhow::Error) -> i32 {
    let usage = err.chain().any(|e| {
        e.is::<flowctl::config::ConfigError>()
            || e.is::<commands::UsageError>()
            || e.is::<flowctl::phone::PhoneError>()
    });
    if usage {
        exit::USAGE
    } else {
        exit::FAILED
    }
}
