//! `flowctl init`: writes a commented settings file (`.env`, or `--env-file`), mode 0600.
//!
//! Each value comes from the environment when it is set there; otherwise, without `--yes`,
//! it is asked on stdin (a terminal gets a prompt on stderr, and secrets are typed without
//! echo); otherwise the file gets the default, or an empty placeholder that `doctor` then
//! reports as missing. An existing file is replaced only with `--force`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use super::{exit, UsageError};
use crate::atomic_file::{AtomicFile, AtomicFileError, Mode};
use crate::cli::InitArgs;

/// One setting the file describes.
struct Setting {
    var: &'static str,
    /// The comment above it: what it is and where to find it.
    help: &'static str,
    /// Typed without echo and never printed back.
    secret: bool,
    /// What is written when no value is given; `None`: an empty placeholder.
    default: Option<&'static str>,
    /// Written commented out when no value is given (optional, or flowctl's default).
    optional: bool,
}

const fn setting(var: &'static str, help: &'static str) -> Setting {
    Setting {
        var,
        help,
        secret: false,
        default: None,
        optional: false,
    }
}

/// The settings, by section, in the order they are asked.
const SECTIONS: &[(&str, &[Setting])] = &[
    (
        "Graph API (send, bulk, keys, doctor)",
        &[
            setting(
                "PHONE_NUMBER_ID",
                "The business number's id: WhatsApp > API Setup > \"Phone number ID\" (not the phone number).",
            ),
            Setting {
                secret: true,
                ..setting(
                    "WHATSAPP_ACCESS_TOKEN",
                    "Access token with whatsapp_business_messaging and whatsapp_business_management (a system user token does not expire). Secret.",
                )
            },
            Setting {
                default: Some(crate::graph::version::DEFAULT_VERSION),
                optional: true,
                ..setting("GRAPH_API_VERSION", "Graph API version.")
            },
        ],
    ),
    (
        "The Flow",
        &[
            setting("FLOW_ID", "The published Flow to send: WhatsApp Manager > Flows."),
            Setting {
                optional: true,
                ..setting(
                    "DEFAULT_COUNTRY",
                    "ISO region (e.g. MA) for numbers written without a country code.",
                )
            },
        ],
    ),
    (
        "serve (data endpoint, webhook, CRM API)",
        &[
            Setting {
                secret: true,
                ..setting(
                    "APP_SECRET",
                    "App secret (App settings > Basic): checks Meta's signature on every request. Secret.",
                )
            },
            Setting {
                secret: true,
                ..setting(
                    "WEBHOOK_VERIFY_TOKEN",
                    "Any string; enter the same one as the webhook's verify token in the app. Secret.",
                )
            },
            Setting {
                default: Some("private.pem"),
                ..setting(
                    "PRIVATE_KEY_FILE",
                    "The data endpoint's private key (`flowctl keygen` writes it).",
                )
            },
            Setting {
                secret: true,
                optional: true,
                ..setting(
                    "FLOWCTL_API_KEY",
                    "Turns serve's CRM API on; callers send it as a bearer token. Secret.",
                )
            },
            Setting {
                default: Some("127.0.0.1:8080"),
                optional: true,
                ..setting("FLOWCTL_LISTEN", "Address serve listens on.")
            },
            Setting {
                default: Some("flowctl.db"),
                optional: true,
                ..setting(
                    "FLOWCTL_DB",
                    "Database: a SQLite file, or postgres://user:password@host/db for several replicas and workers.",
                )
            },
        ],
    ),
];

/// Writes the settings file at `path` (`.env` unless `--env-file` names another).
pub fn run(path: &Path, args: &InitArgs) -> anyhow::Result<i32> {
    if path.exists() && !args.force {
        return Err(UsageError(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        ))
        .into());
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut answers = (!args.yes).then(|| stdin.lock());
    let mut values = Vec::new();
    for (_, settings) in SECTIONS {
        for s in *settings {
            let found = crate::config::init_value(s.var);
            let value = match (&found, answers.as_mut()) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(input)) => ask(input, s, terminal)?,
                (None, None) => None,
            };
            values.push(value);
        }
    }
    let content = render(&values);
    let mut file = AtomicFile::create(path, ".flowctl-init", Mode::Exactly(0o600))?;
    file.write_all(content.as_bytes())?;
    let written = if args.force {
        file.commit()
    } else {
        file.commit_new()
    };
    match written {
        Err(AtomicFileError::AlreadyExists { path }) => {
            return Err(UsageError(format!(
                "{} already exists; pass --force to replace it",
                path.display()
            ))
            .into())
        }
        other => other?,
    }
    let empty: Vec<&str> = SECTIONS
        .iter()
        .flat_map(|(_, s)| s.iter())
        .zip(&values)
        .filter(|(s, v)| !s.optional && s.default.is_none() && v.is_none())
        .map(|(s, _)| s.var)
        .collect();
    let todo = if empty.is_empty() {
        String::new()
    } else {
        format!("; still to fill in: {}", empty.join(", "))
    };
    eprintln!(
        "flowctl: wrote {} (mode 0600){todo}. Next: flowctl doctor",
        path.display()
    );
    Ok(exit::OK)
}

