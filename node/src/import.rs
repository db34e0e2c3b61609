//! Importing records exported by an agency's own system, and exporting them in the same formats.
//!
//! Two formats are read:
//!
//! * **CSV**: a header row naming the columns `record_id, subject, category, kind, about,
//!   recorded_at, source_system` (in any order; [`export_csv`] writes them in that order), then
//!   any number of field columns named `field.<name>`. An empty field cell means the field is
//!   absent. `about` is `YYYY-MM-DD`, `recorded_at` is RFC 3339. A UTF-8 byte-order mark is
//!   skipped, and blank lines are ignored.
//! * **JSON Lines**: one object per line, `{"record_id":..,"subject":..,"category":..,
//!   "kind":..,"fields":{..},"about":"YYYY-MM-DD","recorded_at":"RFC 3339",
//!   "source_system":..}`. Blank lines are ignored; `fields` may be left out when there are
//!   none, and a field whose value is `null` or empty is absent.
//!
//! Every row is checked in full: the record id, the category and kind names, the dates, the
//! subject (which must normalise under the importing agency's identifier scheme, and is stored
//! normalised), the field names and value lengths, [`Record::validate`], and that no record id
//! repeats within the file. Import is all-or-nothing: either every row is good and all the
//! records are returned, or [`ImportErrors`] lists every bad row by line number and reason.
//! Reasons name the column and what is wrong with it but never quote a cell, because cells
//! hold personal data.
//!
//! [`import_each`] reads a file as a stream and hands each good record on as it goes, holding
//! one row at a time (plus a small digest per record id for the duplicate check), so that a
//! node can check a file of any size, and then store it in chunks, without holding its records
//! in memory. [`import`] and [`import_reader`] are built on it and return every record at once.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::rc::Rc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use throughgate_protocol::category::Category;
use throughgate_protocol::identifiers::{normalise, IdScheme, IdentifierError};
use throughgate_protocol::ids::RecordId;
use throughgate_protocol::record::{
    valid_name, Record, RecordError, MAX_FIELDS, MAX_NAME_LEN, MAX_VALUE_LEN,
};
use throughgate_protocol::time::{Date, Timestamp};

/// The standard CSV columns, in the order [`export_csv`] writes them.
pub const CSV_COLUMNS: [&str; 7] = [
    "record_id",
    "subject",
    "category",
    "kind",
    "about",
    "recorded_at",
    "source_system",
];

/// The prefix of a CSV field column's name: `field.<name>`.
pub const FIELD_PREFIX: &str = "field.";

/// Longest record id, in bytes (as [`RecordId`] allows).
const MAX_RECORD_ID_LEN: usize = 128;

/// A records file's format (the wire type the CLI sends with an import): `Csv` or `Json`
/// (JSON Lines).
pub use throughgate_protocol::messages::ImportFormat;

/// The format a file name's extension suggests: `.csv`, or `.jsonl` / `.ndjson` / `.json` for
/// JSON Lines.
pub fn format_from_path(path: &Path) -> Option<ImportFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    format_from_name(&ext)
}

/// The format with this name: `csv`, or `jsonl` / `ndjson` / `json` for JSON Lines.
pub fn format_from_name(name: &str) -> Option<ImportFormat> {
    match name {
        "csv" => Some(ImportFormat::Csv),
        "jsonl" | "ndjson" | "json" => Some(ImportFormat::Json),
        _ => None,
    }
}

/// Bounds on what one import accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Largest file, in bytes.
    pub max_bytes: usize,
    /// Most data rows (records).
    pub max_rows: usize,
    /// Longest physical line, in bytes.
    pub max_line_len: usize,
}

impl Default for ImportLimits {
    /// 1 GiB, 5 million rows, and lines long enough for a record with every field at its
    /// largest (64 fields of 4 KiB, plus quoting).
    fn default() -> ImportLimits {
        ImportLimits {
            max_bytes: 1 << 30,
            max_rows: 5_000_000,
            max_line_len: 2 * MAX_FIELDS * MAX_VALUE_LEN + 4096,
        }
    }
}

/// What is wrong with an import file or one of its rows. Never quotes a cell's value.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportProblem {
    /// The file is over [`ImportLimits::max_bytes`].
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The file could not be read.
    #[error("the file could not be read ({0})")]
    Read(std::io::ErrorKind),
    /// The file has more rows than [`ImportLimits::max_rows`]; rows after this one were not read.
    #[error("more than the limit of {limit} rows; stopped reading here")]
    TooManyRows { limit: usize },
    /// A line over [`ImportLimits::max_line_len`].
    #[error("the line is longer than the limit of {limit} bytes")]
    LineTooLong { limit: usize },
    /// Bytes that are not UTF-8 text.
    #[error("{} is not valid UTF-8 text", describe_column(.column.as_deref()))]
    InvalidUtf8 { column: Option<String> },
    /// A CSV file with no header row.
    #[error("the file is empty: a CSV import needs a header row naming the columns {}", CSV_COLUMNS.join(","))]
    NoHeader,
    /// The CSV header lacks a standard column.
    #[error("the header has no {column} column (the standard columns are {})", CSV_COLUMNS.join(","))]
    MissingColumn { column: &'static str },
    /// The CSV header names a column twice.
    #[error("the header names column {column} more than once")]
    DuplicateColumn {
        /// The repeated column (a standard column or `field.<name>`).
        column: String,
    },
    /// A CSV header cell that is neither a standard column nor `field.<name>`.
    #[error("header column {position} is neither a standard column ({}) nor field.<name>", CSV_COLUMNS.join(","))]
    UnknownColumn {
        /// The column's position, counting from 1.
        position: usize,
    },
    /// A CSV header cell `field.<name>` whose name is not a valid field name.
    #[error("header column {position} starts with field. but the name after it is not 1-{MAX_NAME_LEN} lowercase letters, digits or underscores")]
    BadFieldColumn {
        /// The column's position, counting from 1.
        position: usize,
    },
    /// A CSV row with a different number of cells from the header.
    #[error("the row has {found} columns but the header has {expected}")]
    ColumnCount { expected: usize, found: usize },
    /// CSV that cannot be parsed.
    #[error("the row is not well-formed CSV")]
    MalformedCsv,
    /// A CSV row (a quoted cell may span lines) longer than any valid row can be; rows after it
    /// were not read.
    #[error("the row is longer than {limit} bytes, more than any valid row; stopped reading here")]
    RowTooLong { limit: usize },
    /// A JSON Lines line that is not valid JSON.
    #[error("the line is not valid JSON (syntax error at character {position})")]
    MalformedJson {
        /// Where on the line the parser gave up, counting from 1.
        position: usize,
    },
    /// A JSON Lines line that is JSON but not an object.
    #[error("the line is not a JSON object")]
    NotAnObject,
    /// A JSON object key that is not part of the record shape.
    #[error("{} is not part of a record (expected {}, fields)", describe_key(.key.as_deref()), CSV_COLUMNS.join(", "))]
    UnknownKey {
        /// The key, when it is a plain lowercase name (and so not personal data).
        key: Option<String>,
    },
    /// A required column that is empty or absent.
    #[error("column {column} is missing or empty")]
    Missing { column: &'static str },
    /// A JSON value of the wrong type.
    #[error("column {column} must be {expected}")]
    WrongType {
        /// The column (`fields.<name>` for a field).
        column: String,
        /// What it must be, e.g. "a string".
        expected: &'static str,
    },
    /// A record id of the wrong shape.
    #[error(
        "column record_id must be 1-{MAX_RECORD_ID_LEN} ASCII letters, digits, '-', '_' or '.'"
    )]
    BadRecordId,
    /// A record id already used on an earlier line of the file.
    #[error("column record_id repeats the record id of line {first_line}")]
    DuplicateRecordId {
        /// The line that first used it.
        first_line: u64,
    },
    /// A subject that is not a valid identifier under the importing agency's scheme.
    #[error("column subject: {0}")]
    BadSubject(IdentifierError),
    /// A category name that is not one of the nine.
    #[error("column category is not a known category; expected one of {}", Category::ALL.map(Category::as_str).join(", "))]
    UnknownCategory,
    /// A record kind that is not a lowercase snake_case name.
    #[error("column kind must be 1-{MAX_NAME_LEN} lowercase letters, digits or underscores")]
    BadKind,
    /// A date that is not `YYYY-MM-DD`.
    #[error("column {column} is not a real date in the form YYYY-MM-DD")]
    BadDate { column: &'static str },
    /// A timestamp that is not RFC 3339 at or after 1970.
    #[error("column {column} is not an RFC 3339 timestamp at or after 1970, such as 2026-11-26T09:30:00Z")]
    BadTimestamp { column: &'static str },
    /// A source-system name that is empty, too long or has control characters.
    #[error("column source_system must be 1-{MAX_NAME_LEN} printable characters")]
    BadSourceSystem,
    /// A JSON `fields` key that is not a valid field name.
    #[error("a key in fields is not 1-{MAX_NAME_LEN} lowercase letters, digits or underscores")]
    BadFieldName,
    /// A value over its length limit.
    #[error("column {column} is {len} bytes, over the limit of {limit}")]
    ValueTooLong {
        /// The column (`field.<name>` for a field).
        column: String,
        len: usize,
        limit: usize,
    },
    /// More fields than a record may carry.
    #[error("the row has {count} fields, over the limit of {MAX_FIELDS}")]
    TooManyFields {
        /// How many non-empty fields the row has.
        count: usize,
    },
}

fn describe_column(column: Option<&str>) -> String {
    match column {
        Some(c) => format!("column {c}"),
        None => "the line".to_owned(),
    }
}

fn describe_key(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("key {k:?}"),
        None => "a key".to_owned(),
    }
}

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The line in the file (counting from 1) where the row starts; `None` for the whole file.
    pub line: Option<u64>,
    /// What is wrong.
    pub problem: ImportProblem,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.problem),
            None => write!(f, "file: {}", self.problem),
        }
    }
}

