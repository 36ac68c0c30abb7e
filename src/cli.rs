//! Command-line definitions (clap). Every flag is declared and documented here, once.
//!
//! Values clap can check are typed here (enumerations, durations, addresses), so that a bad
//! one is refused at parse time, naming the flag and its variable; `config` turns the parsed
//! arguments into each command's settings.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod help;

/// Send WhatsApp Flows and join every completion back to the recipient's phone number.
#[derive(Debug, Parser)]
#[command(
    name = "flowctl",
    version,
    about,
    propagate_version = true,
    after_help = help::MAIN
)]
pub struct Cli {
    /// The database: a SQLite file, or a `postgres://` URL (else `DATABASE_URL`). For send,
    /// bulk, serve, export, stats, report, suppress and doctor; refused elsewhere.
    #[arg(
        long,
        env = "FLOWCTL_DB",
        default_value = "flowctl.db",
        global = true,
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub db: crate::store::DbTarget,

    /// Read settings from this file instead of `./.env` (it must exist). Values already in
    /// the environment still win.
    #[arg(long, value_name = "PATH", global = true, help_heading = GLOBAL)]
    pub env_file: Option<PathBuf>,

    /// Log filter (`info`, `debug`, `flowctl=trace`, …). Default: silent for commands,
    /// `info` for `serve` and `sandbox`. Logs go to stderr.
    #[arg(
        long,
        env = "FLOWCTL_LOG",
        global = true,
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub log: Option<String>,

    /// Log line format.
    #[arg(
        long,
        value_enum,
        env = "FLOWCTL_LOG_FORMAT",
        default_value = "text",
        global = true,
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub log_format: LogFormat,

    /// Print less: no progress, no per-row lines and no human summary on stderr (errors,
    /// and the output asked for on stdout such as `--json`, still come).
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The help heading of the options every command accepts.
const GLOBAL: &str = "Global options";

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send the Flow to one phone number.
    #[command(after_help = help::SEND)]
    Send(SendArgs),
    /// Send the Flow to every row of a CSV file, rate-limited and resumable.
    #[command(after_help = help::BULK)]
    Bulk(BulkArgs),
    /// Run the data endpoint, the message webhook and the CRM API.
    #[command(after_help = help::SERVE)]
    Serve(ServeArgs),
    /// Write the completed responses, with phone numbers.
    #[command(after_help = help::EXPORT)]
    Export(ExportArgs),
    /// Show the funnel per campaign: issued, sent, delivered, read, completed.
    #[command(after_help = help::STATS)]
    Stats(StatsArgs),
    /// Write the campaign report: one HTML file with the funnel, charts and responses.
    #[command(after_help = help::REPORT)]
    Report(ReportArgs),
    /// Generate the RSA key pair of the data endpoint.
    #[command(after_help = help::KEYGEN)]
    Keygen(KeygenArgs),
    /// Register or check the data endpoint's public key with the Graph API.
    #[command(subcommand, after_help = help::KEYS)]
    Keys(KeysCommand),
    /// Run a local stand-in of the Graph API (no real messages are sent).
    #[command(after_help = help::SANDBOX)]
    Sandbox(SandboxArgs),
    /// Run the whole loop offline: sandbox, serve, bulk, simulated people, stats, export.
    #[command(after_help = help::DEMO)]
    Demo(DemoArgs),
    /// Check every setting, the account, the Flow, the key and the database, at once.
    ///
    /// One line per check, with the fix under each failed one; `--json` for a program.
    /// Exit 1 when any check fails, 0 otherwise.
    #[command(after_help = help::DOCTOR)]
    Doctor(DoctorArgs),
    /// Write a commented settings file (`.env`, or --env-file), asking each value.
    #[command(after_help = help::INIT)]
    Init(InitArgs),
    /// Print a shell completion script.
    #[command(after_help = help::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command with --out.
    #[command(after_help = help::MAN)]
    Man(ManArgs),
    /// Manage the account's Flows as code: validate, deploy, list, publish, preview, metrics.
    #[command(subcommand, after_help = help::FLOWS)]
    Flows(FlowsCommand),
    /// Manage the account's message templates: list, get, create, delete.
    #[command(subcommand, after_help = help::TEMPLATES)]
    Templates(TemplatesCommand),
    /// Manage the suppression list: people who asked not to be messaged.
    ///
    /// `bulk` skips them (and counts them), `send` and `/api/send-flow` refuse them unless
    /// forced. STOP replies, Meta's marketing-preference webhook and 131050 refusals add
    /// people; START replies and the resume webhook lift them.
    #[command(subcommand, after_help = help::SUPPRESS)]
    Suppress(SuppressCommand),
    /// Move the database: copy a SQLite database into PostgreSQL.
    #[command(subcommand, after_help = help::DB)]
    Db(DbCommand),
}

