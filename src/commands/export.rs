//! `flowctl export`: the completed responses with their phone numbers, as CSV, JSON or NDJSON.
//!
//! Two passes over one read snapshot: SQLite computes the union of answer keys (the CSV
//! header), then the rows are streamed one at a time, so memory stays flat whatever the number
//! of responses.
//!
//! CSV cells:
//! - fixed columns `flow_token,phone_number,customer_name,campaign,source,completed_at`, then
//!   `matched` with `--include-unmatched` (an unmatched row's phone is the sender's number),
//!   then one column per answer key: Flow JSON order with `--flow-json`, then keys the Flow
//!   does not declare in order of first appearance. An answer key equal to a fixed column name
//!   gets the header `answers.<key>`. When some exported response has attached files (Flow
//!   media), two last columns: `media_files` (the stored files' paths, `;`-separated) and
//!   `media_errors` (`field/media_id: reason` of each file not stored).
//! - answers: strings as they are, numbers as stored, booleans `true`/`false`, null empty;
//!   a list of strings/numbers/booleans joined with `;` (unless an item contains `;`); any
//!   other list or object as compact JSON.
//! - a cell starting with `=`, `+`, `-`, `@`, tab or carriage return is prefixed with `'` so a
//!   spreadsheet shows it as text instead of evaluating it (OWASP "CSV injection"). The
//!   `phone_number` column is never altered (`+212…` is data, not a formula).
//!
//! JSON and NDJSON carry the same fixed fields (`matched` only with `--include-unmatched`) and
//! an `answers` object with the raw values, unescaped, and `media_files` (each attached
//! file's field, media id, state, path, size, error) when the response has files.

use std::borrow::Cow;

use crate::answer_text::render_answer;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};

#[path = "export_failures.rs"]
mod failures;

use super::{exit, UsageError};
use crate::atomic_file::{AtomicFile, Mode};
use crate::cli::{ExportArgs, ExportFormat};
use crate::flow_json::FlowJson;
use crate::store::{ExportFilter, ExportSnapshot, MediaRecord, MediaState, Store, StoredResponse};
use crate::time::Timestamp;

/// The fixed columns, in order.
pub const FIXED_COLUMNS: [&str; 6] = [
    "flow_token",
    "phone_number",
    "customer_name",
    "campaign",
    "source",
    "completed_at",
];

/// The column added with `--include-unmatched`.
pub const MATCHED_COLUMN: &str = "matched";

/// Characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Runs `flowctl export`.
pub fn run(db: &crate::store::DbTarget, args: &ExportArgs) -> anyhow::Result<i32> {
    let format = format_of(args);
    let since = args
        .since
        .as_deref()
        .map(crate::time::parse_since)
        .transpose()
        .map_err(|e| UsageError(format!("--since: {e}")))?;
    let flow_order = match &args.flow_json {
        Some(path) => Some(
            FlowJson::load(path)
                .map_err(|e| UsageError(format!("--flow-json {}: {e}", path.display())))?
                .field_order(),
        ),
        None => None,
    };
    let filter = ExportFilter {
        since,
        campaign: args.campaign.clone(),
        include_unmatched: args.include_unmatched,
    };
    let store = super::open_db_read_only(db)?;
    // Open the destination before reading, so a bad --out fails fast.
    let sink = match &args.out {
        Some(path) if is_special(path) => Sink::Writer(Box::new(BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| UsageError(format!("cannot write --out {}: {e}", path.display())))?,
        ))),
        Some(path) => Sink::File(create_out(path)?),
        None => Sink::Stdout(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    };
    let result = if args.failures {
        failures::write(&store, args.campaign.as_deref(), format, args.bom, sink)
    } else {
        export(
            &store,
            &filter,
            flow_order.as_deref(),
            format,
            args.bom,
            sink,
        )
    };
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(exit::OK),
        Err(e) => Err(e),
        Ok(()) => Ok(exit::OK),
    }
}

/// A destination that exists and is not a regular file (`/dev/null`, `/dev/stdout`, a FIFO):
/// written in place, since renaming a file over it would replace the device.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

fn format_of(args: &ExportArgs) -> ExportFormat {
    if args.json {
        ExportFormat::Json
    } else if args.ndjson {
        ExportFormat::Ndjson
    } else {
        ExportFormat::Csv
    }
}

