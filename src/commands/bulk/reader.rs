//! Streaming CSV input of `bulk`: encoding and delimiter detection, header aliases, row
//! validation, physical line numbers.
//!
//! One record is in memory at a time, so a file of any size reads in flat memory: a file in
//! UTF-16 or Windows-1252 is decoded to UTF-8 as it streams. Errors name the physical line of
//! the file (the header is line 1, a quoted cell spanning lines counts them all), the word
//! "line" and the bad value, as the spec asks.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};
use encoding_rs_io::DecodeReaderBytesBuilder;
use serde_json::{Map, Value};

use crate::config::CsvInput;
use crate::phone::{DefaultCountry, Phone};

/// Bytes read ahead to detect the encoding and the delimiter: the start of the file.
const SNIFF: usize = 1 << 16;
/// Delimiters recognised from the header line, the first winning a tie.
const SNIFFED_DELIMITERS: &[u8] = b",;\t";

/// How a file is read: from the options, else from what its first bytes show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// The field separator.
    pub delimiter: u8,
    /// The encoding decoded to UTF-8 as the file streams.
    pub encoding: &'static Encoding,
    /// A byte-order mark started the file.
    pub bom: bool,
}

impl Default for Format {
    fn default() -> Format {
        Format {
            delimiter: b',',
            encoding: UTF_8,
            bom: false,
        }
    }
}

impl Format {
    /// Whether the file was plain UTF-8 (no byte-order mark), as `bulk` writes its own files.
    pub fn is_plain_utf8(&self) -> bool {
        self.encoding == UTF_8 && !self.bom
    }
}

/// The delimiter as a user would name it in an error message.
fn describe(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "tab".to_string(),
        d => format!("'{}'", d as char),
    }
}

/// The encoding of a file from its first bytes: a byte-order mark, else the one asked for,
/// else UTF-8 when the bytes are UTF-8 (a character cut by the end of the sample allowed),
/// else Windows-1252, what Excel writes as "CSV" in Western European locales.
fn sniff_encoding(head: &[u8], asked: Option<&'static Encoding>) -> (&'static Encoding, usize) {
    if let Some((encoding, bom_len)) = Encoding::for_bom(head) {
        return (encoding, bom_len);
    }
    if let Some(encoding) = asked {
        return (encoding, 0);
    }
    match std::str::from_utf8(head) {
        Err(e) if e.error_len().is_some() => (WINDOWS_1252, 0),
        _ => (UTF_8, 0),
    }
}

/// The delimiter of a header line (decoded text): the most frequent of `,` `;` and tab
/// outside quotes, the comma when none appears.
fn sniff_delimiter(text: &[u8]) -> u8 {
    let line = text.split(|b| *b == b'\n').next().unwrap_or(text);
    let mut counts = [0usize; SNIFFED_DELIMITERS.len()];
    let mut quoted = false;
    for b in line {
        if *b == b'"' {
            quoted = !quoted;
        } else if let Some(i) = SNIFFED_DELIMITERS.iter().position(|d| d == b) {
            counts[i] += usize::from(!quoted);
        }
    }
    let mut best = 0;
    for (i, n) in counts.iter().enumerate() {
        if *n > counts[best] {
            best = i;
        }
    }
    SNIFFED_DELIMITERS[best]
}

/// Opens a file as UTF-8 text with its format: the encoding and the delimiter are the ones
/// given, else detected from the first [`SNIFF`] bytes; a byte-order mark always wins and is
/// not part of the text.
fn open_text(
    path: &Path,
    encoding: Option<&'static Encoding>,
    delimiter: Option<u8>,
) -> std::io::Result<(Box<dyn BufRead + Send>, Format)> {
    let mut raw = BufReader::with_capacity(SNIFF, File::open(path)?);
    let (encoding, bom_len) = sniff_encoding(raw.fill_buf()?, encoding);
    raw.consume(bom_len);
    let mut text: Box<dyn BufRead + Send> = if encoding == UTF_8 {
        // Kept as bytes: a row that is not UTF-8 is reported on its line, not the whole file.
        Box::new(raw)
    } else {
        let decoder = DecodeReaderBytesBuilder::new()
            .encoding(Some(encoding))
            .build(raw);
        Box::new(BufReader::with_capacity(SNIFF, decoder))
    };
    let delimiter = match delimiter {
        Some(d) => d,
        None => {
            // The header line, read ahead and put back: a decoder hands out short reads.
            let mut head = Vec::new();
            (&mut text)
                .take(SNIFF as u64)
                .read_until(b'\n', &mut head)?;
            let d = sniff_delimiter(&head);
            text = Box::new(std::io::Cursor::new(head).chain(text));
            d
        }
    };
    let format = Format {
        delimiter,
        encoding,
        bom: bom_len > 0,
    };
    Ok((text, format))
}