/// `flowctl db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the SQLite database (--db / FLOWCTL_DB) into a PostgreSQL database, then check
    /// the row counts of every table.
    ///
    /// Ids are kept; rows already in PostgreSQL are left as they are, so running it again
    /// (or after an interruption) copies only what is missing. Exit 1 when a table's counts
    /// differ, 2 for a bad URL. Stop the writers (serve, bulk) first for an exact copy.
    #[command(after_help = help::DB)]
    MigrateTo(MigrateToArgs),
}

/// `flowctl db migrate-to`.
#[derive(Debug, Args)]
pub struct MigrateToArgs {
    /// The PostgreSQL database to copy into: `postgres://user:password@host/db` (its
    /// tables are created when missing).
    #[arg(value_name = "POSTGRES_URL")]
    pub url: String,
    /// Rows per INSERT.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
}

/// `flowctl suppress …`.
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Suppress one number.
    #[command(after_help = help::SUPPRESS)]
    Add(SuppressAddArgs),
    /// Lift the suppression of one number.
    #[command(after_help = help::SUPPRESS)]
    Remove(SuppressPhoneArgs),
    /// List the suppressed numbers, with the reason and time (`--csv` or `--json`).
    #[command(after_help = help::SUPPRESS)]
    List(SuppressListArgs),
    /// Suppress every number of a file: a CSV with a phone column, or one number a line.
    #[command(after_help = help::SUPPRESS)]
    Import(SuppressImportArgs),
}

/// `flowctl suppress add`.
#[derive(Debug, Args)]
pub struct SuppressAddArgs {
    /// The number (E.164, digits with country code, or national with DEFAULT_COUNTRY).
    pub phone: String,
    /// Why, kept with the entry.
    #[arg(long, default_value = "added by hand")]
    pub reason: String,
    /// ISO region (e.g. MA) for numbers written without a country code.
    #[arg(long, env = "DEFAULT_COUNTRY", hide_env_values = true)]
    pub default_country: Option<String>,
}

/// `flowctl suppress remove`.
#[derive(Debug, Args)]
pub struct SuppressPhoneArgs {
    /// The number (E.164, digits with country code, or national with DEFAULT_COUNTRY).
    pub phone: String,
    /// ISO region (e.g. MA) for numbers written without a country code.
    #[arg(long, env = "DEFAULT_COUNTRY", hide_env_values = true)]
    pub default_country: Option<String>,
}

/// `flowctl suppress list`.
#[derive(Debug, Args)]
pub struct SuppressListArgs {
    /// CSV with the columns phone_number,reason,source,suppressed_at.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// A JSON array of {phone_number, reason, source, suppressed_at}.
    #[arg(long)]
    pub json: bool,
}

/// `flowctl suppress import`.
#[derive(Debug, Args)]
pub struct SuppressImportArgs {
    /// A CSV whose header has a phone column (phone_number, phone or phoneNumber), or a
    /// file of one number a line.
    pub file: PathBuf,
    /// Why, kept with each new entry.
    #[arg(long, default_value = "imported")]
    pub reason: String,
    /// ISO region (e.g. MA) for numbers written without a country code.
    #[arg(long, env = "DEFAULT_COUNTRY", hide_env_values = true)]
    pub default_country: Option<String>,
}

impl Command {
    /// Whether the command reads or writes the database, i.e. accepts `--db`.
    pub fn uses_db(&self) -> bool {
        matches!(
            self,
            Command::Send(_)
                | Command::Bulk(_)
                | Command::Serve(_)
                | Command::Export(_)
                | Command::Stats(_)
                | Command::Report(_)
                | Command::Doctor(_)
                | Command::Suppress(_)
                | Command::Db(_)
        )
    }
}

/// `flowctl doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// RSA private key file (PEM). Or set PRIVATE_KEY to the PEM text.
    #[arg(long, env = "PRIVATE_KEY_FILE", hide_env_values = true)]
    pub private_key_file: Option<PathBuf>,

    /// The address `serve` will listen on, checked to be free.
    #[arg(
        long,
        env = "FLOWCTL_LISTEN",
        default_value = "127.0.0.1:8080",
        hide_env_values = true
    )]
    pub listen: String,

    #[command(flatten)]
    pub graph: GraphArgs,

    #[command(flatten)]
    pub message: MessageArgs,
}

/// `flowctl init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Ask nothing: write the values found in the environment, else defaults and empty
    /// placeholders.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `flowctl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `flowctl man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `flowctl.1` and one `flowctl-COMMAND.1` per command into this directory
    /// instead of printing `flowctl.1` on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's files (default: a new temporary directory, kept).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the tour beside an inbox that owns Meta's webhook: `chatwoot` has the sandbox play
    /// a Chatwoot inbox forwarding the Flow submissions to /api/chatwoot-webhook (Option B).
    #[arg(long, value_enum)]
    pub inbox: Option<DemoInbox>,
}

