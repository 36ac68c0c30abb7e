//! `flowctl flows …`: the account's Flows as code — list, read, create, upload the Flow
//! JSON (Meta's `validation_errors` shown at their line in the local file), publish,
//! deprecate, delete a draft, preview, metrics, the endpoint, an idempotent `deploy`, and a
//! local `validate`. The Graph calls are in `graph::flows`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::flow_check::{self, Severity};
use super::{exit, UsageError};
use crate::cli::FlowsCommand;
use crate::config::AccountSettings;
use crate::graph::{GraphClient, ValidationError};

/// Runs one `flows` subcommand.
pub async fn run(cmd: &FlowsCommand, settings: Option<AccountSettings>) -> anyhow::Result<i32> {
    if let FlowsCommand::Validate(args) = cmd {
        return validate(&args.file);
    }
    let settings = settings.context("the Graph API settings are missing")?;
    let graph = GraphClient::new(settings.graph.clone())?;
    let waba = || {
        settings.waba_id.clone().ok_or_else(|| {
            UsageError("missing WABA_ID (set WABA_ID or pass --waba-id): the Flows belong to the WhatsApp Business Account".into())
        })
    };
    let mut out = std::io::stdout().lock();
    match cmd {
        FlowsCommand::Validate(args) => validate(&args.file),
        FlowsCommand::List(_) => {
            let flows = graph.list_flows(&waba()?).await?;
            for f in &flows {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    text(f, "id"),
                    text(f, "status"),
                    text(f, "name"),
                    f.get("categories")
                        .and_then(Value::as_array)
                        .map(|c| c
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                )?;
            }
            Ok(exit::OK)
        }
        FlowsCommand::Get(a) => {
            let v = graph
                .flow_fields(&a.flow_id, crate::graph::FLOW_FIELDS)
                .await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            Ok(exit::OK)
        }
        FlowsCommand::Create(a) => {
            let id = graph
                .create_flow(&waba()?, &a.name, &a.categories, a.endpoint_uri.as_deref())
                .await?;
            writeln!(out, "created Flow {:?}: {id} (DRAFT)", a.name)?;
            Ok(exit::OK)
        }
        FlowsCommand::Update(a) => {
            let bytes = read(&a.json)?;
            upload(&graph, &a.flow_id, &a.json, &bytes, &mut out).await
        }
        FlowsCommand::Publish(a) => {
            graph.publish_flow(&a.flow_id).await?;
            writeln!(out, "published Flow {}", a.flow_id)?;
            Ok(exit::OK)
        }
        FlowsCommand::Deprecate(a) => {
            graph.deprecate_flow(&a.flow_id).await?;
            writeln!(out, "deprecated Flow {}", a.flow_id)?;
            Ok(exit::OK)
        }
        FlowsCommand::Delete(a) => {
            graph.delete_flow(&a.flow_id).await?;
            writeln!(out, "deleted draft Flow {}", a.flow_id)?;
            Ok(exit::OK)
        }
        FlowsCommand::Preview(a) => {
            let v = graph.flow_preview(&a.flow_id, a.invalidate).await?;
            let url = v
                .pointer("/preview/preview_url")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow::anyhow!("the answer has no preview.preview_url: {v}"))?;
            writeln!(out, "{url}")?;
            if let Some(exp) = v.pointer("/preview/expires_at").and_then(Value::as_str) {
                writeln!(out, "expires at {exp}")?;
            }
            Ok(exit::OK)
        }
        FlowsCommand::Metrics(a) => {
            let names: Vec<String> = match &a.metric {
                Some(m) => vec![m.to_ascii_uppercase()],
                None => crate::graph::FLOW_METRICS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            for name in &names {
                let v = graph
                    .flow_metric(
                        &a.flow_id,
                        name,
                        &a.granularity.to_ascii_uppercase(),
                        a.since.as_deref(),
                        a.until.as_deref(),
                    )
                    .await
                    .with_context(|| format!("metric {name}"))?;
                print_metric(&mut out, name, &v)?;
            }
            Ok(exit::OK)
        }
        FlowsCommand::SetEndpoint(a) => {
            graph
                .update_flow(&a.flow_id, &json!({ "endpoint_uri": a.url }))
                .await?;
            writeln!(out, "endpoint_uri of Flow {} set to {}", a.flow_id, a.url)?;
            Ok(exit::OK)
        }
        FlowsCommand::Deploy(a) => deploy(&graph, &waba()?, a, &mut out).await,
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())).into())
}

