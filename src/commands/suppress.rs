//! `flowctl suppress add|remove|list|import`: the suppression list by hand.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;

use super::bulk::CsvRows;
use super::export::escape_formula;
use super::{exit, UsageError};
use crate::cli::{
    SuppressAddArgs, SuppressCommand, SuppressImportArgs, SuppressListArgs, SuppressPhoneArgs,
};
use crate::config::CsvInput;
use crate::phone::{DefaultCountry, Phone};
use crate::store::{source, Store, Suppression};

/// Runs one `suppress` subcommand against the database at `db`.
pub fn run(db: &crate::store::DbTarget, command: &SuppressCommand) -> anyhow::Result<i32> {
    match command {
        SuppressCommand::Add(args) => add(db, args),
        SuppressCommand::Remove(args) => remove(db, args),
        SuppressCommand::List(args) => list(db, args),
        SuppressCommand::Import(args) => import(db, args),
    }
}

/// `DEFAULT_COUNTRY`, when set.
fn country(value: Option<&str>) -> anyhow::Result<Option<DefaultCountry>> {
    match value.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => c
            .parse::<DefaultCountry>()
            .map(Some)
            .map_err(|e| UsageError(format!("invalid DEFAULT_COUNTRY {c:?}: {e}")).into()),
    }
}

fn phone(text: &str, country_code: Option<&str>) -> anyhow::Result<Phone> {
    Phone::parse(text, country(country_code)?).map_err(|e| UsageError(e.to_string()).into())
}

fn open(db: &crate::store::DbTarget) -> anyhow::Result<Store> {
    Store::open(db).with_context(|| format!("opening {}", db))
}

fn add(db: &crate::store::DbTarget, args: &SuppressAddArgs) -> anyhow::Result<i32> {
    let phone = phone(&args.phone, args.default_country.as_deref())?;
    let mut store = open(db)?;
    if store.suppress(phone.e164(), &args.reason, source::MANUAL)? {
        eprintln!("flowctl: {phone} suppressed");
    } else {
        let held = store.suppression(phone.e164())?;
        let since = held.map(|s| format!(" since {} ({})", s.at, s.reason));
        eprintln!(
            "flowctl: {phone} was already suppressed{}",
            since.unwrap_or_default()
        );
    }
    Ok(exit::OK)
}

fn remove(db: &crate::store::DbTarget, args: &SuppressPhoneArgs) -> anyhow::Result<i32> {
    let phone = phone(&args.phone, args.default_country.as_deref())?;
    let mut store = open(db)?;
    if store.unsuppress(phone.e164())? {
        eprintln!("flowctl: {phone} is no longer suppressed");
        Ok(exit::OK)
    } else {
        eprintln!("flowctl: {phone} was not suppressed");
        Ok(exit::FAILED)
    }
}

fn list(db: &crate::store::DbTarget, args: &SuppressListArgs) -> anyhow::Result<i32> {
    let store = super::open_db_read_only(db)?;
    let entries = store.suppressions()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<serde_json::Value> = entries.iter().map(json_row).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if args.csv {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(["phone_number", "reason", "source", "suppressed_at"])?;
        for s in &entries {
            // The reason may quote what a person wrote: never a formula in a spreadsheet.
            w.write_record([
                s.phone.as_str(),
                &escape_formula(&s.reason),
                &s.source,
                &s.at.to_string(),
            ])?;
        }
        w.flush()?;
    } else {
        for s in &entries {
            writeln!(out, "{}\t{}\t{}\t{}", s.phone, s.at, s.source, s.reason)?;
        }
        eprintln!("flowctl: {} suppressed", entries.len());
    }
    Ok(exit::OK)
}

fn json_row(s: &Suppression) -> serde_json::Value {
    serde_json::json!({
        "phone_number": s.phone,
        "reason": s.reason,
        "source": s.source,
        "suppressed_at": s.at,
    })
}

/// Imports a CSV with a phone column, or a file of one number a line. Bad lines are named
/// (line number and value) and skipped; the good ones are imported all the same.
fn import(db: &crate::store::DbTarget, args: &SuppressImportArgs) -> anyhow::Result<i32> {
    let country_code = country(args.default_country.as_deref())?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    let (phones, bad) = if has_phone_header(&text) {
        from_csv(&args.file, country_code)?
    } else {
        from_lines(&text, country_code)
    };
    for (line, why) in &bad {
        eprintln!("flowctl: {} line {line}: {why}", args.file.display());
    }
    let mut store = open(db)?;
    let mut added = 0;
    for p in &phones {
        if store.suppress(p.e164(), &args.reason, source::IMPORT)? {
            added += 1;
        }
    }
    eprintln!(
        "flowctl: {added} suppressed, {} already were, {} invalid",
        phones.len() - added,
        bad.len()
    );
    Ok(if bad.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// True when the first line names a phone column, as `bulk`'s CSV does.
fn has_phone_header(text: &str) -> bool {
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    first
        .split([',', ';', '\t'])
        .map(|h| h.trim().trim_matches('"').to_ascii_lowercase())
        .any(|h| matches!(h.as_str(), "phone_number" | "phone" | "phonenumber"))
}

type Parsed = (Vec<Phone>, Vec<(u64, String)>);

fn from_csv(path: &Path, country_code: Option<DefaultCountry>) -> anyhow::Result<Parsed> {
    let mut rows = CsvRows::open(path, country_code, &CsvInput::default()).map_err(UsageError)?;
    let (mut phones, mut bad) = (Vec::new(), Vec::new());
    while let Some(next) = rows.next_line() {
        let line = next.map_err(UsageError)?;
        match line.parsed {
            Ok(r) => phones.push(r.phone),
            Err(why) => bad.push((line.line, why)),
        }
    }
    Ok((phones, bad))
}

fn from_lines(text: &str, country_code: Option<DefaultCountry>) -> Parsed {
    let (mut phones, mut bad) = (Vec::new(), Vec::new());
    for (i, raw) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let value = raw.trim();
        if value.is_empty() || value.starts_with('#') {
            continue;
        }
        match Phone::parse(value, country_code) {
            Ok(p) => phones.push(p),
            Err(e) => bad.push((i as u64 + 1, e.to_string())),
        }
    }
    (phones, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_header_makes_a_csv_and_lines_are_numbers() {
        assert!(has_phone_header("phone_number,name\n+212610059159,A\n"));
        assert!(has_phone_header("\u{feff}\"Phone\";x\n"));
        assert!(!has_phone_header("+212610059159\n+33612345678\n"));
        let (phones, bad) = from_lines("+212610059159\n\n# comment\nnot a number\n", None);
        assert_eq!(phones.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 4);
    }
}