/// Asks one value: a prompt on a terminal, one line of stdin either way; an empty answer
/// (or the end of input) keeps the default.
fn ask(input: &mut impl BufRead, s: &Setting, terminal: bool) -> anyhow::Result<Option<String>> {
    if terminal {
        let default = s.default.map(|d| format!(" [{d}]")).unwrap_or_default();
        eprint!("{} — {}\n{}{default}: ", s.var, s.help, s.var);
        let _ = std::io::stderr().flush();
    }
    let hide = terminal && s.secret;
    if hide {
        set_echo(false);
    }
    let mut line = String::new();
    let read = input.read_line(&mut line);
    if hide {
        set_echo(true);
        eprintln!();
    }
    read?;
    let line = line.trim();
    Ok((!line.is_empty()).then(|| line.to_string()))
}

/// Turns the terminal's echo off or on (`stty`, on the terminal that is stdin), so that a
/// secret being typed is not shown. Without `stty` the secret is echoed: never fatal.
fn set_echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}

/// The file: a header, then each section with each setting's comment and line.
fn render(values: &[Option<String>]) -> String {
    let mut out = String::from(
        "# flowctl settings, written by `flowctl init`.\n\
         # Flags and the environment override this file. Secrets are read only from here or\n\
         # the environment, never from flags: keep this file private (it is mode 0600) and out\n\
         # of version control. An empty value counts as unset; `flowctl doctor` checks them all.\n",
    );
    let mut values = values.iter();
    for (title, settings) in SECTIONS {
        out.push_str(&format!("\n# --- {title} ---\n"));
        for s in *settings {
            let value = values.next().cloned().flatten();
            out.push_str(&format!("# {}\n", s.help));
            match (value, s.default) {
                (Some(v), _) => out.push_str(&format!("{}={}\n", s.var, quote(&v))),
                (None, Some(d)) if s.optional => out.push_str(&format!("# {}={d}\n", s.var)),
                (None, Some(d)) => out.push_str(&format!("{}={d}\n", s.var)),
                (None, None) if s.optional => out.push_str(&format!("# {}=\n", s.var)),
                (None, None) => out.push_str(&format!("{}=\n", s.var)),
            }
        }
    }
    out
}

/// A value as `.env` reads it back unchanged: bare when plain, else single-quoted (taken
/// literally), else double-quoted with `\`, `"` and `$` escaped.
fn quote(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/+@,=".contains(c));
    if plain {
        v.to_string()
    } else if !v.contains('\'') && !v.contains('\n') {
        format!("'{v}'")
    } else {
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
            .replace('\n', "\\n");
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_read_back_unchanged() {
        for v in [
            "EAAplain123",
            "with space",
            "has#hash",
            "dollar$HOME",
            "it's",
            "both ' and \" and $X and \\",
        ] {
            let line = format!("K={}\n", quote(v));
            let read: Vec<(String, String)> = dotenvy::from_read_iter(line.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(read, [("K".to_string(), v.to_string())], "{line}");
        }
    }

    #[test]
    fn placeholders_and_defaults() {
        let n = SECTIONS.iter().map(|(_, s)| s.len()).sum();
        let mut values = vec![None; n];
        values[0] = Some("106540352242922".to_string());
        let text = render(&values);
        assert!(
            text.contains("\nPHONE_NUMBER_ID=106540352242922\n"),
            "{text}"
        );
        assert!(text.contains("\nFLOW_ID=\n"), "{text}");
        assert!(
            text.contains("\n# FLOWCTL_LISTEN=127.0.0.1:8080\n"),
            "{text}"
        );
        assert!(text.contains("\nPRIVATE_KEY_FILE=private.pem\n"), "{text}");
    }
}