/// A reader that quit (`flowctl export | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(
                |e| matches!(e.kind(), csv::ErrorKind::Io(e) if e.kind() == io::ErrorKind::BrokenPipe),
            )
            // JSON and NDJSON rows are written by serde_json, whose error wraps the I/O one.
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

/// Writes the selected responses of `store` to `sink` in `format`, then commits the sink
/// (for a file: sync and rename into place). Used by the command and the benchmark.
pub fn export(
    store: &Store,
    filter: &ExportFilter,
    flow_order: Option<&[String]>,
    format: ExportFormat,
    bom: bool,
    sink: Sink,
) -> anyhow::Result<()> {
    let snapshot = store.export_snapshot()?;
    let mut out = sink;
    if bom {
        out.write_all("\u{feff}".as_bytes())?;
    }
    match format {
        ExportFormat::Csv => {
            let keys = answer_columns(snapshot.answer_keys(filter)?, flow_order);
            let media = snapshot.has_media(filter)?;
            let mut csv = csv::WriterBuilder::new()
                .buffer_capacity(1 << 16)
                .from_writer(&mut out);
            let mut head = header(&keys, filter.include_unmatched);
            if media {
                head.extend(MEDIA_COLUMNS.iter().map(|c| c.to_string()));
            }
            csv.write_record(head)?;
            let width = FIXED_COLUMNS.len() + 1 + keys.len() + MEDIA_COLUMNS.len();
            snapshot.for_each_response(filter, |r| {
                let mut record = Vec::with_capacity(width);
                csv_record(&r, &keys, filter.include_unmatched, &mut record);
                if media {
                    let files = media_of(&snapshot, &r)?;
                    record.extend(media_cells(&files).map(Cow::Owned));
                }
                csv.write_record(record.iter().map(|c| c.as_bytes()))
                    .context("writing the export")
            })?;
            csv.flush()?;
        }
        ExportFormat::Json | ExportFormat::Ndjson => {
            let array = format == ExportFormat::Json;
            let mut first = true;
            if array {
                out.write_all(b"[")?;
            }
            snapshot.for_each_response(filter, |r| {
                let sep: &[u8] = match (array, first) {
                    (true, true) => b"\n",
                    (true, false) => b",\n",
                    (false, _) => b"",
                };
                first = false;
                out.write_all(sep)?;
                let files = media_of(&snapshot, &r)?;
                let mut row = JsonRow::new(&r, filter.include_unmatched);
                row.media_files = &files;
                serde_json::to_writer(&mut out, &row)?;
                if !array {
                    out.write_all(b"\n")?;
                }
                Ok::<_, anyhow::Error>(())
            })?;
            if array {
                out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
            }
        }
    }
    drop(snapshot);
    out.commit()
}

/// One response as a JSON/NDJSON object.
#[derive(Serialize)]
struct JsonRow<'a> {
    flow_token: Option<&'a str>,
    phone_number: Option<&'a str>,
    customer_name: Option<&'a str>,
    campaign: Option<&'a str>,
    source: &'a str,
    completed_at: &'a Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<bool>,
    answers: &'a Map<String, Value>,
    /// The attached files (Flow media), only when there are some.
    #[serde(skip_serializing_if = "<[MediaRecord]>::is_empty")]
    media_files: &'a [MediaRecord],
}

