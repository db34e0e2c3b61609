//! A live PostgreSQL source: the agency's own database, read at the time of asking through a
//! mapping file of read-only queries, one per record kind.
//!
//! Every read runs in a `READ ONLY` transaction with `SET LOCAL statement_timeout` inside the
//! query's deadline; the whole read (connecting included) is also bounded by that deadline.
//! Operators should still connect as a role that can only `SELECT` from a few views (see
//! docs/operations.md): the transaction mode is a second line, not the first. Each query takes
//! the subject's identifier as `$1` (text) and its rows are read as JSON (`row_to_json`), so
//! any column type whose JSON form is a string, number or boolean can be mapped. Every row is
//! then checked exactly as an imported JSON Lines row is.
//!
//! Failures are reported by SQLSTATE and record kind only: PostgreSQL's own messages may quote
//! the identifier or a cell.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;
use throughgate_protocol::category::Category;
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::record::{valid_name, Record, MAX_NAME_LEN};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

use super::{check_answer, read_secret_text, within, RecordSource, SourceError, SourceSetupError};
use crate::config::SourceKind;

/// The largest URL or mapping file read.
const MAX_FILE: u64 = 256 * 1024;

/// Idle connections kept for the next read.
const MAX_IDLE: usize = 8;

/// The mapping file: how the agency's tables become records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The `source_system` every record from this source carries (e.g. `nDelius`).
    pub source_system: String,
    /// A query taking the identifier as `$1` that returns a row when the subject is known.
    /// Without one, a subject is known when any kind's query returns a row for it.
    #[serde(default)]
    pub subject_known: Option<String>,
    /// Per record kind, how to read it.
    pub kinds: BTreeMap<String, KindMapping>,
}

/// How to read one record kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindMapping {
    /// The category of every record of this kind.
    pub category: Category,
    /// A single `SELECT` taking the subject's identifier as `$1` (text), one row per record.
    pub query: String,
    /// The column holding the record id (unique across every kind of one subject).
    pub record_id: String,
    /// The column holding the date the record is about (a `date`, or text `YYYY-MM-DD`).
    pub about: String,
    /// The column holding when the record was last changed (a `timestamptz`, or RFC 3339).
    pub recorded_at: String,
    /// Field name (as the policy names it) to column.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl Mapping {
    /// Parses and checks a mapping.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let mut m: Mapping = toml::from_str(text).map_err(|e| e.to_string())?;
        let s = &m.source_system;
        if s.is_empty() || s.len() > MAX_NAME_LEN || s.chars().any(char::is_control) {
            return Err(format!(
                "source_system must be 1-{MAX_NAME_LEN} printable characters"
            ));
        }
        if m.kinds.is_empty() {
            return Err("the mapping has no [kinds.<name>] section".into());
        }
        if let Some(q) = &mut m.subject_known {
            *q = clean_query(q).ok_or("subject_known is empty")?;
        }
        for (kind, k) in &mut m.kinds {
            if !valid_name(kind) {
                return Err(format!(
                    "kinds.{kind}: a kind must be 1-{MAX_NAME_LEN} lowercase letters, digits or \
                     underscores"
                ));
            }
            k.query = clean_query(&k.query).ok_or(format!("kinds.{kind}.query is empty"))?;
            for col in [&k.record_id, &k.about, &k.recorded_at]
                .into_iter()
                .chain(k.fields.values())
            {
                if col.is_empty() {
                    return Err(format!("kinds.{kind}: a column name is empty"));
                }
            }
            if let Some(bad) = k.fields.keys().find(|f| !valid_name(f)) {
                return Err(format!(
                    "kinds.{kind}.fields.{bad}: a field name must be 1-{MAX_NAME_LEN} lowercase \
                     letters, digits or underscores"
                ));
            }
        }
        Ok(m)
    }
}

/// A query without surrounding space and trailing semicolons, if anything is left.
fn clean_query(q: &str) -> Option<String> {
    let q = q.trim().trim_end_matches(';').trim();
    (!q.is_empty()).then(|| q.to_owned())
}