/// The inbox `flowctl demo --inbox` runs beside.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DemoInbox {
    /// A Chatwoot-based inbox (Chatwoot, Voom) forwarding its `message_created` webhooks.
    Chatwoot,
}

/// Where the Graph API is.
#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// The business number's Graph id.
    #[arg(long, env = "PHONE_NUMBER_ID", hide_env_values = true)]
    pub phone_number_id: Option<String>,

    /// Graph API base URL.
    #[arg(
        long = "graph-url",
        env = "GRAPH_API_URL",
        default_value = "https://graph.facebook.com",
        hide_env_values = true
    )]
    pub graph_url: String,

    /// Graph API version.
    #[arg(
        long = "graph-version",
        env = "GRAPH_API_VERSION",
        default_value = crate::graph::version::DEFAULT_VERSION,
        hide_env_values = true
    )]
    pub graph_version: String,

    /// Timeout of one Graph API request.
    #[arg(
        long = "graph-timeout",
        env = "GRAPH_API_TIMEOUT",
        value_name = "GRAPH_API_TIMEOUT",
        default_value = "20s",
        value_parser = crate::time::parse_ttl,
        hide_env_values = true
    )]
    pub graph_timeout: Duration,
}

/// How the Flow opens (`--flow-action`); `navigate` also needs `--screen`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FlowActionKind {
    /// The Flow opens with an INIT request to the data endpoint (`serve`).
    #[value(name = "data_exchange")]
    DataExchange,
    /// The Flow opens on the screen given by `--screen`.
    Navigate,
}

/// What is sent.
#[derive(Debug, Clone, Args)]
pub struct MessageArgs {
    /// The published Flow to send.
    #[arg(long, env = "FLOW_ID", hide_env_values = true)]
    pub flow_id: Option<String>,

    /// ISO region (e.g. MA) for numbers written without a country code.
    #[arg(long, env = "DEFAULT_COUNTRY", hide_env_values = true)]
    pub default_country: Option<String>,

    /// `data_exchange` (the Flow opens with an INIT to `serve`) or `navigate`.
    #[arg(
        long,
        env = "FLOW_ACTION",
        value_name = "FLOW_ACTION",
        default_value = "data_exchange",
        value_parser = Trimmed::<FlowActionKind>::new(),
        hide_env_values = true
    )]
    pub flow_action: FlowActionKind,

    /// First screen, required with `navigate`.
    #[arg(long, env = "FLOW_SCREEN", hide_env_values = true)]
    pub screen: Option<String>,

    /// Button text, at most 30 characters.
    #[arg(long, env = "FLOW_CTA", default_value = "Open", hide_env_values = true)]
    pub cta: String,

    /// Message text; `{name}` is replaced by the customer name.
    #[arg(
        long,
        env = "FLOW_BODY",
        default_value = "Hello {name}, please take a moment to answer.",
        hide_env_values = true
    )]
    pub body: String,

    /// Token lifetime (`30d`, `12h`).
    #[arg(
        long,
        env = "FLOW_TOKEN_TTL",
        value_name = "FLOW_TOKEN_TTL",
        default_value = "30d",
        value_parser = crate::time::parse_ttl,
        hide_env_values = true
    )]
    pub token_ttl: Duration,
}

/// How a template's Flow button is filled (`send` and `bulk` only: `serve` sends no
/// templates).
#[derive(Debug, Clone, Args)]
pub struct TemplateButtonArgs {
    /// Template mode: index of the Flow button among the template's buttons.
    #[arg(long, default_value_t = 0)]
    pub template_button_index: u32,

    /// Template mode: put the customer name in the template body's {{1}}.
    #[arg(long)]
    pub template_name_param: bool,

    /// Template mode: fill a template parameter from a CSV column (or a --data key):
    /// `body.N=COLUMN`, `header.N=COLUMN`, or `header.image|video|document=COLUMN` (a link).
    /// Repeatable.
    #[arg(long = "template-param", value_name = "SLOT=COLUMN")]
    pub template_params: Vec<String>,

    /// Template mode: the WhatsApp Business Account id, to check before sending anything
    /// that the template exists, is APPROVED and takes these parameters.
    #[arg(long, env = "WABA_ID", hide_env_values = true)]
    pub waba_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient phone number (E.164, digits with country code, or national with DEFAULT_COUNTRY).
    pub phone: String,

    /// Customer name (stored, and put in the message text).
    #[arg(long)]
    pub name: Option<String>,

    /// Initial Flow data, a JSON object.
    #[arg(long)]
    pub data: Option<String>,