impl<'a> JsonRow<'a> {
    fn new(r: &'a StoredResponse, include_unmatched: bool) -> JsonRow<'a> {
        JsonRow {
            flow_token: r.token.as_deref(),
            phone_number: phone_of(r),
            customer_name: r.customer_name.as_deref(),
            campaign: r.campaign.as_deref(),
            source: &r.source,
            completed_at: &r.completed_at,
            matched: include_unmatched.then_some(r.matched),
            answers: &r.answers,
            media_files: &[],
        }
    }
}

/// The media columns, after the answer columns (present only when some exported response
/// has attached files): the stored files' paths, and why the others are missing.
pub const MEDIA_COLUMNS: [&str; 2] = ["media_files", "media_errors"];

/// The attached files of a response (none for an unmatched completion).
fn media_of(snapshot: &ExportSnapshot<'_>, r: &StoredResponse) -> anyhow::Result<Vec<MediaRecord>> {
    match (&r.token, r.matched) {
        (Some(token), true) => Ok(snapshot.media_of(token)?),
        _ => Ok(Vec::new()),
    }
}

/// The two media cells: stored paths joined with `;`, then `field/media_id: reason` of each
/// file not stored (failed, or still pending), joined with `;`.
fn media_cells(files: &[MediaRecord]) -> impl Iterator<Item = String> {
    let paths: Vec<&str> = files.iter().filter_map(|f| f.path.as_deref()).collect();
    let errors: Vec<String> = files
        .iter()
        .filter(|f| f.state != MediaState::Done)
        .map(|f| {
            let why = match f.state {
                MediaState::Pending => "pending",
                _ => f.error.as_deref().unwrap_or("failed"),
            };
            format!("{}/{}: {why}", f.field, f.media_id).replace(';', ",")
        })
        .collect();
    [paths.join(";"), errors.join(";")]
        .into_iter()
        .map(|c| escape_formula(&c).into_owned())
}

/// The phone of a row: the joined phone, or for an unmatched completion the sender's id.
fn phone_of(r: &StoredResponse) -> Option<&str> {
    r.phone.as_deref().or(r.sender.as_deref())
}

/// The answer columns: with a Flow order, the Flow's fields that occur in the data first (in
/// Flow order), then the other keys in their order of first appearance.
pub fn answer_columns(union: Vec<String>, flow_order: Option<&[String]>) -> Vec<String> {
    let Some(order) = flow_order else {
        return union;
    };
    let present: std::collections::HashSet<&str> = union.iter().map(String::as_str).collect();
    let mut out: Vec<String> = order
        .iter()
        .filter(|k| present.contains(k.as_str()))
        .cloned()
        .collect();
    let declared: std::collections::HashSet<&str> = order.iter().map(String::as_str).collect();
    out.extend(
        union
            .iter()
            .filter(|k| !declared.contains(k.as_str()))
            .cloned(),
    );
    out
}

/// The CSV header: fixed columns, `matched` when asked, then the answer keys (renamed
/// `answers.<key>` when they clash with a fixed column).
pub fn header(keys: &[String], include_unmatched: bool) -> Vec<String> {
    let mut h: Vec<String> = FIXED_COLUMNS.iter().map(|s| s.to_string()).collect();
    if include_unmatched {
        h.push(MATCHED_COLUMN.to_string());
    }
    for k in keys {
        let clash = FIXED_COLUMNS.contains(&k.as_str()) || k == MATCHED_COLUMN;
        h.push(if clash {
            format!("answers.{k}")
        } else {
            k.clone()
        });
    }
    h.into_iter()
        .map(|c| escape_formula(&c).into_owned())
        .collect()
}

fn csv_record<'a>(
    r: &'a StoredResponse,
    keys: &[String],
    include_unmatched: bool,
    out: &mut Vec<Cow<'a, str>>,
) {
    let text = |s: Option<&'a str>| escape_formula(s.unwrap_or(""));
    out.push(text(r.token.as_deref()));
    out.push(Cow::Borrowed(phone_of(r).unwrap_or("")));
    out.push(text(r.customer_name.as_deref()));
    out.push(text(r.campaign.as_deref()));
    out.push(text(Some(&r.source)));
    out.push(Cow::Owned(r.completed_at.to_string()));
    if include_unmatched {
        out.push(Cow::Borrowed(if r.matched { "true" } else { "false" }));
    }
    for k in keys {
        let cell = match r.answers.get(k) {
            Some(v) => render_answer(v),
            None => Cow::Borrowed(""),
        };
        out.push(match cell {
            Cow::Borrowed(s) => escape_formula(s),
            Cow::Owned(s) => Cow::Owned(escape_formula(&s).into_owned()),
        });
    }
}