/// Why an import was rejected: every problem found, in line order. Nothing was imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors {
    /// The problems, in line order.
    pub errors: Vec<ImportError>,
    /// How many data rows were read (rows after a row-limit breach are not counted).
    pub rows_read: u64,
    /// Problems found beyond those kept in `errors` (when the caller capped them), counted only.
    pub omitted: u64,
}

/// How many problems [`ImportErrors`]' `Display` lists before summarising the rest.
pub const DISPLAY_ERRORS: usize = 100;

impl ImportErrors {
    /// The distinct lines with problems.
    pub fn lines(&self) -> BTreeSet<u64> {
        self.errors.iter().filter_map(|e| e.line).collect()
    }

    /// Every problem as (line, reason), line 0 standing for the whole file: the shape of the
    /// import report sent back to the CLI.
    pub fn rows(&self) -> Vec<(u64, String)> {
        self.errors
            .iter()
            .map(|e| (e.line.unwrap_or(0), e.problem.to_string()))
            .collect()
    }

    /// How many data rows were read.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    fn single(line: Option<u64>, problem: ImportProblem) -> ImportErrors {
        ImportErrors {
            errors: vec![ImportError { line, problem }],
            rows_read: 0,
            omitted: 0,
        }
    }
}

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.lines().len();
        let total = (self.errors.len() as u64).saturating_add(self.omitted);
        write!(
            f,
            "import rejected, nothing was stored: {} problem{} on {}{} line{}",
            total,
            if total == 1 { "" } else { "s" },
            if self.omitted > 0 { "at least " } else { "" },
            rows,
            if rows == 1 { "" } else { "s" },
        )?;
        for e in self.errors.iter().take(DISPLAY_ERRORS) {
            write!(f, "\n  {e}")?;
        }
        let unlisted = total.saturating_sub(DISPLAY_ERRORS as u64);
        if unlisted > 0 {
            write!(f, "\n  ... and {unlisted} more")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportErrors {}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing failed.
    #[error("could not write the export: {0}")]
    Io(#[from] std::io::Error),
    /// The CSV writer failed (in practice, an I/O error underneath).
    #[error("could not write the CSV export: {0}")]
    Csv(#[from] csv::Error),
    /// JSON serialisation failed (in practice, an I/O error underneath).
    #[error("could not write the JSON Lines export: {0}")]
    Json(#[from] serde_json::Error),
    /// A record met while writing a CSV export has a field its columns, fixed when the export
    /// began, lack (records were imported meanwhile).
    #[error("a record gained the field {0:?} while the export was written; export again")]
    NewField(String),
    /// Reading the records failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

// ---------------------------------------------------------------------------------------------
// Import.

/// Imports a whole file held in memory. `scheme` is the importing agency's identifier scheme:
/// every subject must be a valid identifier under it, and is stored normalised.
pub fn import(
    input: &[u8],
    format: ImportFormat,
    scheme: IdScheme,
    limits: &ImportLimits,
) -> Result<Vec<Record>, ImportErrors> {
    if input.len() > limits.max_bytes {
        return Err(ImportErrors::single(
            None,
            ImportProblem::TooLarge {
                limit: limits.max_bytes,
            },
        ));
    }
    import_reader(input, format, scheme, limits)
}

/// Imports a whole file with the default [`ImportLimits`]; see [`import`].
pub fn parse(
    format: ImportFormat,
    input: &[u8],
    scheme: IdScheme,
) -> Result<Vec<Record>, ImportErrors> {
    import(input, format, scheme, &ImportLimits::default())
}

/// Reads at most [`ImportLimits::max_bytes`] from `reader` and imports it; see [`import`]. The
/// file is read as a stream, but every record is kept until the end: for files of any size use
/// [`import_each`].
pub fn import_reader(
    reader: impl Read,
    format: ImportFormat,
    scheme: IdScheme,
    limits: &ImportLimits,
) -> Result<Vec<Record>, ImportErrors> {
    let mut records = Vec::new();
    import_each(reader, format, scheme, limits, usize::MAX, &mut |r| {
        records.push(r);
        true
    })?;
    Ok(records)
}

/// Reads a records file from `reader` as a stream, checking every row as [`import`] does, and
/// hands each good record to `sink` in file order, for as long as every row so far is good (a
/// caller that must store all or nothing therefore waits for the verdict before storing
/// anything, or reads the file twice). `sink` returns false to stop reading early; the result is
/// then that of the rows read so far.
///
/// Memory does not grow with the file: one row at a time is held, plus a 24-byte digest and the
/// line of every record id (for the duplicate check), plus at most `max_errors` problems (the
/// rest are only counted, in [`ImportErrors::omitted`]). Returns the number of rows read.
pub fn import_each(
    reader: impl Read,
    format: ImportFormat,
    scheme: IdScheme,
    limits: &ImportLimits,
    max_errors: usize,
    sink: &mut dyn FnMut(Record) -> bool,
) -> Result<u64, ImportErrors> {
    let state = Rc::new(RefCell::new(SourceState::new(limits, format)));
    let cap = u64::try_from(limits.max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut raw = Counted {
        inner: reader.take(cap),
        state: state.clone(),
    };
    // A UTF-8 byte-order mark is skipped.
    let mut head = Vec::with_capacity(3);
    if let Err(e) = (&mut raw).take(3).read_to_end(&mut head) {
        return Err(ImportErrors::single(None, ImportProblem::Read(e.kind())));
    }
    if head == b"\xEF\xBB\xBF" {
        head.clear();
    }
    let source = Tracker {
        inner: std::io::Cursor::new(head).chain(raw),
        state: state.clone(),
    };
    let mut c = Collector::new(scheme, limits, max_errors, sink);
    match format {
        ImportFormat::Csv => import_csv(source, &state, &mut c),
        ImportFormat::Json => import_jsonl(source, &state, &mut c),
    }
    let st = state.borrow();
    if let Some(kind) = st.io_error {
        return Err(ImportErrors::single(None, ImportProblem::Read(kind)));
    }
    if st.bytes > cap.saturating_sub(1) {
        return Err(ImportErrors::single(
            None,
            ImportProblem::TooLarge {
                limit: limits.max_bytes,
            },
        ));
    }
    c.finish()
}

/// What the layers under the parsers share: bytes read, I/O failure, and (for CSV) the lines
/// seen to be too long and the size of the row being read.
struct SourceState {
    /// Bytes read from the file (including a byte-order mark).
    bytes: u64,
    /// The first I/O error, if reading failed.
    io_error: Option<std::io::ErrorKind>,
    /// Whether to track line lengths (CSV; JSON Lines reads line by line itself).
    track_lines: bool,
    max_line_len: usize,
    /// The line being read (counting from 1), its length so far, whether its last byte so far
    /// is `\r`, and whether it has been found too long.
    line: u64,
    len: usize,
    last_cr: bool,
    marked: bool,
    /// Lines found to be too long (at most one per `max_line_len` bytes of file).
    long: BTreeSet<u64>,
    /// Of those, the ones not yet reported.
    fresh: Vec<u64>,
    /// Bytes handed to the parser, where the row being read started, the most a row may span,
    /// and whether a row went over it.
    pos: u64,
    row_start: u64,
    max_row_bytes: u64,
    row_too_long: bool,
}

impl SourceState {
    fn new(limits: &ImportLimits, format: ImportFormat) -> SourceState {
        // No valid row comes near this: every value within its limit (quotes doubled), plus
        // separators and empty cells no longer than two header lines.
        let max_row = (MAX_FIELDS + CSV_COLUMNS.len())
            .saturating_mul(2 * MAX_VALUE_LEN + 3)
            .saturating_add(limits.max_line_len.saturating_mul(2));
        SourceState {
            bytes: 0,
            io_error: None,
            track_lines: format == ImportFormat::Csv,
            max_line_len: limits.max_line_len,
            line: 1,
            len: 0,
            last_cr: false,
            marked: false,
            long: BTreeSet::new(),
            fresh: Vec::new(),
            pos: 0,
            row_start: 0,
            max_row_bytes: u64::try_from(max_row).unwrap_or(u64::MAX),
            row_too_long: false,
        }
    }

    fn track(&mut self, bytes: &[u8]) {
        self.pos = self.pos.saturating_add(bytes.len() as u64);
        if !self.track_lines {
            return;
        }
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
                self.len = 0;
                self.last_cr = false;
                self.marked = false;
            } else {
                self.len = self.len.saturating_add(1);
                self.last_cr = b == b'\r';
                // The length without a trailing `\r` only grows, so a line can be marked as
                // soon as it is over.
                if !self.marked && self.len - usize::from(self.last_cr) > self.max_line_len {
                    self.marked = true;
                    self.long.insert(self.line);
                    self.fresh.push(self.line);
                }
            }
        }
    }
}

/// The file as read: counts bytes and notes the first I/O error.
struct Counted<R> {
    inner: R,
    state: Rc<RefCell<SourceState>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                let mut st = self.state.borrow_mut();
                st.bytes = st.bytes.saturating_add(n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.state.borrow_mut().io_error.get_or_insert(e.kind());
                }
                Err(e)
            }
        }
    }
}

