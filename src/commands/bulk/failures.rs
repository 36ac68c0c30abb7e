//! The `--failures` file: the failed and invalid rows with `line` and `error` columns, in a
//! form `bulk` reads back (it ignores those two columns).
//!
//! It is UTF-8 with the input's delimiter. When the input was not plain UTF-8 (a byte-order
//! mark, UTF-16, Windows-1252: a file from Excel), it starts with a UTF-8 byte-order mark,
//! without which Excel would show its accented letters garbled.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::reader;

/// The `--failures` file, shared by the reader stage and the send tasks; without
/// `--failures`, writing to it does nothing.
#[derive(Clone)]
pub(super) struct FailureLog(Option<Arc<Mutex<FailureFile>>>);

struct FailureFile {
    out: csv::Writer<std::fs::File>,
    /// Indexes of the original columns kept (an earlier `line`/`error` pair is dropped).
    keep: Vec<usize>,
}

impl FailureLog {
    /// Creates (truncates) the file at `path` with the input's columns plus `line` and
    /// `error`, written as the input's `format` says; no file when `path` is `None`.
    pub(super) fn create(
        path: Option<&Path>,
        headers: &csv::StringRecord,
        format: reader::Format,
    ) -> anyhow::Result<FailureLog> {
        let Some(path) = path else {
            return Ok(FailureLog(None));
        };
        let mut file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if !format.is_plain_utf8() {
            file.write_all("\u{feff}".as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let mut out = csv::WriterBuilder::new()
            .delimiter(format.delimiter)
            .from_writer(file);
        let keep: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                !reader::FAILURE_COLUMNS
                    .iter()
                    .any(|c| h.eq_ignore_ascii_case(c))
            })
            .map(|(i, _)| i)
            .collect();
        let mut head: Vec<&str> = keep.iter().filter_map(|i| headers.get(*i)).collect();
        head.extend(reader::FAILURE_COLUMNS);
        out.write_record(&head)?;
        out.flush()?;
        Ok(FailureLog(Some(Arc::new(Mutex::new(FailureFile {
            out,
            keep,
        })))))
    }

    /// Appends the row `record` (line `line` of the input) with why it failed.
    pub(super) fn write(&self, record: &csv::StringRecord, line: u64, error: &str) {
        let Some(file) = &self.0 else { return };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        let line = line.to_string();
        let mut row: Vec<&str> = f
            .keep
            .iter()
            .map(|i| record.get(*i).unwrap_or(""))
            .collect();
        row.push(&line);
        row.push(error);
        // Best effort: a failing report file must not stop the sends.
        let _ = f
            .out
            .write_record(&row)
            .and_then(|_| f.out.flush().map_err(Into::into));
    }
}