/// Headers accepted for the phone column (compared case-insensitively).
const PHONE_ALIASES: &[&str] = &["phone_number", "phone", "phonenumber"];
/// Headers accepted for the customer name column (compared case-insensitively).
const NAME_ALIASES: &[&str] = &["customer_name", "name", "customername"];
/// Columns that `--failures` adds; ignored when such a file is fed back to `bulk`.
pub const FAILURE_COLUMNS: &[&str] = &["line", "error"];

/// Where the interesting columns are in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct Columns {
    pub phone: usize,
    pub name: Option<usize>,
    /// Every other column, by index and header: the recipient's initial Flow data.
    pub data: Vec<(usize, String)>,
    /// The header's field count; a row with another count is invalid.
    pub width: usize,
}

fn header_name(h: &str) -> String {
    // Excel writes a UTF-8 byte-order mark before the first header.
    h.trim_start_matches('\u{feff}').trim().to_string()
}

fn is_one_of(h: &str, aliases: &[&str]) -> bool {
    aliases.iter().any(|a| h.eq_ignore_ascii_case(a))
}

impl Columns {
    /// Finds the columns in a header row split on commas, by their usual names.
    pub fn resolve(headers: &csv::StringRecord) -> Result<Columns, String> {
        Columns::resolve_with(headers, &CsvInput::default(), b',')
    }

    /// Finds the columns in a header row split on `delimiter`: the ones `--phone-column` and
    /// `--name-column` name, else the usual names. The error names the header found, as it
    /// was split, and the options, so that a user whose file has `tel` or no header at all
    /// sees why and what to do.
    pub fn resolve_with(
        headers: &csv::StringRecord,
        input: &CsvInput,
        delimiter: u8,
    ) -> Result<Columns, String> {
        let names: Vec<String> = headers.iter().map(header_name).collect();
        let found = || {
            format!(
                "found: {}; fields split on {}, change with --delimiter",
                names.join(&(delimiter as char).to_string()),
                describe(delimiter)
            )
        };
        let phone = match &input.phone_column {
            Some(wanted) => position_of(&names, wanted).ok_or_else(|| {
                format!(
                    "no column {wanted:?} (--phone-column) in the CSV header ({})",
                    found()
                )
            })?,
            None => names
                .iter()
                .position(|h| is_one_of(h, PHONE_ALIASES))
                .ok_or_else(|| {
                    format!(
                        "no phone column in the CSV header ({}); expected one of phone_number, phone, phoneNumber, or name it with --phone-column NAME (and the name column with --name-column NAME)",
                        found()
                    )
                })?,
        };
        let name = match &input.name_column {
            Some(wanted) => Some(position_of(&names, wanted).ok_or_else(|| {
                format!(
                    "no column {wanted:?} (--name-column) in the CSV header ({})",
                    found()
                )
            })?),
            None => names.iter().position(|h| is_one_of(h, NAME_ALIASES)),
        };
        let data = names
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                *i != phone && Some(*i) != name && !h.is_empty() && !is_one_of(h, FAILURE_COLUMNS)
            })
            .map(|(i, h)| (i, h.clone()))
            .collect();
        Ok(Columns {
            phone,
            name,
            data,
            width: names.len(),
        })
    }
}