/// The file after its byte-order mark, as the parser reads it: tracks lines, and cuts off a CSV
/// row longer than any valid row (so that one huge quoted cell cannot take the memory).
struct Tracker<R> {
    inner: R,
    state: Rc<RefCell<SourceState>>,
}

impl<R: Read> Read for Tracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.borrow_mut();
        st.track(buf.get(..n).unwrap_or_default());
        if st.track_lines && st.pos.saturating_sub(st.row_start) > st.max_row_bytes {
            st.row_too_long = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "row too long",
            ));
        }
        Ok(n)
    }
}

/// 16 bytes of SHA-256: enough to tell record ids (or subjects) apart without keeping them.
pub(crate) fn digest16(text: &str) -> [u8; 16] {
    let full = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(full.iter()) {
        *o = *b;
    }
    out
}

/// One row's cells, before checking.
#[derive(Default)]
struct RawRow<'a> {
    record_id: Option<&'a str>,
    subject: Option<&'a str>,
    category: Option<&'a str>,
    kind: Option<&'a str>,
    about: Option<&'a str>,
    recorded_at: Option<&'a str>,
    source_system: Option<&'a str>,
    /// Field name and value, non-empty values only, names already checked.
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> RawRow<'a> {
    fn set(&mut self, column: usize, value: &'a str) {
        let slot = match column {
            0 => &mut self.record_id,
            1 => &mut self.subject,
            2 => &mut self.category,
            3 => &mut self.kind,
            4 => &mut self.about,
            5 => &mut self.recorded_at,
            _ => &mut self.source_system,
        };
        *slot = Some(value);
    }
}

/// Collects problems and duplicate ids across one file, and hands good records to the sink.
struct Collector<'s> {
    scheme: IdScheme,
    limits: ImportLimits,
    sink: &'s mut dyn FnMut(Record) -> bool,
    max_errors: usize,
    errors: Vec<ImportError>,
    /// Problems found beyond `max_errors`.
    omitted: u64,
    /// Digests of the record ids seen, with the line of each.
    seen: HashMap<[u8; 16], u64>,
    rows: usize,
    /// The sink asked to stop.
    stopped: bool,
}

impl<'s> Collector<'s> {
    fn new(
        scheme: IdScheme,
        limits: &ImportLimits,
        max_errors: usize,
        sink: &'s mut dyn FnMut(Record) -> bool,
    ) -> Collector<'s> {
        Collector {
            scheme,
            limits: *limits,
            sink,
            max_errors,
            errors: Vec::new(),
            omitted: 0,
            seen: HashMap::new(),
            rows: 0,
            stopped: false,
        }
    }

    fn error(&mut self, line: u64, problem: ImportProblem) {
        if self.errors.len() < self.max_errors {
            self.errors.push(ImportError {
                line: Some(line),
                problem,
            });
        } else {
            self.omitted = self.omitted.saturating_add(1);
        }
    }

    /// Whether every row so far is good.
    fn clean(&self) -> bool {
        self.errors.is_empty() && self.omitted == 0
    }

    /// Counts a data row; false (with the problem noted) once over the row limit.
    fn count_row(&mut self, line: u64) -> bool {
        self.rows += 1;
        if self.rows > self.limits.max_rows {
            self.error(
                line,
                ImportProblem::TooManyRows {
                    limit: self.limits.max_rows,
                },
            );
            false
        } else {
            true
        }
    }

    /// Checks one row and hands the record on if it (and every row so far) is good.
    fn row(&mut self, line: u64, raw: RawRow<'_>) {
        let mut problems = Vec::new();
        let record = check_row(raw, self.scheme, &mut problems);
        if let Some(id) = record.as_ref().map(|r| r.record_id.as_str()) {
            match self.seen.entry(digest16(id)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    problems.push(ImportProblem::DuplicateRecordId {
                        first_line: *first.get(),
                    });
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(line);
                }
            }
        }
        if problems.is_empty() {
            if let (Some(record), true) = (record, self.clean()) {
                if !(self.sink)(record) {
                    self.stopped = true;
                }
            }
        } else {
            for p in problems {
                self.error(line, p);
            }
        }
    }

    fn finish(self) -> Result<u64, ImportErrors> {
        if self.clean() {
            Ok(self.rows as u64)
        } else {
            let mut errors = self.errors;
            errors.sort_by_key(|e| e.line);
            Err(ImportErrors {
                errors,
                rows_read: self.rows as u64,
                omitted: self.omitted,
            })
        }
    }
}

/// Checks every cell of a row, pushing every problem found. Returns a record whenever the
/// record id is good, so the caller can look for duplicate ids even in a bad row; the record is
/// only usable when no problem was pushed.
fn check_row(
    raw: RawRow<'_>,
    scheme: IdScheme,
    problems: &mut Vec<ImportProblem>,
) -> Option<Record> {
    let record_id = match raw.record_id {
        None => {
            problems.push(ImportProblem::Missing {
                column: "record_id",
            });
            None
        }
        Some(s) => match RecordId::new(s) {
            Ok(id) => Some(id),
            Err(_) => {
                problems.push(ImportProblem::BadRecordId);
                None
            }
        },
    };
    let subject = match raw.subject {
        None => {
            problems.push(ImportProblem::Missing { column: "subject" });
            None
        }
        Some(s) => match normalise(scheme, s) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(ImportProblem::BadSubject(e));
                None
            }
        },
    };
    let category = match raw.category {
        None => {
            problems.push(ImportProblem::Missing { column: "category" });
            None
        }
        Some(s) => match s.parse::<Category>() {
            Ok(c) => Some(c),
            Err(_) => {
                problems.push(ImportProblem::UnknownCategory);
                None
            }
        },
    };
    let kind = match raw.kind {
        None => {
            problems.push(ImportProblem::Missing { column: "kind" });
            None
        }
        Some(s) if valid_name(s) => Some(s.to_owned()),
        Some(_) => {
            problems.push(ImportProblem::BadKind);
            None
        }
    };
    let about = match raw.about {
        None => {
            problems.push(ImportProblem::Missing { column: "about" });
            None
        }
        Some(s) => match Date::parse(s) {
            Ok(d) => Some(d),
            Err(_) => {
                problems.push(ImportProblem::BadDate { column: "about" });
                None
            }
        },
    };
    let recorded_at = match raw.recorded_at {
        None => {
            problems.push(ImportProblem::Missing {
                column: "recorded_at",
            });
            None
        }
        Some(s) if s.len() > 64 => {
            problems.push(ImportProblem::BadTimestamp {
                column: "recorded_at",
            });
            None
        }
        Some(s) => match Timestamp::parse_rfc3339(s) {
            Ok(t) => Some(t),
            Err(_) => {
                problems.push(ImportProblem::BadTimestamp {
                    column: "recorded_at",
                });
                None
            }
        },
    };
    let source_system = match raw.source_system {
        None => {
            problems.push(ImportProblem::Missing {
                column: "source_system",
            });
            None
        }
        Some(s) if s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control) => {
            Some(s.to_owned())
        }
        Some(_) => {
            problems.push(ImportProblem::BadSourceSystem);
            None
        }
    };
    if raw.fields.len() > MAX_FIELDS {
        problems.push(ImportProblem::TooManyFields {
            count: raw.fields.len(),
        });
    }
    let mut fields = BTreeMap::new();
    for (name, value) in raw.fields {
        if value.len() > MAX_VALUE_LEN {
            problems.push(ImportProblem::ValueTooLong {
                column: format!("{FIELD_PREFIX}{name}"),
                len: value.len(),
                limit: MAX_VALUE_LEN,
            });
        } else {
            fields.insert(name.to_owned(), value.to_owned());
        }
    }
    let record_id = record_id?;
    let record = Record {
        record_id,
        subject: subject.unwrap_or_default(),
        category: category.unwrap_or(Category::FinanceAndId),
        kind: kind.unwrap_or_default(),
        fields,
        about: about.unwrap_or_else(|| Timestamp(0).date()),
        recorded_at: recorded_at.unwrap_or(Timestamp(0)),
        source_system: source_system.unwrap_or_default(),
    };
    if problems.is_empty() {
        if let Err(e) = record.validate() {
            problems.push(record_problem(e));
        }
    }
    Some(record)
}