    /// Send as this approved template with a Flow button (works outside the 24-hour window).
    #[arg(long, requires = "lang")]
    pub template: Option<String>,

    /// Template language code (e.g. `fr`).
    #[arg(long, requires = "template")]
    pub lang: Option<String>,

    /// Campaign the token belongs to.
    #[arg(long, default_value = "send")]
    pub campaign: String,

    /// Send even when the number is on the suppression list (the person opted out).
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub template_button: TemplateButtonArgs,

    #[command(flatten)]
    pub graph: GraphArgs,

    #[command(flatten)]
    pub message: MessageArgs,
}

#[derive(Debug, Args)]
pub struct BulkArgs {
    /// CSV file with a `phone_number` column (aliases: phone, phoneNumber) and optionally
    /// `customer_name` (name, customerName); other columns become the Flow's initial data.
    /// `-` reads it from stdin (then --campaign is required).
    pub csv: PathBuf,

    /// Messages per second (80 by default, the Cloud API's default per-number throughput).
    #[arg(long, default_value_t = 80.0)]
    pub rate: f64,

    /// Requests in flight at most (default: sized from the rate).
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Campaign name (default: the CSV file's stem). A phone is messaged once per campaign.
    #[arg(long)]
    pub campaign: Option<String>,

    /// Validate and count every row; send nothing, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// Write the failed and invalid rows, with their reason, to this CSV (UTF-8, with the
    /// input's delimiter; with a byte-order mark when the input was not plain UTF-8).
    #[arg(long)]
    pub failures: Option<PathBuf>,

    /// The CSV's field separator: `,`, `;`, `tab` or any single ASCII character (default:
    /// sniffed from the header line among `,`, `;` and tab).
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,

    /// The CSV's encoding (default: a byte-order mark says UTF-8 or UTF-16, else UTF-8 when
    /// the start of the file is valid UTF-8, else Windows-1252, as Excel saves it).
    #[arg(long, value_enum)]
    pub encoding: Option<CsvEncoding>,

    /// The header of the phone column, case-insensitive (default: phone_number, phone or
    /// phoneNumber).
    #[arg(long, value_name = "NAME")]
    pub phone_column: Option<String>,

    /// The header of the customer name column, case-insensitive (default: customer_name,
    /// name or customerName).
    #[arg(long, value_name = "NAME")]
    pub name_column: Option<String>,

    /// Also resend rows whose earlier outcome is unknown (the process died mid-request).
    #[arg(long)]
    pub resend_unknown: bool,

    /// Resend the rows that failed in an earlier run, refused at once or failed after Meta
    /// accepted them (a `failed` status), with a fresh token (the old one stays valid for a
    /// late completion). Rows whose outcome is unknown are left to --resend-unknown.
    #[arg(long)]
    pub retry_failed: bool,

    /// With --retry-failed: only the rows that failed with these Graph error codes, e.g.
    /// `131047,131026`.
    #[arg(
        long,
        requires = "retry_failed",
        value_delimiter = ',',
        value_name = "CODES"
    )]
    pub codes: Vec<i64>,

    /// How long to wait out a Graph API outage (5xx answers, refused or broken connections)
    /// before stopping the run; sends pause meanwhile and resume when the API answers again.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_outage: Duration,

    /// Send as this approved template with a Flow button.
    #[arg(long, requires = "lang")]
    pub template: Option<String>,

    /// Template language code.
    #[arg(long, requires = "template")]
    pub lang: Option<String>,

    #[command(flatten)]
    pub template_button: TemplateButtonArgs,

    #[command(flatten)]
    pub graph: GraphArgs,

    #[command(flatten)]
    pub message: MessageArgs,

    /// Send without asking: on a terminal, a run to more than 1,000 people asks first. (Off a
    /// terminal, in a script or a pipe, nothing is asked.)
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Send although the pre-flight check found the Flow not PUBLISHED, or more people in
    /// the file than the number's messaging limit.
    #[arg(long)]
    pub force: bool,

    /// PostgreSQL only (several workers on one campaign): how long the rows a worker has
    /// claimed stay its own without word from it. A worker renews its claims while it lives;
    /// the rows of a worker that died go to the others once this has passed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
}