/// The column whose header is `wanted`, compared case-insensitively (`Téléphone`, `TÉLÉPHONE`).
fn position_of(names: &[String], wanted: &str) -> Option<usize> {
    let wanted = wanted.trim().to_lowercase();
    names.iter().position(|h| h.to_lowercase() == wanted)
}

/// A valid row: who to message and with what.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipient {
    pub phone: Phone,
    pub name: Option<String>,
    /// Initial Flow data; empty cells are left out.
    pub data: Map<String, Value>,
}

/// Validates one record against the header.
pub fn parse_row(
    cols: &Columns,
    rec: &csv::StringRecord,
    country: Option<DefaultCountry>,
) -> Result<Recipient, String> {
    if rec.len() != cols.width {
        return Err(format!(
            "expected {} fields, found {}: {:?}",
            cols.width,
            rec.len(),
            rec.iter().collect::<Vec<_>>().join(",")
        ));
    }
    let raw = rec.get(cols.phone).unwrap_or("").trim();
    if raw.is_empty() {
        return Err("missing phone number: \"\"".to_string());
    }
    let phone = Phone::parse(raw, country).map_err(|e| e.to_string())?;
    let name = cols
        .name
        .and_then(|i| rec.get(i))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let data = cols
        .data
        .iter()
        .filter_map(|(i, h)| {
            let v = rec.get(*i)?.trim();
            (!v.is_empty()).then(|| (h.clone(), Value::String(v.to_string())))
        })
        .collect();
    Ok(Recipient { phone, name, data })
}

/// One record read from the file.
#[derive(Debug)]
pub struct Line {
    /// Physical line number where the record starts (header = 1).
    pub line: u64,
    /// The record as read, for the `--failures` file.
    pub record: csv::StringRecord,
    pub parsed: Result<Recipient, String>,
}

/// The CSV file, read record by record.
pub struct CsvRows {
    path: std::path::PathBuf,
    reader: csv::Reader<Box<dyn Read + Send>>,
    headers: csv::StringRecord,
    columns: Columns,
    country: Option<DefaultCountry>,
    raw: csv::ByteRecord,
    format: Format,
}

fn builder(delimiter: u8) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    // Rows of the wrong width are reported one by one instead of stopping the run.
    b.flexible(true).delimiter(delimiter);
    b
}

impl CsvRows {
    /// Opens a file and reads its header, with the encoding, delimiter and columns `input`
    /// gives or the file shows. Errors are usage errors (exit 2).
    pub fn open(
        path: &Path,
        country: Option<DefaultCountry>,
        input: &CsvInput,
    ) -> Result<CsvRows, String> {
        let (text, format) = open_text(path, input.encoding, input.delimiter)
            .map_err(|e| format!("cannot read CSV file {}: {e}", path.display()))?;
        let mut rows = Self::from_reader_as(Box::new(CrlfToLf::new(text)), country, format, input)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        rows.path = path.to_path_buf();
        Ok(rows)
    }

    /// Reads the header from any reader of comma-separated UTF-8 (tests).
    /// The input should have its line ends as `\n` (see [`CrlfToLf`]).
    pub fn from_reader(
        input: Box<dyn Read + Send>,
        country: Option<DefaultCountry>,
    ) -> Result<CsvRows, String> {
        Self::from_reader_as(input, country, Format::default(), &CsvInput::default())
    }