/// Translates a record-shape error into an import problem that quotes no value.
fn record_problem(e: RecordError) -> ImportProblem {
    match e {
        RecordError::BadName { what: "kind", .. } => ImportProblem::BadKind,
        RecordError::BadName { .. } => ImportProblem::BadFieldName,
        RecordError::TooManyFields(count) => ImportProblem::TooManyFields { count },
        RecordError::ValueTooLong { field, len } => ImportProblem::ValueTooLong {
            column: if valid_name(&field) {
                format!("{FIELD_PREFIX}{field}")
            } else {
                "a field".to_owned()
            },
            len,
            limit: MAX_VALUE_LEN,
        },
        RecordError::BadSubject => ImportProblem::Missing { column: "subject" },
        RecordError::BadSource => ImportProblem::BadSourceSystem,
    }
}

/// What a CSV header column holds.
enum ColumnRole {
    /// Standard column `CSV_COLUMNS[i]`.
    Standard(usize),
    /// Field column with this name.
    Field(String),
}

fn parse_header(header: &csv::ByteRecord) -> Result<Vec<ColumnRole>, Vec<ImportProblem>> {
    let mut roles = Vec::with_capacity(header.len());
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, cell) in header.iter().enumerate() {
        let position = i + 1;
        let Ok(name) = std::str::from_utf8(cell) else {
            problems.push(ImportProblem::InvalidUtf8 {
                column: Some(format!("{position} of the header")),
            });
            continue;
        };
        let name = name.trim();
        let role = if let Some(j) = CSV_COLUMNS.iter().position(|c| *c == name) {
            ColumnRole::Standard(j)
        } else if let Some(field) = name.strip_prefix(FIELD_PREFIX) {
            if !valid_name(field) {
                problems.push(ImportProblem::BadFieldColumn { position });
                continue;
            }
            ColumnRole::Field(field.to_owned())
        } else {
            problems.push(ImportProblem::UnknownColumn { position });
            continue;
        };
        if !seen.insert(name.to_owned()) {
            problems.push(ImportProblem::DuplicateColumn {
                column: name.to_owned(),
            });
        }
        roles.push(role);
    }
    for (j, column) in CSV_COLUMNS.iter().enumerate() {
        if !roles
            .iter()
            .any(|r| matches!(r, ColumnRole::Standard(k) if *k == j))
        {
            problems.push(ImportProblem::MissingColumn { column });
        }
    }
    if problems.is_empty() {
        Ok(roles)
    } else {
        Err(problems)
    }
}

/// Reports the lines the tracker has found too long since the last call.
fn report_long_lines(state: &RefCell<SourceState>, c: &mut Collector<'_>) {
    let fresh = std::mem::take(&mut state.borrow_mut().fresh);
    for line in fresh {
        c.error(
            line,
            ImportProblem::LineTooLong {
                limit: c.limits.max_line_len,
            },
        );
    }
}

/// Imports CSV (the byte-order mark, if any, already removed); see [`import`].
fn import_csv<R: Read>(source: Tracker<R>, state: &RefCell<SourceState>, c: &mut Collector<'_>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(source);
    csv_rows(&mut reader, state, c);
    report_long_lines(state, c);
    let failed = {
        let st = state.borrow();
        st.io_error.is_some() || st.row_too_long
    };
    if !failed && !c.stopped {
        // Every line too long is reported, also after the rows stopped being read.
        let mut rest = reader.into_inner();
        state.borrow_mut().max_row_bytes = u64::MAX;
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
        report_long_lines(state, c);
    }
}

/// The rows of a CSV file, up to the end or the first problem that stops reading.
fn csv_rows<R: Read>(
    reader: &mut csv::Reader<Tracker<R>>,
    state: &RefCell<SourceState>,
    c: &mut Collector<'_>,
) {
    let mut header = csv::ByteRecord::new();
    let read = reader.read_byte_record(&mut header);
    report_long_lines(state, c);
    match read {
        Ok(true) => {}
        Ok(false) => {
            c.error(1, ImportProblem::NoHeader);
            return;
        }
        Err(_) => {
            csv_failure(state, c, 1);
            return;
        }
    }
    let header_line = header.position().map_or(1, csv::Position::line);
    if state.borrow().long.contains(&header_line) {
        return;
    }
    let roles = match parse_header(&header) {
        Ok(roles) => roles,
        Err(problems) => {
            for p in problems {
                c.error(header_line, p);
            }
            return;
        }
    };
    let mut row = csv::ByteRecord::new();
    while !c.stopped {
        let line = reader.position().line();
        state.borrow_mut().row_start = reader.position().byte();
        let read = reader.read_byte_record(&mut row);
        report_long_lines(state, c);
        match read {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                csv_failure(state, c, line);
                break;
            }
        }
        let line = row.position().map_or(line, csv::Position::line);
        if !c.count_row(line) {
            break;
        }
        // A quoted cell may span lines; skip rows touching a line already reported as too long.
        let newlines: usize = row
            .iter()
            .map(|cell| cell.iter().filter(|b| **b == b'\n').count())
            .sum();
        let last = line.saturating_add(newlines as u64);
        if state.borrow().long.range(line..=last).next().is_some() {
            continue;
        }
        if row.len() != roles.len() {
            c.error(
                line,
                ImportProblem::ColumnCount {
                    expected: roles.len(),
                    found: row.len(),
                },
            );
            continue;
        }
        let mut raw = RawRow::default();
        let mut bad_utf8 = false;
        for (role, cell) in roles.iter().zip(row.iter()) {
            let Ok(text) = std::str::from_utf8(cell) else {
                let column = match role {
                    ColumnRole::Standard(j) => CSV_COLUMNS.get(*j).map(|s| (*s).to_owned()),
                    ColumnRole::Field(name) => Some(format!("{FIELD_PREFIX}{name}")),
                };
                c.error(line, ImportProblem::InvalidUtf8 { column });
                bad_utf8 = true;
                continue;
            };
            if text.is_empty() {
                continue;
            }
            match role {
                ColumnRole::Standard(j) => raw.set(*j, text),
                ColumnRole::Field(name) => raw.fields.push((name.as_str(), text)),
            }
        }
        if bad_utf8 {
            continue;
        }
        c.row(line, raw);
    }
}

