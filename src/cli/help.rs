//! The text after each command's options in `--help`: examples first, then the secrets the
//! command reads from the environment (or the settings file), by name. Secrets are never
//! flags, so `--help` would not mention them otherwise.

/// `flowctl --help`.
pub const MAIN: &str = "\
Examples:
  flowctl init                      # write a commented .env, asking each value
  flowctl doctor                    # check every setting and the account at once
  flowctl send +212612345678 --name Amina
  flowctl bulk contacts.csv --campaign spring
  flowctl serve --listen 0.0.0.0:8080
  flowctl --env-file prod.env stats
  flowctl report --out report.html  # the campaigns as one HTML page

Settings come from flags, then the environment, then ./.env (or --env-file PATH).
Run `flowctl COMMAND --help` for a command's options and the secrets it needs.";

/// `flowctl send --help`.
pub const SEND: &str = "\
Examples:
  flowctl send +212612345678 --name Amina
  flowctl send 0612345678 --default-country MA --data '{\"city\":\"Rabat\"}'
  flowctl send +33612345678 --template spring_survey --lang fr

Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN.";

/// `flowctl bulk --help`.
pub const BULK: &str = "\
Examples:
  flowctl bulk contacts.csv --dry-run
  flowctl bulk contacts.csv --campaign spring --rate 20 --failures failed.csv
  flowctl bulk export.csv --delimiter ';' --encoding windows-1252 --phone-column Téléphone
  flowctl bulk contacts.csv --campaign spring --retry-failed --codes 131047

Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN (not needed with --dry-run).";

/// `flowctl serve --help`.
pub const SERVE: &str = "\
Examples:
  flowctl serve --private-key-file private.pem
  flowctl serve --listen 0.0.0.0:8080 --flow-json flow.json
  flowctl serve --forward https://crm.example.com/flow-hook

Secrets (environment or .env only): APP_SECRET (required unless --allow-unsigned),
APP_SECRET_PREVIOUS (during a rotation), PRIVATE_KEY and PRIVATE_KEY_PASSPHRASE (instead of
or with --private-key-file), WEBHOOK_VERIFY_TOKEN, FLOWCTL_API_KEY (turns the CRM API on),
WHATSAPP_ACCESS_TOKEN (for /api/send-flow), FLOW_FORWARD_SECRET (with --forward).";

/// `flowctl export --help`.
pub const EXPORT: &str = "\
Examples:
  flowctl export --csv --out responses.csv --bom
  flowctl export --ndjson --since 24h --campaign spring
  flowctl export --failures --campaign spring --out failed.csv";

/// `flowctl stats --help`.
pub const STATS: &str = "\
Examples:
  flowctl stats
  flowctl stats --campaign spring --json";

/// `flowctl report --help`.
pub const REPORT: &str = "\
Examples:
  flowctl report --out report.html
  flowctl report --campaign spring --flow-json survey_flow.json --out spring.html

Phone numbers are masked unless --show-phones is given.";

/// `flowctl keygen --help`.
pub const KEYGEN: &str = "\
Examples:
  flowctl keygen
  flowctl keygen --out keys/endpoint.pem --force";

/// `flowctl keys --help`.
pub const KEYS: &str = "\
Examples:
  flowctl keys upload --private-key-file private.pem
  flowctl keys check --private-key-file private.pem

Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN, PRIVATE_KEY and
PRIVATE_KEY_PASSPHRASE (instead of or with --private-key-file).";

/// `flowctl keys upload --help`.
pub const KEYS_UPLOAD: &str = "\
Examples:
  flowctl keys upload --private-key-file private.pem

Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN, PRIVATE_KEY and
PRIVATE_KEY_PASSPHRASE (instead of or with --private-key-file).";

/// `flowctl keys check --help`.
pub const KEYS_CHECK: &str = "\
Examples:
  flowctl keys check --private-key-file private.pem

Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN, PRIVATE_KEY and
PRIVATE_KEY_PASSPHRASE (instead of or with --private-key-file).";

/// `flowctl sandbox --help`.
pub const SANDBOX: &str = "\
Examples:
  flowctl sandbox --listen 127.0.0.1:9090 --flow 1234567890123456
  flowctl sandbox --fail '*=131026%10' --record requests.ndjson
  flowctl sandbox --complete-via both --endpoint http://127.0.0.1:8080/api/flow \\
      --webhook http://127.0.0.1:8080/api/message-webhook --public-key private.pem.pub

Secrets (environment or .env only): APP_SECRET, to sign what it posts to --webhook.";

/// `flowctl demo --help`.
pub const DEMO: &str = "\
Examples:
  flowctl demo
  flowctl demo --dir /tmp/flowctl-demo";

/// `flowctl doctor --help`.
pub const DOCTOR: &str = "\
Examples:
  flowctl doctor
  flowctl doctor --json
  flowctl --env-file prod.env doctor

Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN, APP_SECRET, PRIVATE_KEY and
PRIVATE_KEY_PASSPHRASE (instead of or with --private-key-file), WEBHOOK_VERIFY_TOKEN.
None is ever printed.";

/// `flowctl init --help`.
pub const INIT: &str = "\
Examples:
  flowctl init
  flowctl init --yes
  flowctl --env-file prod.env init --force

Writes the secrets it is given (WHATSAPP_ACCESS_TOKEN, APP_SECRET, WEBHOOK_VERIFY_TOKEN,
FLOWCTL_API_KEY) into the file, which is created with mode 0600.";

/// `flowctl completions --help`.
pub const COMPLETIONS: &str = "\
Examples:
  flowctl completions bash > ~/.local/share/bash-completion/completions/flowctl
  flowctl completions zsh > ~/.zfunc/_flowctl
  flowctl completions fish > ~/.config/fish/completions/flowctl.fish
  flowctl completions powershell >> $PROFILE";

/// `flowctl man --help`.
pub const MAN: &str = "\
Examples:
  flowctl man | man -l -
  flowctl man --out /usr/local/share/man/man1";

/// `flowctl flows --help`.
pub const FLOWS: &str = "\
Examples:
  flowctl flows validate examples/survey_flow.json
  flowctl flows deploy examples/survey_flow.json --name survey --categories SURVEY --publish
  flowctl flows list
  flowctl flows update 1234567890123456 --json flow.json
  flowctl flows preview 1234567890123456 --invalidate
  flowctl flows metrics 1234567890123456 --granularity DAY --since 2026-11-01

WABA_ID names the WhatsApp Business Account (list, create, deploy).
Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN (not needed by validate).";

/// `flowctl templates --help`.
pub const TEMPLATES: &str = "\
Examples:
  flowctl templates list
  flowctl templates create --file survey_template.json
  flowctl templates get survey_invite
  flowctl templates delete survey_invite

WABA_ID names the WhatsApp Business Account.
Secrets (environment or .env only): WHATSAPP_ACCESS_TOKEN.";

/// `flowctl suppress --help`.
pub const SUPPRESS: &str = "\
Examples:
  flowctl suppress add +212610059159 --reason \"asked by phone\"
  flowctl suppress remove +212610059159
  flowctl suppress list --csv > suppressed.csv
  flowctl suppress import unsubscribed.csv";

/// `flowctl db` and `flowctl db migrate-to`.
pub const DB: &str = "\
Examples:
  flowctl db migrate-to postgres://flowctl@db.example/flowctl --db flowctl.db
  FLOWCTL_DB=data/flowctl.db flowctl db migrate-to \"$DATABASE_URL\"";
