//! A demo agency's records in a PostgreSQL database of their own, with the mapping and the
//! read-only role a `postgres` source reads them through: for the benchmark and the tests that
//! run a holder on a live source (the conformance suite, `tg bench --records-source postgres`).
//! The node reads it through its ordinary `postgres` source; nothing here runs in a node.
//!
//! One table, `tg.records`, holds every record with its fields as `jsonb`; the mapping has one
//! kind per record kind the agency's synthetic generator makes, each a `SELECT` of that kind's
//! rows for `$1` with every field the generator gives that kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use throughgate_protocol::category::Category;
use throughgate_protocol::record::Record;

use crate::agencies::DemoAgency;
use crate::synth::{person_records, PersonGenerator, SynthConfig};

/// The role the node reads as: `SELECT` on the records table, nothing else.
pub const READER: &str = "tg_reader";

/// The table, its index and the read-only role (made once per cluster).
const SCHEMA: &str = r"
    CREATE SCHEMA tg;
    CREATE TABLE tg.records (
        subject text NOT NULL, record_id text NOT NULL, category text NOT NULL,
        kind text NOT NULL, fields jsonb NOT NULL, about date NOT NULL,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (subject, record_id));
    CREATE INDEX records_by_kind ON tg.records (subject, kind);
    DO $$ BEGIN CREATE ROLE tg_reader LOGIN;
    EXCEPTION WHEN duplicate_object THEN NULL; END $$;
    GRANT USAGE ON SCHEMA tg TO tg_reader;
    GRANT SELECT ON tg.records TO tg_reader;
";

/// Setting up or loading a demo source failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoSourceError {
    /// PostgreSQL refused.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Connects to `url` (as a superuser) and makes the table and the reader role.
pub async fn create(url: &str) -> Result<tokio_postgres::Client, DemoSourceError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "demo source connection ended");
        }
    });
    client.batch_execute(SCHEMA).await?;
    Ok(client)
}

/// Inserts `records` in one transaction.
pub async fn load(
    client: &mut tokio_postgres::Client,
    records: &[Record],
) -> Result<u64, DemoSourceError> {
    let tx = client.transaction().await?;
    let insert = tx
        .prepare(
            "INSERT INTO tg.records VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::date, \
             to_timestamp($7::bigint))",
        )
        .await?;
    for r in records {
        let fields = serde_json::to_string(&r.fields).unwrap_or_else(|_| "{}".to_owned());
        let at = i64::try_from(r.recorded_at.0).unwrap_or(i64::MAX);
        tx.execute(
            &insert,
            &[
                &r.subject,
                &r.record_id.as_str(),
                &r.category.as_str(),
                &r.kind,
                &fields,
                &r.about.to_string(),
                &at,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(records.len() as u64)
}

/// The connection string the node reads with: the reader role over the cluster's socket.
pub fn reader_url(socket_dir: &Path, db: &str) -> String {
    format!("host={} user={READER} dbname={db}", socket_dir.display())
}

/// The mapping for `agency`'s records: every kind, with every field, its generator makes for
/// the first 2,000 synthetic people it knows under `seed`.
pub fn mapping(agency: &'static DemoAgency, seed: u64, records_per_person: usize) -> String {
    let config = SynthConfig {
        seed,
        people: 2000,
        records_per_person: records_per_person.max(1),
        reference_date: crate::clock::Clock::system().now().date(),
    };
    let generator = PersonGenerator::new(&config);
    let mut kinds: BTreeMap<String, (Category, BTreeSet<String>)> = BTreeMap::new();
    for i in 0..config.people {
        for r in person_records(agency, &generator.person(i), &config) {
            let k = kinds
                .entry(r.kind.clone())
                .or_insert_with(|| (r.category, BTreeSet::new()));
            k.1.extend(r.fields.into_keys());
        }
    }
    let mut out = format!(
        "source_system = \"{}\"\nsubject_known = \"SELECT 1 FROM tg.records WHERE subject = $1 LIMIT 1\"\n",
        agency.source_system
    );
    for (kind, (category, fields)) in &kinds {
        let mut select = String::from("SELECT record_id, about, recorded_at");
        for f in fields {
            let _ = write!(select, ", fields->>'{f}' AS f_{f}");
        }
        let _ = write!(
            out,
            "\n[kinds.{kind}]\ncategory = \"{}\"\nquery = \"{select} FROM tg.records WHERE subject = $1 AND kind = '{kind}'\"\n\
             record_id = \"record_id\"\nabout = \"about\"\nrecorded_at = \"recorded_at\"\n\n[kinds.{kind}.fields]\n",
            category.as_str()
        );
        for f in fields {
            let _ = writeln!(out, "{f} = \"f_{f}\"");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_demo_agencys_mapping_parses_with_its_kinds() {
        for agency in &crate::agencies::DEMO_AGENCIES {
            let text = mapping(agency, 2026, 5);
            let m = throughgate_node::source::postgres::Mapping::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", agency.id));
            assert!(!m.kinds.is_empty(), "{}", agency.id);
            assert_eq!(m.source_system, agency.source_system);
        }
    }
}