/// Notes why the CSV reader failed at the row starting on `line`: a row too long, or CSV that
/// cannot be parsed (an I/O failure is reported for the whole file by [`import_each`]).
fn csv_failure(state: &RefCell<SourceState>, c: &mut Collector<'_>, line: u64) {
    let (row_too_long, limit) = {
        let st = state.borrow();
        (st.row_too_long, st.max_row_bytes)
    };
    if row_too_long {
        c.error(
            line,
            ImportProblem::RowTooLong {
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
        );
    } else {
        c.error(line, ImportProblem::MalformedCsv);
    }
}

/// One physical line as [`read_line`] saw it.
struct LineInfo {
    /// Its length in bytes, without the `\n`.
    len: usize,
    /// Whether it ends in `\r`.
    last_cr: bool,
    /// Whether it is all ASCII whitespace.
    blank: bool,
}

/// Reads one line into `buf` (without its `\n`), keeping at most `keep` bytes of it; the rest
/// is read and dropped. None at the end of the input.
fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    keep: usize,
) -> std::io::Result<Option<LineInfo>> {
    buf.clear();
    let mut info = LineInfo {
        len: 0,
        last_cr: false,
        blank: true,
    };
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(info));
        }
        any = true;
        let end = avail.iter().position(|b| *b == b'\n');
        let part = avail.get(..end.unwrap_or(avail.len())).unwrap_or_default();
        for &b in part {
            info.blank &= b.is_ascii_whitespace();
        }
        if let Some(&b) = part.last() {
            info.last_cr = b == b'\r';
        }
        info.len = info.len.saturating_add(part.len());
        let room = keep.saturating_sub(buf.len()).min(part.len());
        buf.extend_from_slice(part.get(..room).unwrap_or_default());
        let used = part.len() + usize::from(end.is_some());
        r.consume(used);
        if end.is_some() {
            return Ok(Some(info));
        }
    }
}

/// Imports JSON Lines (the byte-order mark, if any, already removed); see [`import`].
fn import_jsonl<R: Read>(source: Tracker<R>, _state: &RefCell<SourceState>, c: &mut Collector<'_>) {
    let max = c.limits.max_line_len;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, source);
    let mut buf = Vec::new();
    let mut line = 0u64;
    while !c.stopped {
        let Ok(Some(info)) = read_line(&mut reader, &mut buf, max.saturating_add(1)) else {
            // The end, or an I/O failure (reported for the whole file by `import_each`).
            break;
        };
        line += 1;
        if info.blank {
            continue;
        }
        if !c.count_row(line) {
            break;
        }
        if info.len - usize::from(info.last_cr) > max {
            c.error(line, ImportProblem::LineTooLong { limit: max });
            continue;
        }
        let bytes = buf.strip_suffix(b"\r").unwrap_or(&buf);
        let Ok(text) = std::str::from_utf8(bytes) else {
            c.error(line, ImportProblem::InvalidUtf8 { column: None });
            continue;
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                c.error(
                    line,
                    ImportProblem::MalformedJson {
                        position: e.column(),
                    },
                );
                continue;
            }
        };
        match json_row(&value) {
            Ok(raw) => c.row(line, raw),
            Err(problems) => {
                for p in problems {
                    c.error(line, p);
                }
            }
        }
    }
}

/// Checks one record given as a JSON object of the JSON Lines import format, exactly as an
/// imported row is checked (every cell, then [`Record::validate`]). Live record sources hand
/// every row they read through this, so a source can disclose nothing an import would refuse.
pub fn check_json_record(
    value: &serde_json::Value,
    scheme: IdScheme,
) -> Result<Record, Vec<ImportProblem>> {
    let raw = json_row(value)?;
    let mut problems = Vec::new();
    let record = check_row(raw, scheme, &mut problems);
    match record {
        Some(r) if problems.is_empty() => Ok(r),
        _ => Err(problems),
    }
}