/// One line per data point: `NAME  TIMESTAMP  key=value …`.
fn print_metric(out: &mut impl Write, name: &str, v: &Value) -> anyhow::Result<()> {
    let points = v
        .pointer("/metric/data_points")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if points.is_empty() {
        writeln!(out, "{name}\t(no data)")?;
    }
    for p in points {
        let data: Vec<String> = p
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}={}",
                    d.get("key").and_then(Value::as_str).unwrap_or("?"),
                    d.get("value").map(Value::to_string).unwrap_or_default()
                )
            })
            .collect();
        writeln!(out, "{name}\t{}\t{}", text(&p, "timestamp"), data.join(" "))?;
    }
    Ok(())
}

/// `flows validate FILE`: the local findings; exit 1 when there is an error.
fn validate(path: &Path) -> anyhow::Result<i32> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| UsageError(format!("{} is not UTF-8 text", path.display())))?;
    let findings = flow_check::check(&text);
    let mut out = std::io::stdout().lock();
    for f in &findings {
        writeln!(out, "{}:{f}", path.display())?;
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        writeln!(out, "{}: {errors} error(s)", path.display())?;
        Ok(exit::FAILED)
    } else {
        writeln!(out, "{}: ok", path.display())?;
        Ok(exit::OK)
    }
}

/// Prints Meta's validation errors at their place in the local file: the file was uploaded
/// byte for byte, so Meta's lines and columns are the file's.
fn print_validation_errors(
    out: &mut impl Write,
    path: &Path,
    text: &str,
    errors: &[ValidationError],
) -> std::io::Result<()> {
    let lines: Vec<&str> = text.lines().collect();
    for e in errors {
        let place = match (e.line_start, e.column_start) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
            (Some(l), None) => format!("{}:{l}", path.display()),
            _ => path.display().to_string(),
        };
        writeln!(out, "{place}: {}: {}", e.error, e.message)?;
        if let Some(line) = e
            .line_start
            .and_then(|l| lines.get((l as usize).saturating_sub(1)))
        {
            writeln!(out, "    {line}")?;
            if let Some(c) = e.column_start {
                let width = match (e.line_end, e.column_end) {
                    (Some(le), Some(ce)) if Some(le) == e.line_start && ce > c => ce - c,
                    _ => 1,
                };
                writeln!(
                    out,
                    "    {}{}",
                    " ".repeat((c as usize).saturating_sub(1)),
                    "^".repeat(width as usize)
                )?;
            }
        }
    }
    Ok(())
}

/// Uploads `bytes` as the Flow JSON and shows what Meta found; exit 1 when it found errors.
async fn upload(
    graph: &GraphClient,
    flow_id: &str,
    path: &Path,
    bytes: &[u8],
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    let answer = graph
        .upload_flow_json(flow_id, bytes)
        .await
        .with_context(|| format!("cannot upload {} to Flow {flow_id}", path.display()))?;
    if answer.validation_errors.is_empty() {
        writeln!(out, "uploaded {} to Flow {flow_id}", path.display())?;
        return Ok(exit::OK);
    }
    let text = String::from_utf8_lossy(bytes);
    writeln!(
        out,
        "uploaded {} to Flow {flow_id}; Meta found {} problem(s):",
        path.display(),
        answer.validation_errors.len()
    )?;
    print_validation_errors(out, path, &text, &answer.validation_errors)?;
    Ok(exit::FAILED)
}