/// The agency's PostgreSQL database, read through a [`Mapping`].
pub struct PostgresSource {
    config: tokio_postgres::Config,
    mapping: Mapping,
    scheme: IdScheme,
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("kinds", &self.mapping.kinds.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// Reads the URL file (mode 0600) and the mapping; connects on first use.
    pub fn open(
        url_file: PathBuf,
        mapping_file: PathBuf,
        scheme: IdScheme,
    ) -> Result<PostgresSource, SourceSetupError> {
        let url = read_secret_text(url_file.clone(), MAX_FILE)?;
        let invalid = |path: &PathBuf, detail: String| SourceSetupError::Invalid {
            path: path.clone(),
            detail,
        };
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| invalid(&url_file, "the file does not hold a PostgreSQL URL".into()))?;
        crate::store::check_local(&config).map_err(|e| invalid(&url_file, e.to_string()))?;
        let meta = std::fs::metadata(&mapping_file).map_err(|source| SourceSetupError::Io {
            path: mapping_file.clone(),
            source,
        })?;
        if meta.len() > MAX_FILE {
            return Err(invalid(
                &mapping_file,
                format!("the mapping is over {MAX_FILE} bytes"),
            ));
        }
        let text =
            std::fs::read_to_string(&mapping_file).map_err(|source| SourceSetupError::Io {
                path: mapping_file.clone(),
                source,
            })?;
        let mapping = Mapping::parse(&text).map_err(|d| invalid(&mapping_file, d))?;
        Ok(PostgresSource {
            config,
            mapping,
            scheme,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle connection, or a new one.
    async fn client(&self) -> Result<Client, SourceError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            match idle {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok(c),
                None => break,
            }
        }
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            SourceError::Unavailable(format!("cannot connect to the database ({})", code(&e)))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %code(&e), "record source connection closed");
            }
        });
        Ok(client)
    }

    fn put_back(&self, client: Client) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE && !client.is_closed() {
            idle.push(client);
        }
    }

    /// Starts a read-only transaction whose statements end by `deadline`.
    async fn begin(
        client: &mut Client,
        deadline: Instant,
    ) -> Result<tokio_postgres::Transaction<'_>, SourceError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().clamp(1, u128::from(u32::MAX));
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(|e| failed("starting a read-only transaction", &e))?;
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await
            .map_err(|e| failed("setting the statement timeout", &e))?;
        Ok(tx)
    }

    async fn fetch_now(
        &self,
        subject: &str,
        categories: &BTreeSet<Category>,
        deadline: Instant,
    ) -> Result<Vec<Record>, SourceError> {
        let kinds: Vec<(&String, &KindMapping)> = self
            .mapping
            .kinds
            .iter()
            .filter(|(_, k)| categories.contains(&k.category))
            .collect();
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let limit = super::MAX_RECORDS_PER_SUBJECT + 1;
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, deadline).await?;
        let mut rows = Vec::new();
        for (kind, k) in kinds {
            let sql = format!(
                "SELECT row_to_json(q)::text FROM ({}) AS q LIMIT {limit}",
                k.query
            );
            let got = tx
                .query_typed(&sql, &[(&subject, Type::TEXT)])
                .await
                .map_err(|e| failed(&format!("reading kind {kind}"), &e))?;
            for row in got {
                let text: String = row
                    .try_get(0)
                    .map_err(|e| failed(&format!("reading kind {kind}"), &e))?;
                rows.push((kind, k, text));
            }
        }
        tx.rollback()
            .await
            .map_err(|e| failed("ending the transaction", &e))?;
        self.put_back(client);
        let mut records = Vec::with_capacity(rows.len());
        for (n, (kind, k, text)) in rows.into_iter().enumerate() {
            if n >= limit {
                break;
            }
            let value = self.row_value(kind, k, subject, &text)?;
            let record = crate::import::check_json_record(&value, self.scheme).map_err(|p| {
                let why: Vec<String> = p.iter().map(ToString::to_string).collect();
                SourceError::Invalid(format!("a row of kind {kind}: {}", why.join("; ")))
            })?;
            records.push(record);
        }
        check_answer(subject, &records)?;
        Ok(records)
    }

    /// One row as a record in the JSON Lines import format.
    fn row_value(
        &self,
        kind: &str,
        k: &KindMapping,
        subject: &str,
        text: &str,
    ) -> Result<serde_json::Value, SourceError> {
        use serde_json::Value;
        let row: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|_| SourceError::Invalid(format!("a row of kind {kind} is not readable")))?;
        let col = |name: &str| -> Result<Value, SourceError> {
            match row.get(name) {
                None => Err(SourceError::Invalid(format!(
                    "the query of kind {kind} returns no column {name}; fix the mapping"
                ))),
                Some(Value::Number(n)) => Ok(Value::String(n.to_string())),
                Some(Value::Bool(b)) => Ok(Value::String(b.to_string())),
                Some(v) => Ok(v.clone()),
            }
        };
        let mut fields = serde_json::Map::new();
        for (field, column) in &k.fields {
            fields.insert(field.clone(), col(column)?);
        }
        Ok(serde_json::json!({
            "record_id": col(&k.record_id)?,
            "subject": subject,
            "category": k.category.as_str(),
            "kind": kind,
            "about": col(&k.about)?,
            "recorded_at": col(&k.recorded_at)?,
            "source_system": self.mapping.source_system,
            "fields": fields,
        }))
    }

    async fn known_now(&self, subject: &str, deadline: Instant) -> Result<bool, SourceError> {
        let queries: Vec<String> = match &self.mapping.subject_known {
            Some(q) => vec![q.clone()],
            None => self
                .mapping
                .kinds
                .values()
                .map(|k| k.query.clone())
                .collect(),
        };
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, deadline).await?;
        let mut known = false;
        for q in queries {
            let sql = format!("SELECT 1 FROM ({q}) AS q LIMIT 1");
            let rows = tx
                .query_typed(&sql, &[(&subject, Type::TEXT)])
                .await
                .map_err(|e| failed("checking the subject is known", &e))?;
            if !rows.is_empty() {
                known = true;
                break;
            }
        }
        tx.rollback()
            .await
            .map_err(|e| failed("ending the transaction", &e))?;
        self.put_back(client);
        Ok(known)
    }
}

