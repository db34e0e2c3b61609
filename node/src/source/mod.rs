//! Where a holder reads a subject's records when it answers a query: its own imported store
//! (the default), or the agency's own system at the time of asking (`postgres`, `http`).
//!
//! A [`RecordSource`] does two things only: fetch one subject's records in the asked
//! categories within a deadline, and say whether a subject is known (for linking a consent).
//! The holder calls it outside the consent gate, so a slow source never holds up consent
//! changes or other decisions. Everything a live source returns is checked exactly as an
//! imported row is ([`crate::import::check_json_record`]) and must be about the subject asked
//! for; a bad answer is [`SourceError::Invalid`] and discloses nothing, never a part.

pub mod cache;
pub mod http;
pub mod postgres;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use throughgate_protocol::category::Category;
use throughgate_protocol::record::Record;

use crate::config::{NodeConfig, SourceKind};
use crate::db::Db;
use crate::store::StoreError;

/// Most records one subject may have disclosed in one response. A live source that returns
/// more is refused, rather than cut short.
pub const MAX_RECORDS_PER_SUBJECT: usize = 10_000;

/// Why a source gave no usable answer. Messages never quote a record, an identifier or a
/// database's own error text (which may quote either).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No answer within the deadline.
    #[error("the record source did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The source could not be reached, or failed to answer.
    #[error("the record source is unavailable: {0}")]
    Unavailable(String),
    /// The source answered with something that is not a valid record of the subject asked for.
    #[error("the record source's answer is not valid: {0}")]
    Invalid(String),
    /// The node's own store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SourceError {
    /// The metric label of this kind of failure.
    pub fn metric(&self) -> &'static str {
        match self {
            SourceError::Timeout(_) => "timeout",
            SourceError::Unavailable(_) => "unavailable",
            SourceError::Invalid(_) => "invalid",
            SourceError::Store(_) => "store",
        }
    }
}

/// A live source could not be set up from the node's config.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum SourceSetupError {
    /// A private file (URL, token) could not be read, or is readable by others.
    #[error("cannot use {path}: {source}")]
    PrivateFile {
        path: PathBuf,
        source: crate::keyfile::KeyFileError,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file or setting is not acceptable.
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Reads a private file (mode 0600) of at most `max` bytes as trimmed UTF-8 text.
pub(crate) fn read_secret_text(path: PathBuf, max: u64) -> Result<String, SourceSetupError> {
    let bytes = crate::keyfile::read_private_file(&path, max).map_err(|source| {
        SourceSetupError::PrivateFile {
            path: path.clone(),
            source,
        }
    })?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_owned())
        .map_err(|_| SourceSetupError::Invalid {
            path,
            detail: "the file is not UTF-8 text".into(),
        })
}

/// Where a holder reads records.
pub trait RecordSource: Send + Sync + std::fmt::Debug {
    /// Which kind of source this is.
    fn kind(&self) -> SourceKind;

    /// The records of local subject `subject` (normalised) in `categories` (a source may return
    /// others; minimisation drops them), within `timeout`.
    fn fetch<'a>(
        &'a self,
        subject: &'a str,
        categories: &'a BTreeSet<Category>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>, SourceError>>;

    /// Whether local subject `subject` is known to the source, within `timeout`.
    fn subject_known<'a>(
        &'a self,
        subject: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, SourceError>>;
}

/// The node's own store of imported records.
#[derive(Debug, Clone)]
pub struct StoreSource {
    db: Db,
}

impl StoreSource {
    /// Reads from `db`.
    pub fn new(db: Db) -> StoreSource {
        StoreSource { db }
    }
}

impl RecordSource for StoreSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Store
    }

    fn fetch<'a>(
        &'a self,
        subject: &'a str,
        _categories: &'a BTreeSet<Category>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>, SourceError>> {
        let got = self.db.records_of(subject, MAX_RECORDS_PER_SUBJECT);
        Box::pin(async move { Ok(got?) })
    }

    fn subject_known<'a>(
        &'a self,
        subject: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        let got = self.db.subject_known(subject);
        Box::pin(async move { Ok(got?) })
    }
}

/// Opens the source `config` names, reading its files now (so a node with a broken source
/// setup does not start). Live sources connect on first use.
pub fn open(config: &NodeConfig, db: Db) -> Result<Arc<dyn RecordSource>, SourceSetupError> {
    let r = &config.records;
    match (r.source, &r.postgres, &r.http) {
        (SourceKind::Postgres, Some(pg), _) => Ok(Arc::new(postgres::PostgresSource::open(
            config.resolve(&pg.url_file),
            config.resolve(&pg.mapping_file),
            config.id_scheme,
        )?)),
        (SourceKind::Http, _, Some(h)) => Ok(Arc::new(http::HttpSource::open(
            &h.url,
            config.resolve(&h.token_file),
            config.resolve(&h.ca_file),
            config.id_scheme,
        )?)),
        (SourceKind::Store, _, _) => Ok(Arc::new(StoreSource::new(db))),
        (kind, _, _) => Err(SourceSetupError::Invalid {
            path: config.base_dir.clone(),
            detail: format!(
                "records.source = \"{}\" needs its [records.{0}] section",
                kind.as_str()
            ),
        }),
    }
}

/// Runs `fut` within `timeout`, mapping a late answer to [`SourceError::Timeout`].
pub(crate) async fn within<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(SourceError::Timeout(timeout)))
}

/// Checks a live source's answer as a whole: every record about `subject`, no record id twice,
/// at most [`MAX_RECORDS_PER_SUBJECT`].
pub(crate) fn check_answer(subject: &str, records: &[Record]) -> Result<(), SourceError> {
    if records.len() > MAX_RECORDS_PER_SUBJECT {
        return Err(SourceError::Invalid(format!(
            "more than {MAX_RECORDS_PER_SUBJECT} records for one subject"
        )));
    }
    if records.iter().any(|r| r.subject != subject) {
        return Err(SourceError::Invalid(
            "a record is about another subject than the one asked for".into(),
        ));
    }
    let mut ids = BTreeSet::new();
    if !records.iter().all(|r| ids.insert(r.record_id.as_str())) {
        return Err(SourceError::Invalid(
            "two records have the same record id".into(),
        ));
    }
    Ok(())
}