    /// Reads the header from UTF-8 text split on `format.delimiter`, finding the columns
    /// `columns` names.
    pub fn from_reader_as(
        input: Box<dyn Read + Send>,
        country: Option<DefaultCountry>,
        format: Format,
        columns: &CsvInput,
    ) -> Result<CsvRows, String> {
        let mut reader = builder(format.delimiter).from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| format!("cannot read the CSV header: {e}"))?
            .clone();
        if headers.is_empty() || headers.iter().all(|h| header_name(h).is_empty()) {
            return Err(
                "the CSV file is empty (expected a header line such as phone_number,customer_name)"
                    .into(),
            );
        }
        let columns = Columns::resolve_with(&headers, columns, format.delimiter)?;
        Ok(CsvRows {
            path: std::path::PathBuf::new(),
            reader,
            headers,
            columns,
            country,
            raw: csv::ByteRecord::new(),
            format,
        })
    }

    /// How the file is read (its encoding and delimiter), for the `--failures` file and
    /// [`count_records`].
    pub fn format(&self) -> Format {
        self.format
    }

    /// The file read (empty for [`CsvRows::from_reader`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header as read (BOM removed), for the `--failures` file.
    pub fn headers(&self) -> csv::StringRecord {
        self.headers.iter().map(header_name).collect()
    }

    /// The next record; `Err` only for an I/O failure of the file itself.
    pub fn next_line(&mut self) -> Option<Result<Line, String>> {
        match self.reader.read_byte_record(&mut self.raw) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.raw.position().map(|p| p.line()).unwrap_or(0);
                Some(Ok(
                    match csv::StringRecord::from_byte_record(self.raw.clone()) {
                        Ok(record) => {
                            let parsed = parse_row(&self.columns, &record, self.country);
                            Line {
                                line,
                                record,
                                parsed,
                            }
                        }
                        Err(_) => {
                            let record = lossy(&self.raw);
                            let value = record.iter().collect::<Vec<_>>().join(",");
                            Line {
                                line,
                                record,
                                parsed: Err(format!("not valid UTF-8: {value:?}")),
                            }
                        }
                    },
                ))
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => Some(Err(format!("cannot read the CSV file: {e}"))),
                _ => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    let record = lossy(&self.raw);
                    Some(Ok(Line {
                        line,
                        record,
                        parsed: Err(e.to_string()),
                    }))
                }
            },
        }
    }
}

/// Turns CRLF line ends into LF as the file is read.
///
/// csv 1.x numbers lines one short after a CRLF header (it counts the `\n` of a CRLF as part
/// of the next record), so a file saved by Excel would report every bad row on the wrong
/// line. With `\n` alone its `Position::line()` is the physical line. A `\r` not followed
/// by `\n` is kept.
pub struct CrlfToLf<R> {
    inner: R,
    pending_cr: bool,
}

impl<R: BufRead> CrlfToLf<R> {
    pub fn new(inner: R) -> CrlfToLf<R> {
        CrlfToLf {
            inner,
            pending_cr: false,
        }
    }
}

impl<R: BufRead> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut w = 0;
        while w == 0 && !out.is_empty() {
            let avail = self.inner.fill_buf()?;
            if avail.is_empty() {
                if std::mem::take(&mut self.pending_cr) {
                    out[0] = b'\r';
                    w = 1;
                }
                break;
            }
            let mut i = 0;
            while i < avail.len() && w < out.len() {
                let b = avail[i];
                if std::mem::take(&mut self.pending_cr) && b != b'\n' {
                    // A lone CR: emit it, then look at `b` again.
                    out[w] = b'\r';
                    w += 1;
                    continue;
                }
                i += 1;
                if b == b'\r' {
                    self.pending_cr = true;
                } else {
                    out[w] = b;
                    w += 1;
                }
            }
            self.inner.consume(i);
        }
        Ok(w)
    }
}