/// Prefixes `'` to a cell a spreadsheet would evaluate as a formula; other cells unchanged.
pub fn escape_formula(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Where the export goes.
pub enum Sink {
    /// Standard output, buffered.
    Stdout(BufWriter<io::StdoutLock<'static>>),
    /// A file replaced atomically on success.
    File(AtomicFile),
    /// Any writer (benchmarks: `io::sink()`).
    Writer(Box<dyn Write>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(f) => f.write(buf),
            Sink::Writer(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.write_all(buf),
            Sink::File(f) => f.write_all(buf),
            Sink::Writer(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(f) => f.flush(),
            Sink::Writer(w) => w.flush(),
        }
    }
}

impl Sink {
    /// Flushes; for a file, syncs it and renames it over the destination.
    pub fn commit(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut w) => Ok(w.flush()?),
            Sink::File(f) => Ok(f.commit()?),
            Sink::Writer(mut w) => Ok(w.flush()?),
        }
    }
}

/// Creates the `--out` file, renamed over `path` on commit (see [`AtomicFile`]). An
/// existing destination's permissions are kept; a new file is owner-only (it holds phone
/// numbers). Failure is a usage error that names `path`.
fn create_out(path: &Path) -> anyhow::Result<AtomicFile> {
    let cannot = |e: &dyn std::fmt::Display| {
        UsageError(format!("cannot write --out {}: {e}", path.display()))
    };
    if path.is_dir() {
        return Err(cannot(&"it is a directory").into());
    }
    AtomicFile::create(path, ".flowctl-export-", Mode::KeepExisting).map_err(|e| {
        match e.io_error() {
            Some(io) => cannot(io),
            None => cannot(&e),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn formula_cells_are_prefixed_and_others_untouched() {
        for bad in ["=SUM(A1)", "+33612345678", "-1", "@x", "\tx", "\rx"] {
            assert_eq!(escape_formula(bad), format!("'{bad}"));
        }
        for good in ["Très bien ⭐", "", "a=b", "1", "'quoted"] {
            assert!(matches!(escape_formula(good), Cow::Borrowed(s) if s == good));
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn columns_follow_the_flow_then_first_seen() {
        let union = strings(&["extra", "q2", "q1"]);
        assert_eq!(answer_columns(union.clone(), None), union);
        let flow = strings(&["q1", "q2", "q3"]);
        assert_eq!(
            answer_columns(union, Some(&flow)),
            strings(&["q1", "q2", "extra"])
        );
    }

    #[test]
    fn header_renames_answer_keys_that_clash_with_fixed_columns() {
        let h = header(&strings(&["customer_name", "q1", "=x"]), true);
        assert_eq!(
            h,
            strings(&[
                "flow_token",
                "phone_number",
                "customer_name",
                "campaign",
                "source",
                "completed_at",
                "matched",
                "answers.customer_name",
                "q1",
                "'=x"
            ])
        );
    }

    #[test]
    fn the_phone_cell_is_never_escaped() {
        let r = StoredResponse {
            id: 1,
            token: Some("flow_x".into()),
            phone: Some("+212610059159".into()),
            sender: None,
            customer_name: Some("=HYPERLINK(\"x\")".into()),
            campaign: Some("-c".into()),
            source: "endpoint".into(),
            answers: json!({"q": "+33612345678"}).as_object().unwrap().clone(),
            matched: true,
            sender_mismatch: false,
            duplicate_of: None,
            completed_at: "2026-01-01T00:00:00.000Z".parse().unwrap(),
        };
        let mut rec = Vec::new();
        csv_record(&r, &strings(&["q", "missing"]), false, &mut rec);
        assert_eq!(rec[1], "+212610059159");
        assert_eq!(rec[2], "'=HYPERLINK(\"x\")");
        assert_eq!(rec[3], "'-c");
        assert_eq!(rec[6], "'+33612345678");
        assert_eq!(rec[7], "");
    }

    #[test]
    fn an_unfinished_atomic_file_leaves_the_previous_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        std::fs::write(&dest, "previous").unwrap();
        let mut f = create_out(&dest).unwrap();
        f.write_all(b"partial").unwrap();
        f.flush().unwrap();
        drop(f); // an error mid-export drops the sink without committing
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "previous");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut f = create_out(&dest).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    proptest! {
        #[test]
        fn escaped_cells_never_start_a_formula_and_unescape_to_the_original(s in "\\PC*|[=+\\-@\t\r].*") {
            let e = escape_formula(&s);
            prop_assert!(!e.starts_with(FORMULA_STARTS));
            if e != s {
                prop_assert_eq!(e.strip_prefix('\''), Some(s.as_str()));
            }
        }

        #[test]
        fn the_phone_column_is_never_altered(phone in "\\+[1-9][0-9]{6,14}|[=@\\-].{0,12}", q in ".*") {
            let r = StoredResponse {
                id: 1,
                token: None,
                phone: Some(phone.clone()),
                sender: None,
                customer_name: None,
                campaign: None,
                source: "webhook".into(),
                answers: json!({"q": q}).as_object().unwrap().clone(),
                matched: true,
                sender_mismatch: false,
                duplicate_of: None,
                completed_at: Timestamp::now(),
            };
            let mut rec = Vec::new();
            csv_record(&r, &["q".to_string()], false, &mut rec);
            prop_assert_eq!(rec[1].as_ref(), phone.as_str());
            prop_assert!(!rec[6].starts_with(FORMULA_STARTS));
        }
    }
}