/// Picks a JSON object apart into a row, checking types and keys.
fn json_row(value: &serde_json::Value) -> Result<RawRow<'_>, Vec<ImportProblem>> {
    let serde_json::Value::Object(map) = value else {
        return Err(vec![ImportProblem::NotAnObject]);
    };
    let mut raw = RawRow::default();
    let mut problems = Vec::new();
    for (key, v) in map {
        if let Some(j) = CSV_COLUMNS.iter().position(|c| c == key) {
            match v {
                serde_json::Value::String(s) if !s.is_empty() => raw.set(j, s),
                serde_json::Value::String(_) | serde_json::Value::Null => {}
                _ => problems.push(ImportProblem::WrongType {
                    column: key.clone(),
                    expected: "a string",
                }),
            }
        } else if key == "fields" {
            match v {
                serde_json::Value::Object(fields) => {
                    for (name, fv) in fields {
                        if !valid_name(name) {
                            problems.push(ImportProblem::BadFieldName);
                            continue;
                        }
                        match fv {
                            serde_json::Value::String(s) if !s.is_empty() => {
                                raw.fields.push((name, s));
                            }
                            serde_json::Value::String(_) | serde_json::Value::Null => {}
                            _ => problems.push(ImportProblem::WrongType {
                                column: format!("fields.{name}"),
                                expected: "a string or null",
                            }),
                        }
                    }
                }
                serde_json::Value::Null => {}
                _ => problems.push(ImportProblem::WrongType {
                    column: "fields".to_owned(),
                    expected: "an object of field names to strings",
                }),
            }
        } else {
            problems.push(ImportProblem::UnknownKey {
                key: valid_name(key).then(|| key.clone()),
            });
        }
    }
    if problems.is_empty() {
        Ok(raw)
    } else {
        Err(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// Export.

/// Writes records as CSV in exactly the layout [`import`] reads: the standard columns in the
/// order of [`CSV_COLUMNS`], then one `field.<name>` column for every field name any record
/// uses, sorted. Empty field values are written as empty cells, which read back as absent.
pub fn export_csv<W: Write>(records: &[Record], writer: W) -> Result<(), ExportError> {
    let mut names = BTreeSet::new();
    add_field_names(records, &mut names);
    let mut csv = CsvExport::new(writer, names)?;
    for r in records {
        csv.write(r)?;
    }
    csv.finish()
}

/// Adds every field name `records` use to `names`: the field columns of their CSV export.
pub fn add_field_names(records: &[Record], names: &mut BTreeSet<String>) {
    for r in records {
        for n in r.fields.keys() {
            if !names.contains(n) {
                names.insert(n.clone());
            }
        }
    }
}

/// A CSV export written a record at a time, its field columns fixed when it starts, so records
/// can come a page at a time (as [`export_csv`] writes them all at once).
pub struct CsvExport<W: Write> {
    w: csv::Writer<W>,
    names: BTreeSet<String>,
}

impl<W: Write> CsvExport<W> {
    /// Starts the export: writes the header, the standard columns then a `field.<name>` column
    /// for each of `names`, sorted.
    pub fn new(writer: W, names: BTreeSet<String>) -> Result<CsvExport<W>, ExportError> {
        let mut w = csv::WriterBuilder::new().from_writer(writer);
        w.write_record(
            CSV_COLUMNS
                .iter()
                .map(|c| (*c).to_owned())
                .chain(names.iter().map(|n| format!("{FIELD_PREFIX}{n}"))),
        )?;
        Ok(CsvExport { w, names })
    }

    /// Writes one record. A record with a field that has no column is refused
    /// ([`ExportError::NewField`]): it changed after the columns were fixed.
    pub fn write(&mut self, r: &Record) -> Result<(), ExportError> {
        if let Some(n) = r.fields.keys().find(|n| !self.names.contains(*n)) {
            return Err(ExportError::NewField(n.clone()));
        }
        self.w.write_field(r.record_id.as_str())?;
        self.w.write_field(&r.subject)?;
        self.w.write_field(r.category.as_str())?;
        self.w.write_field(&r.kind)?;
        self.w.write_field(r.about.to_string())?;
        self.w.write_field(r.recorded_at.to_rfc3339())?;
        self.w.write_field(&r.source_system)?;
        for n in &self.names {
            self.w
                .write_field(r.fields.get(n).map_or("", String::as_str))?;
        }
        self.w.write_record(None::<&[u8]>)?;
        Ok(())
    }

    /// Finishes the export (flushes what is buffered).
    pub fn finish(mut self) -> Result<(), ExportError> {
        self.w.flush()?;
        Ok(())
    }
}

/// One record as a JSON Lines object.
#[derive(Serialize)]
struct JsonRecord<'a> {
    record_id: &'a str,
    subject: &'a str,
    category: &'static str,
    kind: &'a str,
    fields: &'a BTreeMap<String, String>,
    about: String,
    recorded_at: String,
    source_system: &'a str,
}

/// Writes records as JSON Lines in exactly the shape [`import`] reads, one object per line.
pub fn export_jsonl<'a, W: Write>(
    records: impl IntoIterator<Item = &'a Record>,
    writer: W,
) -> Result<(), ExportError> {
    let mut w = std::io::BufWriter::new(writer);
    for r in records {
        let row = JsonRecord {
            record_id: r.record_id.as_str(),
            subject: &r.subject,
            category: r.category.as_str(),
            kind: &r.kind,
            fields: &r.fields,
            about: r.about.to_string(),
            recorded_at: r.recorded_at.to_rfc3339(),
            source_system: &r.source_system,
        };
        serde_json::to_writer(&mut w, &row)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Writes records in `format`; see [`export_csv`] and [`export_jsonl`].
pub fn export<W: Write>(
    records: &[Record],
    format: ImportFormat,
    writer: W,
) -> Result<(), ExportError> {
    match format {
        ImportFormat::Csv => export_csv(records, writer),
        ImportFormat::Json => export_jsonl(records, writer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

    const HEADER: &str = "record_id,subject,category,kind,about,recorded_at,source_system,field.status,field.practice";
    const GOOD: &str = "r1,943 476 5919,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,registered,Calverdale Surgery";

    fn csv(rows: &[&str]) -> Vec<u8> {
        let mut s = String::from(HEADER);
        for r in rows {
            s.push('\n');
            s.push_str(r);
        }
        s.push('\n');
        s.into_bytes()
    }

    fn import_nhs(input: &[u8], format: ImportFormat) -> Result<Vec<Record>, ImportErrors> {
        import(input, format, IdScheme::NhsNumber, &ImportLimits::default())
    }

    /// [`import_each`] of a CSV file under the NHS-number scheme and the default limits,
    /// keeping at most `max_errors` problems.
    fn each_nhs_csv(
        input: &[u8],
        max_errors: usize,
        sink: &mut dyn FnMut(Record) -> bool,
    ) -> Result<u64, ImportErrors> {
        import_each(
            input,
            ImportFormat::Csv,
            IdScheme::NhsNumber,
            &ImportLimits::default(),
            max_errors,
            sink,
        )
    }

    /// The single error of a one-bad-row import, with its line.
    fn only_error(input: &[u8], format: ImportFormat) -> (Option<u64>, ImportProblem, String) {
        let errs = import_nhs(input, format).unwrap_err();
        assert_eq!(errs.errors.len(), 1, "{errs}");
        let e = errs.errors[0].clone();
        (e.line, e.problem.clone(), e.to_string())
    }

    fn sample() -> (
        SynthConfig,
        Vec<(
            &'static throughgate_testkit::agencies::DemoAgency,
            Vec<Record>,
        )>,
    ) {
        let cfg = SynthConfig::new(7, 300, Date::parse("2026-03-02").unwrap());
        let pop = generate_population(&cfg);
        let out = throughgate_testkit::agencies::demo_agencies()
            .iter()
            .map(|a| (a, records_for(a.id, &pop, &cfg).unwrap()))
            .collect();
        (cfg, out)
    }

    #[test]
    fn csv_and_jsonl_round_trip_generated_records() {
        let (_, all) = sample();
        for (agency, records) in all {
            let mut buf = Vec::new();
            export_csv(&records, &mut buf).unwrap();
            let back = import(
                &buf,
                ImportFormat::Csv,
                agency.scheme,
                &ImportLimits::default(),
            )
            .unwrap();
            assert_eq!(back, records, "{} csv", agency.id);

            let mut buf = Vec::new();
            export_jsonl(&records, &mut buf).unwrap();
            let back = import(
                &buf,
                ImportFormat::Json,
                agency.scheme,
                &ImportLimits::default(),
            )
            .unwrap();
            assert_eq!(back, records, "{} jsonl", agency.id);
        }
    }

    #[test]
    fn good_csv_is_normalised() {
        let records = import_nhs(&csv(&[GOOD]), ImportFormat::Csv).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].subject, "9434765919");
        assert_eq!(records[0].fields["status"], "registered");
        assert_eq!(records[0].category, Category::Health);
        // Columns in another order, a BOM, CRLF and blank lines are all fine.
        let text = "\u{feff}field.status,source_system,recorded_at,about,kind,category,subject,record_id\r\n\r\nopen,SystmOne,2026-01-02T09:30:00+01:00,2026-01-02,gp_registration,health,9434765919,r9\r\n";
        let records = import_nhs(text.as_bytes(), ImportFormat::Csv).unwrap();
        assert_eq!(records[0].record_id.as_str(), "r9");
        assert_eq!(records[0].recorded_at.to_rfc3339(), "2026-01-02T08:30:00Z");
    }

    #[test]
    fn empty_field_cells_are_absent() {
        let row =
            "r1,9434765919,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,,X";
        let records = import_nhs(&csv(&[row]), ImportFormat::Csv).unwrap();
        assert!(!records[0].fields.contains_key("status"));
        assert_eq!(records[0].fields.len(), 1);
    }

    #[test]
    fn one_bad_row_among_good_ones_rejects_the_file_and_names_the_line() {
        let bad = GOOD.replace("r1,", "r3,").replace("health", "housing");
        let input = csv(&[
            GOOD,
            &GOOD.replace("r1,", "r2,"),
            &bad,
            &GOOD.replace("r1,", "r4,"),
        ]);
        let errs = import_nhs(&input, ImportFormat::Csv).unwrap_err();
        assert_eq!(errs.lines().into_iter().collect::<Vec<_>>(), vec![4]);
        assert_eq!(errs.errors[0].problem, ImportProblem::UnknownCategory);
        let text = errs.to_string();
        assert!(text.contains("line 4: column category"), "{text}");
        assert!(text.contains("nothing was stored"), "{text}");
    }

    #[test]
    fn every_bad_row_is_listed() {
        let input = csv(&[
            &GOOD.replace("health", "nope"),
            &GOOD.replace("r1,", "r2,"),
            &GOOD
                .replace("r1,", "r3,")
                .replace("2026-01-02,", "2026-02-30,"),
            &GOOD.replace("r1,", "r4,").replace("SystmOne", ""),
        ]);
        let errs = import_nhs(&input, ImportFormat::Csv).unwrap_err();
        assert_eq!(errs.lines().into_iter().collect::<Vec<_>>(), vec![2, 4, 5]);
        assert_eq!(errs.rows_read(), 4);
    }

    #[test]
    fn bad_category() {
        let (line, p, text) = only_error(
            &csv(&[&GOOD.replace("health", "housing")]),
            ImportFormat::Csv,
        );
        assert_eq!(line, Some(2));
        assert_eq!(p, ImportProblem::UnknownCategory);
        assert!(
            text.contains("column category is not a known category"),
            "{text}"
        );
        assert!(!text.contains("housing"), "{text}");
    }

    #[test]
    fn bad_dates() {
        let (_, p, text) = only_error(
            &csv(&[&GOOD.replace("2026-01-02,", "02/01/2026,")]),
            ImportFormat::Csv,
        );
        assert_eq!(p, ImportProblem::BadDate { column: "about" });
        assert!(!text.contains("02/01"), "{text}");
        let (_, p, _) = only_error(
            &csv(&[&GOOD.replace("2026-01-02T09:30:00Z", "2026-01-02 09:30")]),
            ImportFormat::Csv,
        );
        assert_eq!(
            p,
            ImportProblem::BadTimestamp {
                column: "recorded_at"
            }
        );
    }

    #[test]
    fn bad_nhs_check_digit_is_reported_without_the_number() {
        let (line, p, text) = only_error(
            &csv(&[&GOOD.replace("943 476 5919", "943 476 5918")]),
            ImportFormat::Csv,
        );
        assert_eq!(line, Some(2));
        assert_eq!(p, ImportProblem::BadSubject(IdentifierError::NhsCheckDigit));
        assert!(
            text.contains("column subject: NHS number check digit"),
            "{text}"
        );
        for digits in ["9434765918", "943 476 5918", "4765918", "5918"] {
            assert!(!text.contains(digits), "{text}");
        }
        // Wrong shape for the importing scheme, e.g. a NOMS number given to the NHS.
        let (_, p, text) = only_error(
            &csv(&[&GOOD.replace("943 476 5919", "A1234BC")]),
            ImportFormat::Csv,
        );
        assert_eq!(
            p,
            ImportProblem::BadSubject(IdentifierError::Shape(IdScheme::NhsNumber))
        );
        assert!(!text.contains("A1234BC"), "{text}");
    }

    #[test]
    fn duplicate_record_id() {
        let (line, p, text) = only_error(&csv(&[GOOD, GOOD]), ImportFormat::Csv);
        assert_eq!(line, Some(3));
        assert_eq!(p, ImportProblem::DuplicateRecordId { first_line: 2 });
        assert!(
            text.contains("line 3: column record_id repeats the record id of line 2"),
            "{text}"
        );
    }

    #[test]
    fn too_long_value() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let (_, p, text) = only_error(
            &csv(&[&GOOD.replace("registered", &long)]),
            ImportFormat::Csv,
        );
        assert_eq!(
            p,
            ImportProblem::ValueTooLong {
                column: "field.status".into(),
                len: MAX_VALUE_LEN + 1,
                limit: MAX_VALUE_LEN
            }
        );
        assert!(!text.contains("xxxx"), "{text}");
    }

    #[test]
    fn too_many_fields() {
        let names: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("field.f{i}")).collect();
        let header = format!("{},{}", CSV_COLUMNS.join(","), names.join(","));
        let cells = vec!["v"; names.len()].join(",");
        let input =
            format!("{header}\nr1,9434765919,health,k,2026-01-02,2026-01-02T09:30:00Z,S,{cells}\n");
        let (line, p, _) = only_error(input.as_bytes(), ImportFormat::Csv);
        assert_eq!(line, Some(2));
        assert_eq!(
            p,
            ImportProblem::TooManyFields {
                count: MAX_FIELDS + 1
            }
        );
    }

    #[test]
    fn missing_column() {
        let input = b"record_id,subject,category,kind,about,source_system\nr1,9434765919,health,k,2026-01-02,S\n";
        let (line, p, text) = only_error(input, ImportFormat::Csv);
        assert_eq!(line, Some(1));
        assert_eq!(
            p,
            ImportProblem::MissingColumn {
                column: "recorded_at"
            }
        );
        assert!(
            text.contains("the header has no recorded_at column"),
            "{text}"
        );
        // Unknown and badly named columns are named by position only.
        let input = b"record_id,subject,category,kind,about,recorded_at,source_system,Jane Smith,field.Bad\n";
        let errs = import_nhs(input, ImportFormat::Csv).unwrap_err();
        assert_eq!(
            errs.errors
                .iter()
                .map(|e| e.problem.clone())
                .collect::<Vec<_>>(),
            vec![
                ImportProblem::UnknownColumn { position: 8 },
                ImportProblem::BadFieldColumn { position: 9 }
            ]
        );
        assert!(!errs.to_string().contains("Jane"));
        assert_eq!(
            only_error(b"", ImportFormat::Csv).1,
            ImportProblem::NoHeader
        );
        let dup = format!("{HEADER},field.status\n");
        assert_eq!(
            only_error(dup.as_bytes(), ImportFormat::Csv).1,
            ImportProblem::DuplicateColumn {
                column: "field.status".into()
            }
        );
    }

    #[test]
    fn wrong_column_count() {
        let (line, p, text) = only_error(&csv(&[&format!("{GOOD},extra")]), ImportFormat::Csv);
        assert_eq!(line, Some(2));
        assert_eq!(
            p,
            ImportProblem::ColumnCount {
                expected: 9,
                found: 10
            }
        );
        assert!(
            text.contains("the row has 10 columns but the header has 9"),
            "{text}"
        );
    }

    #[test]
    fn invalid_utf8() {
        let mut input = csv(&[GOOD]);
        let at = input.len() - 5;
        input[at] = 0xFF;
        let (line, p, text) = only_error(&input, ImportFormat::Csv);
        assert_eq!(line, Some(2));
        assert_eq!(
            p,
            ImportProblem::InvalidUtf8 {
                column: Some("field.practice".into())
            }
        );
        assert!(
            text.contains("column field.practice is not valid UTF-8"),
            "{text}"
        );

        let mut jsonl = json_good().into_bytes();
        jsonl.push(b'\n');
        jsonl.extend_from_slice(b"{\"record_id\":\"\xC3\"}\n");
        let (line, p, _) = only_error(&jsonl, ImportFormat::Json);
        assert_eq!(line, Some(2));
        assert_eq!(p, ImportProblem::InvalidUtf8 { column: None });
    }

    #[test]
    fn quoted_multiline_cells_report_the_starting_line() {
        let row = "r2,9434765919,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,\"two\nlines\",X";
        let bad = "r3,9434765919,nope,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,a,b";
        let errs = import_nhs(&csv(&[row, bad]), ImportFormat::Csv).unwrap_err();
        assert_eq!(errs.lines().into_iter().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = ImportLimits {
            max_bytes: 100,
            ..ImportLimits::default()
        };
        let errs = import(
            &csv(&[GOOD]),
            ImportFormat::Csv,
            IdScheme::NhsNumber,
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            errs.errors[0],
            ImportError {
                line: None,
                problem: ImportProblem::TooLarge { limit: 100 }
            }
        );
        let errs = import_reader(
            &csv(&[GOOD])[..],
            ImportFormat::Csv,
            IdScheme::NhsNumber,
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            errs.errors[0].problem,
            ImportProblem::TooLarge { limit: 100 }
        );

        let limits = ImportLimits {
            max_rows: 2,
            ..ImportLimits::default()
        };
        let rows = [
            GOOD,
            &GOOD.replace("r1,", "r2,"),
            &GOOD.replace("r1,", "r3,"),
        ];
        let errs =
            import(&csv(&rows), ImportFormat::Csv, IdScheme::NhsNumber, &limits).unwrap_err();
        assert_eq!(
            errs.errors[0],
            ImportError {
                line: Some(4),
                problem: ImportProblem::TooManyRows { limit: 2 }
            }
        );
        assert!(import(
            &csv(&rows[..2]),
            ImportFormat::Csv,
            IdScheme::NhsNumber,
            &limits
        )
        .is_ok());

        let limits = ImportLimits {
            max_line_len: 150,
            ..ImportLimits::default()
        };
        let long = GOOD.replace("Calverdale Surgery", &"y".repeat(100));
        let errs = import(
            &csv(&[GOOD, &long]),
            ImportFormat::Csv,
            IdScheme::NhsNumber,
            &limits,
        )
        .unwrap_err();
        assert_eq!(errs.errors.len(), 1, "{errs}");
        assert_eq!(
            errs.errors[0],
            ImportError {
                line: Some(3),
                problem: ImportProblem::LineTooLong { limit: 150 }
            }
        );
        let jsonl = format!(
            "{}\n",
            json_good().replace("Calverdale Surgery", &"y".repeat(200))
        );
        let errs = import(
            jsonl.as_bytes(),
            ImportFormat::Json,
            IdScheme::NhsNumber,
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            errs.errors[0].problem,
            ImportProblem::LineTooLong { limit: 150 }
        );
    }

    fn json_good() -> String {
        r#"{"record_id":"r1","subject":"9434765919","category":"health","kind":"gp_registration","fields":{"status":"registered","practice":"Calverdale Surgery"},"about":"2026-01-02","recorded_at":"2026-01-02T09:30:00Z","source_system":"SystmOne"}"#.to_owned()
    }

    #[test]
    fn jsonl_problems() {
        let good = json_good();
        let records = import_nhs(format!("\n{good}\n\n").as_bytes(), ImportFormat::Json).unwrap();
        assert_eq!(records.len(), 1);

        let cases: Vec<(String, ImportProblem)> = vec![
            (
                "{\"record_id\": ".into(),
                ImportProblem::MalformedJson { position: 14 },
            ),
            ("[1,2]".into(), ImportProblem::NotAnObject),
            (
                good.replace("\"r1\"", "\"r 1\""),
                ImportProblem::BadRecordId,
            ),
            (
                good.replace("\"about\"", "\"aboot\""),
                ImportProblem::UnknownKey {
                    key: Some("aboot".into()),
                },
            ),
            (
                good.replace(
                    "\"recorded_at\":\"2026-01-02T09:30:00Z\"",
                    "\"recorded_at\":1767346200",
                ),
                ImportProblem::WrongType {
                    column: "recorded_at".into(),
                    expected: "a string",
                },
            ),
            (
                good.replace("\"status\":\"registered\"", "\"status\":3"),
                ImportProblem::WrongType {
                    column: "fields.status".into(),
                    expected: "a string or null",
                },
            ),
            (
                good.replace("\"status\"", "\"Status\""),
                ImportProblem::BadFieldName,
            ),
            (
                good.replace("9434765919", "9434765918"),
                ImportProblem::BadSubject(IdentifierError::NhsCheckDigit),
            ),
            (
                good.replace("\"kind\":\"gp_registration\",", ""),
                ImportProblem::Missing { column: "kind" },
            ),
            (
                good.replace("gp_registration", "GP Registration"),
                ImportProblem::BadKind,
            ),
        ];
        for (line, expected) in cases {
            let input = format!("{good}\n{}\n", line.replace("\"r1\"", "\"r2\""));
            let (at, p, text) = only_error(input.as_bytes(), ImportFormat::Json);
            assert_eq!(at, Some(2), "{text}");
            assert_eq!(p, expected, "{text}");
            assert!(!text.contains("943476591"), "{text}");
        }
        let dup = format!("{good}\n{good}\n");
        assert_eq!(
            only_error(dup.as_bytes(), ImportFormat::Json).1,
            ImportProblem::DuplicateRecordId { first_line: 1 }
        );
    }

    #[test]
    fn reasons_never_quote_cells() {
        let secret_rows = [
            "r1,A1234BC,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,registered,X",
            "Jane Smith,9434765919,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,registered,X",
            "r3,9434765919,Jane Smith,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,registered,X",
            "r4,9434765919,health,Jane Smith,2026-01-02,2026-01-02T09:30:00Z,SystmOne,registered,X",
            "r5,9434765919,health,k,1984-13-40,2026-01-02T09:30:00Z,SystmOne,registered,X",
            "r6,9434765919,health,k,2026-01-02,1984-13-40,SystmOne,registered,X",
            "r7,9434765919,health,k,2026-01-02,2026-01-02T09:30:00Z,Jane\u{7}Smith,registered,X",
        ];
        let errs = import_nhs(&csv(&secret_rows), ImportFormat::Csv).unwrap_err();
        assert_eq!(errs.lines().len(), secret_rows.len(), "{errs}");
        let text = errs.to_string();
        for secret in ["A1234BC", "1234", "Jane", "Smith", "1984", "13-40"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn formats_from_names_and_paths() {
        assert_eq!(format_from_name("csv"), Some(ImportFormat::Csv));
        assert_eq!(format_from_name("jsonl"), Some(ImportFormat::Json));
        assert_eq!(format_from_name("xml"), None);
        assert_eq!(
            format_from_path(Path::new("a/b.CSV")),
            Some(ImportFormat::Csv)
        );
        assert_eq!(
            format_from_path(Path::new("b.ndjson")),
            Some(ImportFormat::Json)
        );
        assert_eq!(format_from_path(Path::new("b")), None);
    }

    #[test]
    fn report_shape_for_the_node() {
        let input = csv(&[GOOD, &GOOD.replace("r1,", "r2,").replace("health", "x")]);
        let errs = parse(ImportFormat::Csv, &input, IdScheme::NhsNumber).unwrap_err();
        assert_eq!(errs.rows_read(), 2);
        let rows = errs.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 3);
        assert!(rows[0].1.starts_with("column category"));
    }

    /// Hands out one byte per read, so every line and row straddles reads.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn streaming_in_tiny_reads_matches_the_whole_file() {
        let tight = ImportLimits {
            max_line_len: 150,
            max_rows: 3,
            ..ImportLimits::default()
        };
        let long = GOOD.replace("Calverdale Surgery", &"y".repeat(100));
        let multiline = "r2,9434765919,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,\"two\nlines\",X";
        let csv_inputs: Vec<(Vec<u8>, ImportLimits)> = vec![
            (csv(&[GOOD]), ImportLimits::default()),
            (
                format!("\u{feff}{HEADER}\r\n\r\n{GOOD}\r\n").into_bytes(),
                ImportLimits::default(),
            ),
            (csv(&[GOOD, multiline]), ImportLimits::default()),
            (csv(&[GOOD, &long, multiline]), tight),
            (
                csv(&[GOOD, &GOOD.replace("r1,", "r2,"), &long, GOOD, GOOD]),
                tight,
            ),
            (
                csv(&[GOOD, GOOD, &GOOD.replace("health", "nope")]),
                ImportLimits::default(),
            ),
            (b"".to_vec(), ImportLimits::default()),
            (b"\xEF\xBB".to_vec(), ImportLimits::default()),
        ];
        let good = json_good();
        let jsonl_inputs: Vec<(Vec<u8>, ImportLimits)> = vec![
            (
                format!("\n{good}\r\n\n").into_bytes(),
                ImportLimits::default(),
            ),
            (
                format!("{good}\n{good}").into_bytes(),
                ImportLimits::default(),
            ),
            (
                format!(
                    "{good}\n{}\n   \n[1]",
                    good.replace("r1", "r2")
                        .replace("Calverdale", &"y".repeat(200))
                )
                .into_bytes(),
                tight,
            ),
        ];
        let inputs = csv_inputs
            .into_iter()
            .map(|(i, l)| (i, l, ImportFormat::Csv))
            .chain(
                jsonl_inputs
                    .into_iter()
                    .map(|(i, l)| (i, l, ImportFormat::Json)),
            );
        for (input, limits, format) in inputs {
            let whole = import(&input, format, IdScheme::NhsNumber, &limits);
            let mut streamed = Vec::new();
            let rows = import_each(
                OneByte(&input),
                format,
                IdScheme::NhsNumber,
                &limits,
                usize::MAX,
                &mut |r| {
                    streamed.push(r);
                    true
                },
            );
            match (whole, rows) {
                (Ok(records), Ok(n)) => {
                    assert_eq!(records, streamed);
                    assert_eq!(n, records.len() as u64);
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(&input)),
                (a, b) => panic!("{a:?} / {b:?}: {}", String::from_utf8_lossy(&input)),
            }
        }
    }

    #[test]
    fn problems_past_the_cap_are_counted_not_kept() {
        let rows: Vec<String> = (0..10)
            .map(|i| {
                GOOD.replace("r1,", &format!("r{i},"))
                    .replace("health", "nope")
            })
            .collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let input = csv(&rows);
        let mut seen = 0;
        let errs = each_nhs_csv(&input, 3, &mut |_| {
            seen += 1;
            true
        })
        .unwrap_err();
        assert_eq!(seen, 0);
        assert_eq!(errs.errors.len(), 3);
        assert_eq!(errs.omitted, 7);
        assert_eq!(errs.rows_read(), 10);
        assert_eq!(errs.lines().into_iter().collect::<Vec<_>>(), vec![2, 3, 4]);
        let text = errs.to_string();
        assert!(text.contains("10 problems on at least 3 lines"), "{text}");
    }

    #[test]
    fn good_rows_reach_the_sink_until_a_bad_one_and_the_sink_can_stop() {
        let input = csv(&[
            GOOD,
            &GOOD.replace("r1,", "r2,"),
            &GOOD.replace("r1,", "r3,").replace("health", "nope"),
            &GOOD.replace("r1,", "r4,"),
        ]);
        let mut ids = Vec::new();
        let errs = each_nhs_csv(&input, usize::MAX, &mut |r| {
            ids.push(r.record_id.as_str().to_owned());
            true
        })
        .unwrap_err();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(errs.lines().into_iter().collect::<Vec<_>>(), vec![4]);

        let input = csv(&[
            GOOD,
            &GOOD.replace("r1,", "r2,"),
            &GOOD.replace("r1,", "r3,"),
        ]);
        let mut n = 0;
        let rows = each_nhs_csv(&input, usize::MAX, &mut |_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!((n, rows), (2, 2));
    }

    #[test]
    fn a_huge_quoted_cell_stops_reading_instead_of_filling_memory() {
        let mut input = csv(&[GOOD]);
        input.extend_from_slice(
            b"r2,9434765919,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,\"",
        );
        for _ in 0..1_000_000 {
            input.extend_from_slice(b"a\n");
        }
        input.extend_from_slice(b"\",X\n");
        input.extend_from_slice(&csv(&[&GOOD.replace("r1,", "r3,")])[HEADER.len() + 1..]);
        let errs = import_nhs(&input, ImportFormat::Csv).unwrap_err();
        assert_eq!(errs.errors.len(), 1, "{errs}");
        assert_eq!(errs.errors[0].line, Some(3));
        assert!(matches!(
            errs.errors[0].problem,
            ImportProblem::RowTooLong { .. }
        ));
        assert_eq!(errs.rows_read(), 1);
    }

    #[test]
    fn a_failing_reader_is_a_file_problem() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        for format in [ImportFormat::Csv, ImportFormat::Json] {
            let errs = import_reader(
                std::io::Cursor::new(csv(&[GOOD])).chain(Broken),
                format,
                IdScheme::NhsNumber,
                &ImportLimits::default(),
            )
            .unwrap_err();
            assert_eq!(
                errs.errors,
                vec![ImportError {
                    line: None,
                    problem: ImportProblem::Read(std::io::ErrorKind::Other)
                }]
            );
        }
    }
}