/// `bulk --encoding`: how the CSV's bytes are read.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CsvEncoding {
    /// UTF-8, with or without a byte-order mark.
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// UTF-16: little-endian unless a byte-order mark says big-endian.
    #[value(name = "utf-16", alias = "utf16")]
    Utf16,
    /// Windows-1252 (what Excel writes as "CSV" in Western European locales).
    #[value(name = "windows-1252", alias = "cp1252")]
    Windows1252,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "FLOWCTL_LISTEN",
        default_value = "127.0.0.1:8080",
        hide_env_values = true
    )]
    pub listen: SocketAddr,

    /// Flow JSON whose routing_model drives the next screen.
    #[arg(long, env = "FLOW_JSON", hide_env_values = true)]
    pub flow_json: Option<PathBuf>,

    /// RSA private key file (PEM). Or set PRIVATE_KEY to the PEM text.
    #[arg(long, env = "PRIVATE_KEY_FILE", hide_env_values = true)]
    pub private_key_file: Option<PathBuf>,

    /// Run without APP_SECRET (requests are not authenticated: for local trials only).
    #[arg(long)]
    pub allow_unsigned: bool,

    /// Also put the answers in the `SUCCESS` screen's params. Off by default: those params
    /// reach the chat as the completion message's `response_json`, delivered to every app
    /// subscribed to the account's webhook; by default they carry only the `flow_token`.
    #[arg(long, env = "FLOW_SUCCESS_ANSWERS", hide_env_values = true)]
    pub success_answers: bool,

    /// Send each Flow request, with the recipient's phone number, name, campaign, data and
    /// answers so far, to your own handler at this URL, which decides the next screen (see
    /// the README, "Your own logic"). https://, or http:// on a loopback address. Signed
    /// with FLOW_FORWARD_SECRET (environment only) in X-Flowctl-Signature-256.
    #[arg(
        long,
        env = "FLOW_FORWARD_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub forward: Option<String>,

    /// Longest wait for the forward handler's answer (at most 9s: Meta gives up after 10s).
    #[arg(
        long = "forward-timeout",
        env = "FLOW_FORWARD_TIMEOUT",
        default_value = "5s",
        value_parser = crate::time::parse_ttl,
        hide_env_values = true
    )]
    pub forward_timeout: Duration,

    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,

    /// Folder for the photos and documents people attach to a Flow (PhotoPicker,
    /// DocumentPicker). Default: `media/` beside the database.
    #[arg(
        long,
        env = "FLOWCTL_MEDIA_DIR",
        value_name = "DIR",
        hide_env_values = true
    )]
    pub media_dir: Option<PathBuf>,

    /// Largest attached file downloaded, in bytes (larger ones are recorded as failed).
    #[arg(
        long,
        env = "FLOWCTL_MEDIA_MAX_BYTES",
        default_value_t = crate::server::media::DEFAULT_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1..),
        hide_env_values = true
    )]
    pub media_max_bytes: u64,

    /// Messages that put their sender on the suppression list when they are the whole
    /// message (case, accents and outer punctuation ignored), comma-separated. Default:
    /// STOP, UNSUBSCRIBE, ARRÊT, DÉSABONNER, BAJA, ALTO, توقف, إلغاء and a few more.
    #[arg(
        long,
        env = "FLOWCTL_STOP_KEYWORDS",
        value_delimiter = ',',
        value_name = "WORDS",
        hide_env_values = true
    )]
    pub stop_keywords: Vec<String>,

    /// Messages that lift their sender's suppression, comma-separated. Default: START,
    /// RESUME, REPRENDRE, ALTA, ابدأ and a few more.
    #[arg(
        long,
        env = "FLOWCTL_START_KEYWORDS",
        value_delimiter = ',',
        value_name = "WORDS",
        hide_env_values = true
    )]
    pub start_keywords: Vec<String>,

    #[command(flatten)]
    pub graph: GraphArgs,

    #[command(flatten)]
    pub message: MessageArgs,

    /// The lists built-in routing fills the Flow's dynamic data with (a JSON object of data
    /// key → list, or {"by": FIELD, "options": {VALUE: list}} for a dependent dropdown).
    #[arg(long, env = "FLOW_DATA", value_name = "FILE", hide_env_values = true)]
    pub flow_data: Option<PathBuf>,
}