/// A PostgreSQL error by its SQLSTATE only (its message may quote personal data).
fn code(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(c) => format!("SQLSTATE {}", c.code()),
        None if e.is_closed() => "connection closed".into(),
        None => "no connection".into(),
    }
}

/// The error for a failed statement: a cancelled one (the statement timeout) is a timeout.
fn failed(doing: &str, e: &tokio_postgres::Error) -> SourceError {
    match e.code() {
        Some(c) if *c == SqlState::QUERY_CANCELED => {
            SourceError::Unavailable(format!("{doing}: the statement timeout expired"))
        }
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => SourceError::Unavailable(format!(
            "{doing}: the mapping's query tried to write; only SELECT is allowed"
        )),
        _ => SourceError::Unavailable(format!("{doing} failed ({})", code(e))),
    }
}

impl RecordSource for PostgresSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Postgres
    }

    fn fetch<'a>(
        &'a self,
        subject: &'a str,
        categories: &'a BTreeSet<Category>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>, SourceError>> {
        let deadline = Instant::now() + timeout;
        Box::pin(within(
            timeout,
            self.fetch_now(subject, categories, deadline),
        ))
    }

    fn subject_known<'a>(
        &'a self,
        subject: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        let deadline = Instant::now() + timeout;
        Box::pin(within(timeout, self.known_now(subject, deadline)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
source_system = "nDelius"

[kinds.release_address]
category = "accommodation"
query = "SELECT id, since, changed, line1 FROM addresses WHERE crn = $1;"
record_id = "id"
about = "since"
recorded_at = "changed"
fields = { address_line = "line1" }
"#;

    #[test]
    fn a_mapping_parses_and_its_mistakes_are_named() {
        let m = Mapping::parse(GOOD).unwrap();
        assert_eq!(
            m.kinds["release_address"].query,
            "SELECT id, since, changed, line1 FROM addresses WHERE crn = $1"
        );
        let err = Mapping::parse(&GOOD.replace("release_address", "Release")).unwrap_err();
        assert!(err.contains("kinds.Release"), "{err}");
        let err = Mapping::parse(&GOOD.replace("address_line", "Line")).unwrap_err();
        assert!(err.contains("fields.Line"), "{err}");
        let err = Mapping::parse(&GOOD.replace("accommodation", "houses")).unwrap_err();
        assert!(err.contains("houses"), "{err}");
        let err = Mapping::parse(&GOOD.replace("about = ", "date = ")).unwrap_err();
        assert!(err.contains("date"), "{err}");
        let err = Mapping::parse("source_system = \"x\"\n[kinds]\n").unwrap_err();
        assert!(err.contains("no [kinds"), "{err}");
    }
}