fn lossy(raw: &csv::ByteRecord) -> csv::StringRecord {
    raw.iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Counts the records of a file read as `format` says (for the progress bar's total)
/// without keeping any.
pub fn count_records(path: &Path, format: Format) -> std::io::Result<u64> {
    let (text, format) = open_text(path, Some(format.encoding), Some(format.delimiter))?;
    let mut reader = builder(format.delimiter).from_reader(text);
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while reader
        .read_byte_record(&mut rec)
        .map_err(std::io::Error::other)?
    {
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> (CsvRows, Vec<Line>) {
        let input = CrlfToLf::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        let mut r = CsvRows::from_reader(Box::new(input), None).unwrap();
        let mut out = Vec::new();
        while let Some(l) = r.next_line() {
            out.push(l.unwrap());
        }
        (r, out)
    }

    #[test]
    fn header_aliases_are_case_insensitive() {
        for (h, phone, name) in [
            ("phone_number,customer_name", 0, Some(1)),
            ("Name,PHONE", 1, Some(0)),
            ("city,phoneNumber,customerName", 1, Some(2)),
            ("\u{feff}phone,city", 0, None),
        ] {
            let rec = csv::StringRecord::from(h.split(',').collect::<Vec<_>>());
            let c = Columns::resolve(&rec).unwrap();
            assert_eq!((c.phone, c.name), (phone, name), "{h}");
        }
    }

    #[test]
    fn missing_phone_column_names_the_header_found() {
        let rec = csv::StringRecord::from(vec!["tel", "nom"]);
        let e = Columns::resolve(&rec).unwrap_err();
        assert!(e.contains("tel,nom"), "{e}");
    }

    #[test]
    fn other_columns_become_data_without_empty_cells_or_failure_columns() {
        let (_, l) = rows("phone,name,city,plan,error,line\n+212610059159,Amal,Rabat,,x,3\n");
        let r = l[0].parsed.clone().unwrap();
        assert_eq!(r.name.as_deref(), Some("Amal"));
        assert_eq!(Value::Object(r.data), serde_json::json!({"city": "Rabat"}));
    }

    #[test]
    fn bad_rows_carry_physical_line_and_value() {
        let text = "\u{feff}phone_number,customer_name\r\n\
                    +212610059159,A\r\n\
                    \"+33612345678\",\"two\r\nlines\"\r\n\
                    abc,B\r\n\
                    ,C\r\n\
                    +14155550123,D,extra\r\n";
        let (r, l) = rows(text);
        assert_eq!(r.headers().get(0), Some("phone_number"));
        assert!(l[0].parsed.is_ok() && l[1].parsed.is_ok());
        assert_eq!(l[0].line, 2);
        assert_eq!(l[1].line, 3);
        assert_eq!(l[2].line, 5);
        assert!(l[2].parsed.clone().unwrap_err().contains("\"abc\""));
        assert_eq!(l[3].line, 6);
        assert!(l[3].parsed.clone().unwrap_err().contains("missing phone"));
        assert_eq!(l[4].line, 7);
        let e = l[4].parsed.clone().unwrap_err();
        assert!(
            e.contains("expected 2 fields, found 3") && e.contains("extra"),
            "{e}"
        );
    }

    #[test]
    fn crlf_becomes_lf_across_buffer_boundaries_and_lone_cr_stays() {
        for cap in [1, 2, 3, 64] {
            let input = std::io::BufReader::with_capacity(cap, &b"a\r\nb\rc\r\n\r"[..]);
            let mut out = Vec::new();
            CrlfToLf::new(input).read_to_end(&mut out).unwrap();
            assert_eq!(out, b"a\nb\rc\n\r", "capacity {cap}");
        }
    }

    #[test]
    fn count_records_counts_records_not_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.csv");
        std::fs::write(&p, "phone,note\n1,\"a\nb\"\n2,c\n").unwrap();
        assert_eq!(count_records(&p, Format::default()).unwrap(), 2);
    }

    fn open_file(bytes: &[u8], input: &CsvInput) -> Result<(CsvRows, Vec<Line>), String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.csv");
        std::fs::write(&p, bytes).unwrap();
        let mut r = CsvRows::open(&p, None, input)?;
        let mut out = Vec::new();
        while let Some(l) = r.next_line() {
            out.push(l.unwrap());
        }
        Ok((r, out))
    }

    fn utf16le_with_bom(text: &str) -> Vec<u8> {
        let mut b = vec![0xFF, 0xFE];
        b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        b
    }

    #[test]
    fn delimiter_is_the_most_frequent_of_comma_semicolon_tab_outside_quotes() {
        for (header, d) in [
            ("phone_number;customer_name;ville\n1;2;3", b';'),
            ("phone\tname\n", b'\t'),
            ("phone,name", b','),
            ("\"a;b;c\",phone", b','),
            ("phone", b','),
            ("phone,name;city\n", b','),
        ] {
            assert_eq!(sniff_delimiter(header.as_bytes()), d, "{header:?}");
        }
    }

    #[test]
    fn encoding_is_the_bom_else_the_option_else_utf8_when_valid_else_windows_1252() {
        use encoding_rs::{UTF_16BE, UTF_16LE};
        assert_eq!(sniff_encoding(b"\xEF\xBB\xBFa", None), (UTF_8, 3));
        assert_eq!(sniff_encoding(b"\xFF\xFEa\0", None), (UTF_16LE, 2));
        assert_eq!(
            sniff_encoding(b"\xFE\xFF\0a", Some(WINDOWS_1252)),
            (UTF_16BE, 2)
        );
        assert_eq!(sniff_encoding("Téléphone".as_bytes(), None), (UTF_8, 0));
        // A character cut by the end of the sample is not a reason to leave UTF-8.
        assert_eq!(sniff_encoding(b"T\xC3", None), (UTF_8, 0));
        assert_eq!(sniff_encoding(b"T\xE9l\xE9phone", None), (WINDOWS_1252, 0));
        assert_eq!(sniff_encoding(b"phone", Some(UTF_16LE)), (UTF_16LE, 0));
    }

    #[test]
    fn windows_1252_file_with_semicolons_reads_as_unicode() {
        let bytes = b"T\xE9l\xE9phone;Nom\r\n+212610059159;Ren\xE9e \x80\r\n";
        let input = CsvInput {
            phone_column: Some("téléphone".into()),
            name_column: Some("NOM".into()),
            ..CsvInput::default()
        };
        let (r, l) = open_file(bytes, &input).unwrap();
        assert_eq!(r.format().encoding, WINDOWS_1252);
        assert_eq!(r.format().delimiter, b';');
        assert_eq!(r.headers().get(0), Some("Téléphone"));
        assert_eq!(l[0].line, 2);
        let p = l[0].parsed.clone().unwrap();
        assert_eq!(p.name.as_deref(), Some("Renée €"));
    }

    #[test]
    fn utf16_file_with_bom_reads_as_unicode_and_counts() {
        let bytes = utf16le_with_bom("phone\tname\r\n+33612345678\tAmélie\r\n+212610059159\tB\r\n");
        let (r, l) = open_file(&bytes, &CsvInput::default()).unwrap();
        assert_eq!(r.format().delimiter, b'\t');
        assert!(r.format().bom && !r.format().is_plain_utf8());
        assert_eq!(r.headers().get(0), Some("phone"));
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].parsed.clone().unwrap().name.as_deref(), Some("Amélie"));
        assert_eq!(l[1].line, 3);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("u16.csv");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(count_records(&p, r.format()).unwrap(), 2);
    }

    #[test]
    fn options_override_the_sniffed_delimiter_and_encoding() {
        let input = CsvInput {
            delimiter: Some(b'|'),
            encoding: Some(WINDOWS_1252),
            ..CsvInput::default()
        };
        let (r, l) = open_file("phone|nom\n+212610059159|é\n".as_bytes(), &input).unwrap();
        assert_eq!(r.format().delimiter, b'|');
        // Read as asked: UTF-8 bytes taken for Windows-1252.
        assert_eq!(l[0].record.get(1), Some("Ã©"));
    }

    #[test]
    fn missing_phone_column_error_names_the_options_and_the_split_header() {
        let e = open_file(b"tel;nom;ville\n1;2;3\n", &CsvInput::default())
            .err()
            .unwrap();
        for part in [
            "tel;nom;ville",
            "split on ';'",
            "--phone-column",
            "--name-column",
            "--delimiter",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        let asked = CsvInput {
            phone_column: Some("mobile".into()),
            ..CsvInput::default()
        };
        let e = open_file(b"tel\tnom\n", &asked).err().unwrap();
        assert!(
            e.contains("no column \"mobile\" (--phone-column)") && e.contains("tel\tnom"),
            "{e}"
        );
        let asked = CsvInput {
            phone_column: Some("tel".into()),
            name_column: Some("client".into()),
            ..CsvInput::default()
        };
        let e = open_file(b"tel,nom\n", &asked).err().unwrap();
        assert!(e.contains("no column \"client\" (--name-column)"), "{e}");
    }
}