/// Output format of `export`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// CSV output (the default).
    #[arg(long, group = "format")]
    pub csv: bool,
    /// A JSON array.
    #[arg(long, group = "format")]
    pub json: bool,
    /// One JSON object per line.
    #[arg(long, group = "format")]
    pub ndjson: bool,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only responses completed at or after this time (RFC 3339, a date, or `24h`/`7d` ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this campaign.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Write the sends that did not reach their recipient instead of the responses: refused,
    /// failed after Meta accepted them (a `failed` status), deferred by a per-user limit, or
    /// of unknown outcome; with the phone, the error code and, for a deferral, when to retry.
    #[arg(long, conflicts_with_all = ["include_unmatched", "since", "flow_json"])]
    pub failures: bool,
    /// Also export completions whose token is unknown (adds a `matched` column; their
    /// phone_number is the sender's number).
    #[arg(long)]
    pub include_unmatched: bool,
    /// Start the CSV with a UTF-8 byte-order mark (for Excel). CSV only: JSON must not
    /// carry one.
    #[arg(long, conflicts_with_all = ["json", "ndjson"])]
    pub bom: bool,
    /// Flow JSON whose field order orders the answer columns.
    #[arg(long, env = "FLOW_JSON", hide_env_values = true)]
    pub flow_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this campaign.
    #[arg(long)]
    pub campaign: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `flowctl report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this campaign (all of them otherwise).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Flow JSON whose labels and option titles name the questions and the bars.
    #[arg(long, env = "FLOW_JSON", hide_env_values = true)]
    pub flow_json: Option<PathBuf>,
    /// Show phone numbers in full (masked by default: the file may be emailed).
    #[arg(long)]
    pub show_phones: bool,
    /// The HTML file to write (atomically).
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Private key file to write (PKCS#8 PEM, mode 0600); the public key goes to FILE.pub.
    #[arg(long, default_value = "private.pem")]
    pub out: PathBuf,
    /// Overwrite an existing key file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Register the public key of the local private key with the Graph API.
    #[command(after_help = help::KEYS_UPLOAD)]
    Upload(KeysUploadArgs),
    /// Check that the registered public key matches the local private key.
    #[command(after_help = help::KEYS_CHECK)]
    Check(KeysArgs),
}

/// `flowctl keys upload`: the key, and whether to replace a different registered key without
/// asking.
#[derive(Debug, Args)]
pub struct KeysUploadArgs {
    #[command(flatten)]
    pub keys: KeysArgs,

    /// Replace a different key already registered without asking (on a terminal, upload asks
    /// first: Flows sent with the old key stop decrypting; off a terminal nothing is asked).
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// RSA private key file (PEM). Or set PRIVATE_KEY to the PEM text.
    #[arg(long, env = "PRIVATE_KEY_FILE", hide_env_values = true)]
    pub private_key_file: Option<PathBuf>,

    #[command(flatten)]
    pub graph: GraphArgs,
}

/// Which path the sandbox's simulated people complete the Flows through (`--complete-via`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompleteViaArg {
    /// The encrypted data endpoint only.
    Endpoint,
    /// The `nfm_reply` webhook only.
    Webhook,
    /// Both, as WhatsApp does for an endpoint-powered Flow.
    Both,
    /// Through a Chatwoot inbox that forwards its `message_created` webhook to
    /// --chatwoot-webhook (Option B: the inbox owns Meta's webhook).
    Chatwoot,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Inject a failure: `PHONE=CODE[@status|@early][@regain=MIN][%P][xN]`. CODE is a Graph
    /// error code, `http503`, `hang` or `reset`; `*` is any phone. `@status`: accept, then post
    /// a `failed` status to --webhook; `@early`: post it before the send's answer;
    /// `@regain=MIN`: a business-use-case header with that throttle time; `%P` (with `*`): the
    /// same P percent of the recipients; `xN`: only the first N requests (per recipient with
    /// `%P`). Repeatable.
    #[arg(long = "fail", value_name = "PHONE=CODE")]
    pub fail: Vec<String>,
    /// Append every request received to this NDJSON file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Check, for every message received, that its flow_token is already stored in this
    /// database (proves tokens are stored before the request leaves).
    #[arg(long)]
    pub check_db: Option<crate::store::DbTarget>,
    /// Play the recipients: after accepting a Flow message, post statuses and complete the
    /// Flow through the data endpoint, the webhook, or both.
    #[arg(long, value_enum)]
    pub complete_via: Option<CompleteViaArg>,
    /// The data endpoint to complete Flows through (e.g. http://127.0.0.1:8080/api/flow).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The message webhook to post statuses and completions to
    /// (e.g. http://127.0.0.1:8080/api/message-webhook). Signed with APP_SECRET.
    #[arg(long)]
    pub webhook: Option<String>,
    /// The data endpoint's public key (PEM), to encrypt as the WhatsApp client does.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// The Flow JSON the simulated people fill in.
    #[arg(long)]
    pub flow_json: Option<PathBuf>,
    /// How long a simulated person waits before acting on a message.
    #[arg(long, default_value_t = 200)]
    pub user_delay_ms: u64,
    /// Percent of the simulated people who leave a required answer out of their first
    /// submit, then fix it when the endpoint re-shows the screen with an error_message.
    #[arg(long, value_name = "PCT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub forget_required: u8,
    /// Percent of the simulated people whose client sends the final submit again (as after
    /// a lost SUCCESS answer); they check the second answer is the same SUCCESS.
    #[arg(long, value_name = "PCT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub retry_final_submit: u8,
    /// Percent of the simulated people who answer the message with "STOP" (a text message
    /// on --webhook) instead of filling in the Flow.
    #[arg(long = "stop", value_name = "PCT", default_value_t = 0, requires = "complete_via", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub stop_pct: u8,
    /// Data API version the simulated people speak: 3.0, or 4.0 (requests carry a
    /// flow_token_signature signed with APP_SECRET).
    #[arg(long, value_name = "VERSION", default_value = "3.0", value_parser = ["3.0", "4.0"])]
    pub data_api: String,
    /// Chatwoot's forward target for `--complete-via chatwoot`
    /// (e.g. http://127.0.0.1:8080/api/chatwoot-webhook/SECRET). Signed as Chatwoot signs
    /// when CHATWOOT_SIGNING_SECRET is set.
    #[arg(long)]
    pub chatwoot_webhook: Option<String>,
    /// A Flow the simulated account owns, as `ID` (PUBLISHED) or `ID=STATUS` (DRAFT,
    /// THROTTLED, BLOCKED, DEPRECATED), for `GET /{flow-id}` (what `doctor` reads).
    /// Repeatable.
    #[arg(long = "flow", value_name = "ID[=STATUS]")]
    pub flows: Vec<String>,
    /// The photos and documents this person attaches are served corrupted (one byte changed),
    /// to exercise bad media. Repeatable.
    #[arg(long = "tamper-media", value_name = "PHONE")]
    pub tamper_media: Vec<String>,
    /// Percent of the notifications posted to --webhook that are posted twice at the same
    /// moment, as Meta's at-least-once delivery does (a retry racing the first delivery).
    #[arg(long, value_name = "PCT", default_value_t = 0, requires = "webhook", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub duplicate_webhooks: u8,
    /// The number's throughput in messages per second: a message beyond it in any
    /// one-second window is refused with 130429, as Meta does past a number's throughput
    /// (80 by default). Unlimited without it.
    #[arg(long, value_name = "MPS", value_parser = clap::value_parser!(u32).range(1..))]
    pub throughput: Option<u32>,
}

/// Parses a [`ValueEnum`] with surrounding whitespace ignored: values also come from the
/// environment and `.env`, where a stray space is easy to miss. Help and errors still list
/// the possible values.
#[derive(Clone, Copy)]
struct Trimmed<E>(PhantomData<fn() -> E>);

impl<E> Trimmed<E> {
    /// The parser, for `value_parser = Trimmed::<E>::new()`.
    const fn new() -> Self {
        Trimmed(PhantomData)
    }
}

impl<E: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Trimmed<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<E, clap::Error> {
        let trimmed = value.to_str().map_or(value, |v| OsStr::new(v.trim()));
        clap::builder::EnumValueParser::<E>::new().parse_ref(cmd, arg, trimmed)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// The WhatsApp Business Account and the Graph API (`flows`, `templates`).
#[derive(Debug, Clone, Args)]
pub struct AccountArgs {
    /// The WhatsApp Business Account id (WABA) that owns the Flows and templates.
    #[arg(long, env = "WABA_ID", hide_env_values = true)]
    pub waba_id: Option<String>,

    #[command(flatten)]
    pub graph: GraphArgs,
}

/// `flowctl flows …`.
#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// List the account's Flows: id, status, name, categories (needs WABA_ID).
    List(AccountArgs),
    /// Show a Flow: name, status, endpoint_uri, validation errors.
    Get(FlowIdArgs),
    /// Create a draft Flow (needs WABA_ID).
    Create(FlowsCreateArgs),
    /// Upload a Flow JSON file as the Flow's flow.json; Meta's validation errors are shown
    /// at their line in the file.
    Update(FlowsUpdateArgs),
    /// Publish a draft Flow (it can no longer be changed).
    Publish(FlowIdArgs),
    /// Deprecate a published Flow (it can no longer be sent).
    Deprecate(FlowIdArgs),
    /// Delete a draft Flow.
    Delete(FlowIdArgs),
    /// Print the Flow's preview URL.
    Preview(FlowsPreviewArgs),
    /// Print the Flow endpoint's metrics: request count, errors, error rate, latency,
    /// availability.
    Metrics(FlowsMetricsArgs),
    /// Set the Flow's endpoint_uri (the data endpoint `serve` runs).
    SetEndpoint(FlowsSetEndpointArgs),
    /// Create or update the Flow named --name from FILE, only when FILE changed; validate;
    /// publish with --publish (needs WABA_ID).
    Deploy(FlowsDeployArgs),
    /// Check a Flow JSON file locally (JSON, screens, routing, terminal screens, data), before
    /// any upload.
    Validate(FlowsValidateArgs),
}

impl FlowsCommand {
    /// The account settings of the subcommand; `None` for `validate`, which is local.
    pub fn account(&self) -> Option<&AccountArgs> {
        match self {
            FlowsCommand::List(a) => Some(a),
            FlowsCommand::Get(a)
            | FlowsCommand::Publish(a)
            | FlowsCommand::Deprecate(a)
            | FlowsCommand::Delete(a) => Some(&a.account),
            FlowsCommand::Create(a) => Some(&a.account),
            FlowsCommand::Update(a) => Some(&a.account),
            FlowsCommand::Preview(a) => Some(&a.account),
            FlowsCommand::Metrics(a) => Some(&a.account),
            FlowsCommand::SetEndpoint(a) => Some(&a.account),
            FlowsCommand::Deploy(a) => Some(&a.account),
            FlowsCommand::Validate(_) => None,
        }
    }
}

/// A Flow by id.
#[derive(Debug, Args)]
pub struct FlowIdArgs {
    /// The Flow's id.
    pub flow_id: String,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows create`.
#[derive(Debug, Args)]
pub struct FlowsCreateArgs {
    /// The Flow's name (unique in the account).
    pub name: String,
    /// Categories: SIGN_UP, SIGN_IN, APPOINTMENT_BOOKING, LEAD_GENERATION, CONTACT_US,
    /// CUSTOMER_SUPPORT, SURVEY, SHOPPING, OTHER.
    #[arg(long, value_delimiter = ',', default_value = "OTHER")]
    pub categories: Vec<String>,
    /// The data endpoint's URL (endpoint_uri).
    #[arg(long, value_name = "URL")]
    pub endpoint_uri: Option<String>,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows update`.
#[derive(Debug, Args)]
pub struct FlowsUpdateArgs {
    /// The Flow's id.
    pub flow_id: String,
    /// The Flow JSON file to upload.
    #[arg(long, value_name = "FILE")]
    pub json: PathBuf,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows preview`.
#[derive(Debug, Args)]
pub struct FlowsPreviewArgs {
    /// The Flow's id.
    pub flow_id: String,
    /// Ask for a new preview URL (the old one stops working).
    #[arg(long)]
    pub invalidate: bool,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows metrics`.
#[derive(Debug, Args)]
pub struct FlowsMetricsArgs {
    /// The Flow's id.
    pub flow_id: String,
    /// One metric (ENDPOINT_REQUEST_COUNT, ENDPOINT_REQUEST_ERROR, ENDPOINT_REQUEST_ERROR_RATE,
    /// ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL, ENDPOINT_AVAILABILITY); all by default.
    #[arg(long)]
    pub metric: Option<String>,
    /// DAY, HOUR or LIFETIME.
    #[arg(long, default_value = "DAY")]
    pub granularity: String,
    /// First day (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Last day (YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows set-endpoint`.
#[derive(Debug, Args)]
pub struct FlowsSetEndpointArgs {
    /// The Flow's id.
    pub flow_id: String,
    /// The data endpoint's URL, e.g. https://example.com/api/flow.
    pub url: String,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows deploy`.
#[derive(Debug, Args)]
pub struct FlowsDeployArgs {
    /// The Flow JSON file.
    pub file: PathBuf,
    /// The Flow's name: the Flow is found by it, or created with it.
    #[arg(long)]
    pub name: String,
    /// Categories of a Flow created by this deploy.
    #[arg(long, value_delimiter = ',', default_value = "OTHER")]
    pub categories: Vec<String>,
    /// The data endpoint's URL, for a Flow created by this deploy.
    #[arg(long, value_name = "URL")]
    pub endpoint_uri: Option<String>,
    /// Publish the Flow once uploaded (a published Flow can no longer change).
    #[arg(long)]
    pub publish: bool,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `flows validate`.
#[derive(Debug, Args)]
pub struct FlowsValidateArgs {
    /// The Flow JSON file.
    pub file: PathBuf,
}

/// `flowctl templates …`.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the account's templates: name, language, status, category, quality.
    List(AccountArgs),
    /// Show a template (every language) with its components.
    Get(TemplateNameArgs),
    /// Create a template from a JSON file (name, language, category, components; a FLOW
    /// button takes flow_id or flow_name, navigate_screen, flow_action).
    Create(TemplatesCreateArgs),
    /// Delete a template (every language).
    Delete(TemplateNameArgs),
}

impl TemplatesCommand {
    /// The account settings of the subcommand.
    pub fn account(&self) -> &AccountArgs {
        match self {
            TemplatesCommand::List(a) => a,
            TemplatesCommand::Get(a) | TemplatesCommand::Delete(a) => &a.account,
            TemplatesCommand::Create(a) => &a.account,
        }
    }
}

/// A template by name.
#[derive(Debug, Args)]
pub struct TemplateNameArgs {
    /// The template's name.
    pub name: String,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `templates create`.
#[derive(Debug, Args)]
pub struct TemplatesCreateArgs {
    /// The template definition (JSON).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub account: AccountArgs,
}
