//! `flowctl templates …`: list, read, create (from a JSON file, a FLOW button included) and
//! delete the account's message templates; and the check `send` and `bulk --template` run
//! before sending anything: the template exists in that language, is APPROVED, and the
//! parameters given match its components.

use std::io::Write;

use anyhow::Context;
use serde_json::Value;

use super::{exit, UsageError};
use crate::cli::TemplatesCommand;
use crate::config::AccountSettings;
use crate::graph::{GivenParams, GraphClient, Template};

/// Runs one `templates` subcommand.
pub async fn run(cmd: &TemplatesCommand, settings: AccountSettings) -> anyhow::Result<i32> {
    let graph = GraphClient::new(settings.graph.clone())?;
    let waba = settings.waba_id.clone().ok_or_else(|| {
        UsageError("missing WABA_ID (set WABA_ID or pass --waba-id): templates belong to the WhatsApp Business Account".into())
    })?;
    let mut out = std::io::stdout().lock();
    match cmd {
        TemplatesCommand::List(_) => {
            for t in graph.list_templates(&waba, None).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    text(&t, "name"),
                    text(&t, "language"),
                    text(&t, "status"),
                    text(&t, "category"),
                    t.pointer("/quality_score/score")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                )?;
            }
        }
        TemplatesCommand::Get(a) => {
            let found = graph.list_templates(&waba, Some(&a.name)).await?;
            if found.is_empty() {
                return Err(UsageError(format!("no template named {:?}", a.name)).into());
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
        }
        TemplatesCommand::Create(a) => {
            let source = std::fs::read_to_string(&a.file)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", a.file.display())))?;
            let definition: Value = serde_json::from_str(&source)
                .map_err(|e| UsageError(format!("{}: not valid JSON: {e}", a.file.display())))?;
            if !definition.is_object() {
                return Err(UsageError(format!(
                    "{}: expected a JSON object with name, language, category and components",
                    a.file.display()
                ))
                .into());
            }
            let v = graph
                .create_template(&waba, &definition)
                .await
                .with_context(|| format!("cannot create the template of {}", a.file.display()))?;
            writeln!(
                out,
                "created template {:?}: {} ({}, {})",
                text_of(&definition, "name"),
                text(&v, "id"),
                text(&v, "status"),
                text(&v, "category")
            )?;
        }
        TemplatesCommand::Delete(a) => {
            graph.delete_template(&waba, &a.name).await?;
            writeln!(out, "deleted template {:?} (every language)", a.name)?;
        }
    }
    Ok(exit::OK)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn text_of(v: &Value, key: &str) -> String {
    text(v, key).to_string()
}

/// The check before a template send: the template `t` exists in its language on the
/// account, is APPROVED, and the parameters match its components; each parameter's column
/// is among `columns` (the CSV header) when given. Without a WABA id there is nothing to
/// read the template from: a warning says so and the send goes on unchecked.
pub async fn preflight(
    graph: &GraphClient,
    t: &Template,
    columns: Option<&[String]>,
) -> anyhow::Result<()> {
    if let Some(cols) = columns {
        let missing: Vec<&str> = t
            .params
            .iter()
            .map(|p| p.column.as_str())
            .filter(|c| !cols.iter().any(|h| h.trim().eq_ignore_ascii_case(c)))
            .collect();
        if !missing.is_empty() {
            return Err(UsageError(format!(
                "--template-param names column(s) {} that the CSV does not have (its columns: {}): nothing was sent",
                missing.join(", "),
                cols.join(", ")
            ))
            .into());
        }
    }
    let Some(waba) = t.waba_id.as_deref() else {
        eprintln!(
            "flowctl: warning: template {:?} not checked before sending: set WABA_ID to check it exists, is APPROVED and takes these parameters",
            t.name
        );
        return Ok(());
    };
    let found = graph
        .list_templates(waba, Some(&t.name))
        .await
        .with_context(|| {
            format!(
                "cannot read template {:?} to check it before sending",
                t.name
            )
        })?;
    let Some(def) = found
        .iter()
        .find(|d| text(d, "language").eq_ignore_ascii_case(&t.language))
    else {
        let langs: Vec<&str> = found.iter().map(|d| text(d, "language")).collect();
        return Err(UsageError(if langs.is_empty() {
            format!(
                "template {:?} does not exist on the account (WABA {waba}): nothing was sent",
                t.name
            )
        } else {
            format!(
                "template {:?} has no {:?} translation (it has {}): check --lang; nothing was sent",
                t.name,
                t.language,
                langs.join(", ")
            )
        })
        .into());
    };
    let status = text(def, "status");
    if status != "APPROVED" {
        return Err(UsageError(format!(
            "template {:?} ({}) is {status}, not APPROVED: Meta refuses to send it; nothing was sent",
            t.name, t.language
        ))
        .into());
    }
    let shape = crate::graph::template_shape(def);
    let given = GivenParams {
        params: &t.params,
        name_param: t.name_param,
        button_index: t.button_index,
    };
    if let Err(problems) = crate::graph::check_template_params(&shape, &given) {
        return Err(UsageError(format!(
            "the parameters do not match template {:?} ({}): {}; nothing was sent",
            t.name,
            t.language,
            problems.join("; ")
        ))
        .into());
    }
    Ok(())
}