/// A short hex digest, for the lines `deploy` prints.
fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// `flows deploy FILE --name NAME [--publish]`: finds the Flow by name (or creates it),
/// uploads the file only when it differs from the Flow's current `flow.json` (compared by
/// SHA-256 with the downloaded asset), publishes when asked; "unchanged" otherwise.
async fn deploy(
    graph: &GraphClient,
    waba: &str,
    a: &crate::cli::FlowsDeployArgs,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    let bytes = read(&a.file)?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| UsageError(format!("{} is not UTF-8 text", a.file.display())))?;
    let local_errors: Vec<_> = flow_check::check(&text)
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    if !local_errors.is_empty() {
        for f in &local_errors {
            writeln!(out, "{}:{f}", a.file.display())?;
        }
        return Err(UsageError(format!(
            "{} has {} error(s) (see `flowctl flows validate`): nothing was sent",
            a.file.display(),
            local_errors.len()
        ))
        .into());
    }
    let flows = graph.list_flows(waba).await?;
    let existing = flows
        .iter()
        .find(|f| f.get("name").and_then(Value::as_str) == Some(a.name.as_str()));
    let (id, status, created) = match existing {
        Some(f) => (text_of(f, "id"), text_of(f, "status"), false),
        None => {
            let id = graph
                .create_flow(waba, &a.name, &a.categories, a.endpoint_uri.as_deref())
                .await?;
            writeln!(out, "created Flow {:?}: {id}", a.name)?;
            (id, "DRAFT".to_string(), true)
        }
    };
    let current = if created {
        None
    } else {
        current_asset(graph, &id).await?
    };
    let changed = current.as_deref().map(Sha256::digest) != Some(Sha256::digest(&bytes));
    if !changed {
        writeln!(
            out,
            "unchanged: Flow {:?} ({id}, {status}) already has this flow.json (sha256 {}…)",
            a.name,
            digest(&bytes)
        )?;
    } else {
        if status != "DRAFT" {
            return Err(UsageError(format!(
                "Flow {:?} ({id}) is {status} and Meta does not change a published Flow's JSON: deploy it under a new --name (e.g. {}-v2), or deprecate it first",
                a.name, a.name
            ))
            .into());
        }
        let code = upload(graph, &id, &a.file, &bytes, out).await?;
        if code != exit::OK {
            return Ok(code);
        }
        writeln!(out, "sha256 {}…", digest(&bytes))?;
    }
    if a.publish {
        if status == "PUBLISHED" && !changed {
            writeln!(out, "already published")?;
        } else {
            graph
                .publish_flow(&id)
                .await
                .with_context(|| format!("cannot publish Flow {id}"))?;
            writeln!(out, "published Flow {:?} ({id})", a.name)?;
        }
    }
    Ok(exit::OK)
}

fn text_of(v: &Value, key: &str) -> String {
    text(v, key).to_string()
}

/// The Flow's current `flow.json`, when it has one.
async fn current_asset(graph: &GraphClient, flow_id: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let assets = graph.flow_assets(flow_id).await?;
    let Some(asset) = assets.iter().find(|a| a.asset_type == "FLOW_JSON") else {
        return Ok(None);
    };
    let bytes = graph
        .download_asset(&asset.download_url)
        .await
        .with_context(|| format!("cannot download the current flow.json of Flow {flow_id}"))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_are_shown_under_the_local_line() {
        let text = "{\n  \"version\": \"7.2\",\n  \"screens\": [{\"type\": \"Nope\"}]\n}";
        let e = ValidationError {
            error: "INVALID_PROPERTY_VALUE".into(),
            message: "Invalid value found for property 'type'.".into(),
            line_start: Some(3),
            line_end: Some(3),
            column_start: Some(25),
            column_end: Some(29),
            ..Default::default()
        };
        let mut out = Vec::new();
        print_validation_errors(&mut out, Path::new("flow.json"), text, &[e]).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "flow.json:3:25: INVALID_PROPERTY_VALUE: Invalid value found for property 'type'."
        );
        assert_eq!(lines[1], "      \"screens\": [{\"type\": \"Nope\"}]");
        assert_eq!(lines[2], format!("    {}^^^^", " ".repeat(24)));
    }
}
