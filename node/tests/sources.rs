//! Live record sources through real nodes over QUIC: a holder answering from the agency's own
//! PostgreSQL (mapping, read-only role and transaction, statement timeout, bad rows, the
//! database down) and from an HTTPS endpoint (bad JSON, slow, down, wrong certificate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{agency, grant, person_known_to, plan};
use throughgate_node::config::{Limits, RecordsRules, SourceKind};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::messages::{HolderRequest, Outcome, RefusalReason, Response};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};

const HOLDER: &str = "nhs-wy";
const AGENCIES: [&str; 3] = ["hmp-leeds", "probation-yorks", "nhs-wy"];

/// Writes `text` to `path` with mode 0600.
fn private_file(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Asks `HOLDER` for health records under `consent`, as probation's caseworker.
async fn ask(fed: &LocalFederation, passport: &PassportId, consent: &ConsentId) -> Response {
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let q = client.sign_query(
        passport.clone(),
        Some(consent.clone()),
        Purpose::Resettlement,
        vec![HolderRequest {
            holder: agency(HOLDER),
            categories: vec![Category::Health],
        }],
        60,
    );
    let (_, results) = client.assemble(q, None).await.unwrap();
    client.close().await;
    results[0]
        .response
        .clone()
        .expect("answered")
        .open()
        .unwrap()
}

/// The Prometheus text a node serves at `addr`.
async fn metrics_at(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn outcome(r: &Response) -> (Outcome, Option<RefusalReason>) {
    (r.outcome, r.reason)
}

mod postgres {
    use super::*;

    /// The agency's own tables, a view for the node, a read-only role that may read only the
    /// view, and a function that writes (to show a mapping cannot).
    const SCHEMA: &str = r#"
        CREATE SCHEMA gp;
        CREATE TABLE gp.registrations (
            id text PRIMARY KEY, nhs_number text NOT NULL, practice text, ods text,
            status text, registered date, changed timestamptz);
        CREATE TABLE gp.written (x text);
        CREATE SCHEMA tg;
        CREATE VIEW tg.gp_registration AS
            SELECT id, nhs_number, practice, ods, status, registered, changed
            FROM gp.registrations;
        CREATE FUNCTION tg.writes(n text) RETURNS SETOF tg.gp_registration
            LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO gp.written VALUES ('x');
                RETURN QUERY SELECT * FROM tg.gp_registration WHERE nhs_number = n;
            END $$;
        CREATE ROLE tg_reader LOGIN;
        GRANT USAGE ON SCHEMA tg TO tg_reader;
        GRANT SELECT ON tg.gp_registration TO tg_reader;
        GRANT EXECUTE ON FUNCTION tg.writes(text) TO tg_reader;
        GRANT USAGE ON SCHEMA gp TO tg_reader;
        GRANT INSERT, SELECT ON gp.written TO tg_reader;
    "#;

    fn mapping(query: &str) -> String {
        format!(
            r#"
source_system = "SystmOne"
subject_known = "SELECT 1 FROM tg.gp_registration WHERE nhs_number = $1"

[kinds.gp_registration]
category = "health"
query = "{query}"
record_id = "id"
about = "registered"
recorded_at = "changed"
fields = {{ practice = "practice", ods_code = "ods", status = "status" }}
"#
        )
    }

    const GOOD_QUERY: &str = "SELECT id, practice, ods, status, registered, changed FROM tg.gp_registration WHERE nhs_number = $1";

    struct Live {
        fed: LocalFederation,
        cluster: throughgate_testkit::pgcluster::TempCluster,
        admin: tokio_postgres::Client,
        _dir: tempfile::TempDir,
    }

    async fn admin(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// A federation whose `HOLDER` answers from a PostgreSQL database through a mapping with
    /// `query`, as the read-only role, with a source timeout of 400 ms.
    async fn live(test: &str, query: &str) -> Option<Live> {
        live_with(test, query, 1500, 400).await
    }

    /// [`live`] with these request and source timeouts.
    async fn live_with(
        test: &str,
        query: &str,
        request_timeout_ms: u64,
        source_timeout_ms: u64,
    ) -> Option<Live> {
        let cluster = common::pg::cluster(test)?;
        let url = cluster.create_database("agency").unwrap();
        let admin = admin(&url).await;
        admin.batch_execute(SCHEMA).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("source-url");
        private_file(
            &url_file,
            &format!(
                "host={} user=tg_reader dbname=agency",
                cluster.socket_dir().display()
            ),
        );
        let mapping_file = dir.path().join("mapping.toml");
        std::fs::write(&mapping_file, mapping(query)).unwrap();
        let records = RecordsRules {
            source: SourceKind::Postgres,
            source_timeout_ms,
            postgres: Some(throughgate_node::config::PostgresSource {
                url_file,
                mapping_file,
            }),
            ..RecordsRules::default()
        };
        let fed = LocalFederation::start(FedOptions {
            people: 40,
            agencies: AGENCIES.to_vec(),
            limits: Limits {
                request_timeout_ms,
                ..Limits::default()
            },
            metrics: true,
            records: BTreeMap::from([(HOLDER.to_owned(), records)]),
            ..FedOptions::default()
        })
        .await
        .unwrap();
        Some(Live {
            fed,
            cluster,
            admin,
            _dir: dir,
        })
    }

    /// Puts a GP registration for `nhs` in the agency's table.
    async fn register(admin: &tokio_postgres::Client, id: &str, nhs: &str) {
        admin
            .execute(
                "INSERT INTO gp.registrations VALUES ($1, $2, 'Live Street Surgery', 'B86001', \
                 'registered', DATE '2026-01-05', TIMESTAMPTZ '2026-01-05 09:30:00+00')",
                &[&id, &nhs],
            )
            .await
            .unwrap();
    }

    /// A consent for the first person `HOLDER` knows, recorded and delivered; the person is
    /// first put in the agency's database when `in_source`.
    async fn consented(live: &Live, in_source: bool) -> (PassportId, ConsentId) {
        let person = person_known_to(&live.fed, &[HOLDER]);
        let nhs = person
            .identifier(throughgate_protocol::identifiers::IdScheme::NhsNumber)
            .value;
        if in_source {
            register(&live.admin, "reg-1", &nhs).await;
        }
        let mut p = plan(&live.fed, person, 3600);
        p.grantees = vec![agency("probation-yorks")];
        let id = grant(&live.fed, &p).await;
        (p.passport_id, id)
    }

    #[tokio::test]
    async fn a_holder_answers_from_the_agencys_postgres_through_its_mapping() {
        let Some(live) = live("postgres_mapping", GOOD_QUERY).await else {
            return;
        };
        let (passport, consent) = consented(&live, true).await;
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(outcome(&r), (Outcome::Disclosed, None));
        // Exactly the database's row, mapped and minimised: nothing from the node's own store.
        assert_eq!(r.records.len(), 1, "{:?}", r.records);
        let rec = &r.records[0];
        assert_eq!(rec.record_id.as_str(), "reg-1");
        assert_eq!(rec.kind, "gp_registration");
        assert_eq!(rec.fields["practice"], "Live Street Surgery");
        assert_eq!(rec.fields["ods_code"], "B86001");
        assert_eq!(rec.about.to_string(), "2026-01-05");
        // The query ran read-only, with a statement timeout inside the 400 ms source timeout.
        live.admin
            .batch_execute(
                "CREATE OR REPLACE VIEW tg.gp_registration AS \
                 SELECT id, nhs_number, practice, \
                 current_setting('statement_timeout') AS ods, \
                 current_setting('transaction_read_only') AS status, registered, changed \
                 FROM gp.registrations",
            )
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(r.records[0].fields["status"], "on");
        let timeout = &r.records[0].fields["ods_code"];
        let ms: u64 = timeout.strip_suffix("ms").unwrap().parse().unwrap();
        assert!((1..=400).contains(&ms), "statement_timeout {timeout}");
        // A change at the source is seen at the next query: no copy to go stale.
        live.admin
            .execute(
                "UPDATE gp.registrations SET practice = 'Moved Surgery'",
                &[],
            )
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(r.records[0].fields["practice"], "Moved Surgery");
        live.admin
            .execute("DELETE FROM gp.registrations", &[])
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(outcome(&r), (Outcome::Disclosed, None));
        assert!(r.records.is_empty());
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_consent_links_only_a_subject_the_source_knows() {
        let Some(live) = live("postgres_linking", GOOD_QUERY).await else {
            return;
        };
        // The node's store holds this person's records, but the agency's database does not:
        // the consent links nobody, and the answer is not_held.
        let (passport, consent) = consented(&live, false).await;
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(outcome(&r), (Outcome::NotHeld, None));
        assert!(r.records.is_empty());
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_mapping_that_tries_to_write_is_refused_by_the_read_only_transaction() {
        let query = "SELECT id, practice, ods, status, registered, changed FROM tg.writes($1)";
        let Some(live) = live("postgres_read_only", query).await else {
            return;
        };
        let (passport, consent) = consented(&live, true).await;
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceUnavailable))
        );
        // The role could insert, but nothing was written.
        let n: i64 = live
            .admin
            .query_one("SELECT count(*) FROM gp.written", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_slow_source_is_refused_source_unavailable_and_counted() {
        let Some(live) = live("postgres_timeout", GOOD_QUERY).await else {
            return;
        };
        let (passport, consent) = consented(&live, true).await;
        // The view now takes five seconds a row, far past the 400 ms source timeout.
        live.admin
            .batch_execute(
                "CREATE OR REPLACE VIEW tg.gp_registration AS \
                 SELECT r.id, r.nhs_number, r.practice, r.ods, r.status, r.registered, r.changed \
                 FROM gp.registrations r, LATERAL (SELECT pg_sleep(5)) s",
            )
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceUnavailable))
        );
        assert!(r.records.is_empty());
        let metrics = metrics_text(&live.fed).await;
        assert!(
            metrics.contains("throughgate_source_errors_total{kind=\"unavailable\"} 1")
                || metrics.contains("throughgate_source_errors_total{kind=\"timeout\"} 1"),
            "{metrics}"
        );
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_bad_row_is_refused_source_invalid_and_nothing_of_the_answer_leaves() {
        let Some(live) = live("postgres_bad_rows", GOOD_QUERY).await else {
            return;
        };
        let (passport, consent) = consented(&live, true).await;
        let nhs = person_known_to(&live.fed, &[HOLDER])
            .identifier(throughgate_protocol::identifiers::IdScheme::NhsNumber)
            .value;
        // One good row and one whose date is missing: the whole answer is refused.
        live.admin
            .execute(
                "INSERT INTO gp.registrations VALUES ('reg-2', $1, 'X', 'Y', 'registered', \
                 NULL, now())",
                &[&nhs],
            )
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceInvalid))
        );
        assert!(r.records.is_empty());
        // A record id an import would refuse, likewise.
        live.admin
            .execute(
                "UPDATE gp.registrations SET registered = DATE '2026-01-01', id = 'bad id!' \
                 WHERE id = 'reg-2'",
                &[],
            )
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceInvalid))
        );
        // Fixed at the source, the next query discloses both.
        live.admin
            .execute(
                "UPDATE gp.registrations SET id = 'reg-2' WHERE id = 'bad id!'",
                &[],
            )
            .await
            .unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(outcome(&r), (Outcome::Disclosed, None));
        assert_eq!(r.records.len(), 2);
        let metrics = metrics_text(&live.fed).await;
        assert!(
            metrics.contains("throughgate_source_errors_total{kind=\"invalid\"} 2"),
            "{metrics}"
        );
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_database_outage_is_refused_source_unavailable_and_the_holder_recovers() {
        let Some(live) = live("postgres_down", GOOD_QUERY).await else {
            return;
        };
        let (passport, consent) = consented(&live, true).await;
        assert_eq!(
            outcome(&ask(&live.fed, &passport, &consent).await),
            (Outcome::Disclosed, None)
        );
        live.cluster.stop_server().unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceUnavailable))
        );
        assert!(r.records.is_empty());
        live.cluster.start_server().unwrap();
        let r = ask(&live.fed, &passport, &consent).await;
        assert_eq!(outcome(&r), (Outcome::Disclosed, None));
        assert_eq!(r.records.len(), 1);
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_consent_withdrawn_while_the_source_is_read_is_refused_and_the_gate_is_free() {
        let Some(live) = live_with("postgres_gate", GOOD_QUERY, 20_000, 15_000).await else {
            return;
        };
        let (passport, consent) = consented(&live, true).await;
        // The view now waits for a lock the test holds: the source answers only when told.
        let url = live.cluster.url("agency");
        let holder = admin(&url).await;
        holder
            .batch_execute("SELECT pg_advisory_lock(42)")
            .await
            .unwrap();
        live.admin
            .batch_execute(
                "CREATE OR REPLACE VIEW tg.gp_registration AS \
                 SELECT r.id, r.nhs_number, r.practice, r.ods, r.status, r.registered, r.changed \
                 FROM gp.registrations r, LATERAL (SELECT pg_advisory_xact_lock_shared(42)) l",
            )
            .await
            .unwrap();
        let withdraw = async {
            // Once the holder is reading (its statement waits on the lock) ...
            for _ in 0..2000 {
                let waiting: i64 = live
                    .admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tg_reader' \
                         AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if waiting > 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            // ... the person withdraws consent, and the holder applies it at once (it takes
            // the consent gate exclusively, so a read holding the gate would block it) ...
            let prison = live
                .fed
                .client("hmp-leeds", StaffRole::Caseworker)
                .await
                .unwrap();
            prison.revoke_consent(&consent, "withdrawn").await.unwrap();
            common::wait_deliveries(
                &prison,
                &consent,
                throughgate_protocol::messages::AckSubject::Revoke,
            )
            .await;
            prison.close().await;
            // ... and only then does the source answer.
            holder
                .batch_execute("SELECT pg_advisory_unlock(42)")
                .await
                .unwrap();
        };
        let (r, ()) = tokio::join!(ask(&live.fed, &passport, &consent), withdraw);
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::ConsentRevoked))
        );
        assert!(r.records.is_empty());
        live.fed.shutdown().await;
    }

    async fn metrics_text(fed: &LocalFederation) -> String {
        let addr = fed.node(HOLDER).unwrap().metrics_addr.unwrap();
        super::metrics_at(addr).await
    }
}

mod http {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio_rustls::rustls;

    use super::*;

    const TOKEN: &str = "s3cret-token-for-tests";

    /// How the test endpoint answers a request for records.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// The known subject's one record.
        Good,
        /// A line that is not JSON.
        BadJson,
        /// A record about someone else.
        OtherSubject,
        /// Never answers.
        Slow,
        /// HTTP 500.
        Failing,
    }

    /// A CA and a certificate it signed for `localhost`, as (CA PEM, rustls server config).
    fn issue() -> (String, Arc<rustls::ServerConfig>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
        (ca.pem(), Arc::new(config))
    }

    /// The agency's endpoint, in the test: answers for `known` only, with the token only.
    struct Endpoint {
        port: u16,
        ca_pem: String,
        mode: Arc<Mutex<Mode>>,
        tls: Arc<Mutex<Arc<rustls::ServerConfig>>>,
        /// The subject it knows, and another person it may wrongly answer about.
        subjects: Arc<Mutex<(String, String)>>,
        /// Reads of a subject's records (not the checks that a subject is known).
        reads: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    fn record_line(subject: &str, id: &str) -> String {
        format!(
            "{{\"record_id\":\"{id}\",\"subject\":\"{subject}\",\"category\":\"health\",\
             \"kind\":\"gp_registration\",\"fields\":{{\"practice\":\"Https Surgery\",\
             \"ods_code\":\"B1\",\"status\":\"registered\"}},\"about\":\"2026-01-05\",\
             \"recorded_at\":\"2026-01-05T09:30:00Z\",\"source_system\":\"SystmOne\"}}\n"
        )
    }

    async fn answer(
        req: hyper::Request<hyper::body::Incoming>,
        known: String,
        other: String,
        mode: Mode,
        reads: Arc<AtomicUsize>,
    ) -> hyper::Response<Full<Bytes>> {
        let reply = |status: u16, body: String| {
            hyper::Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        let authorised = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
        if !authorised || req.method() != hyper::Method::POST {
            return reply(401, String::new());
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let ask: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if ask["subject"] != known.as_str() {
            return reply(404, String::new());
        }
        if ask["categories"].as_array().unwrap().is_empty() {
            return reply(200, String::new());
        }
        reads.fetch_add(1, Ordering::SeqCst);
        match mode {
            Mode::Good => reply(200, record_line(&known, "reg-1")),
            Mode::BadJson => reply(
                200,
                format!("{}{{\"record_id\":", record_line(&known, "reg-1")),
            ),
            Mode::OtherSubject => reply(200, record_line(&other, "reg-9")),
            Mode::Slow => std::future::pending().await,
            Mode::Failing => reply(500, String::new()),
        }
    }

    impl Endpoint {
        async fn start() -> Endpoint {
            let (ca_pem, config) = issue();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let mode = Arc::new(Mutex::new(Mode::Good));
            let tls = Arc::new(Mutex::new(config));
            let subjects = Arc::new(Mutex::new((String::new(), String::new())));
            let reads = Arc::new(AtomicUsize::new(0));
            let (m, t, who, n) = (mode.clone(), tls.clone(), subjects.clone(), reads.clone());
            let task = tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let acceptor = tokio_rustls::TlsAcceptor::from(t.lock().unwrap().clone());
                    let (m, who, n) = (m.clone(), who.clone(), n.clone());
                    conns.spawn(async move {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let mode = *m.lock().unwrap();
                            let (known, other) = who.lock().unwrap().clone();
                            let n = n.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    answer(req, known, other, mode, n).await,
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Endpoint {
                port,
                ca_pem,
                mode,
                tls,
                subjects,
                reads,
                task,
            }
        }

        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
    }

    struct Live {
        fed: LocalFederation,
        endpoint: Endpoint,
        passport: PassportId,
        consent: ConsentId,
        _dir: tempfile::TempDir,
    }

    /// A federation whose `HOLDER` answers from the test endpoint (source timeout 400 ms),
    /// and a consent linked through it for the first person the holder knows.
    async fn live() -> Live {
        live_cached(0).await
    }

    /// As [`live`], keeping the source's answers `cache_ttl_secs` seconds.
    async fn live_cached(cache_ttl_secs: u64) -> Live {
        let endpoint = Endpoint::start().await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        private_file(&token_file, TOKEN);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &endpoint.ca_pem).unwrap();
        let records = RecordsRules {
            source: SourceKind::Http,
            source_timeout_ms: 400,
            http: Some(throughgate_node::config::HttpSource {
                url: format!("https://localhost:{}/records", endpoint.port),
                token_file,
                ca_file,
            }),
            cache_ttl_secs,
            ..RecordsRules::default()
        };
        let fed = LocalFederation::start(FedOptions {
            people: 40,
            agencies: AGENCIES.to_vec(),
            limits: Limits {
                request_timeout_ms: 1500,
                ..Limits::default()
            },
            metrics: true,
            records: BTreeMap::from([(HOLDER.to_owned(), records)]),
            ..FedOptions::default()
        })
        .await
        .unwrap();
        let nhs_of = |p: &throughgate_testkit::synth::SyntheticPerson| {
            p.identifier(throughgate_protocol::identifiers::IdScheme::NhsNumber)
                .value
        };
        let holder = fed.node(HOLDER).unwrap().agency;
        let mut known = fed
            .population
            .people
            .iter()
            .filter(|p| p.is_known_to(holder));
        let (person, other) = (known.next().unwrap(), known.next().unwrap());
        *endpoint.subjects.lock().unwrap() = (nhs_of(person), nhs_of(other));
        let mut p = plan(&fed, person, 3600);
        p.grantees = vec![agency("probation-yorks")];
        let consent = grant(&fed, &p).await;
        Live {
            fed,
            endpoint,
            passport: p.passport_id,
            consent,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_holder_answers_from_the_agencys_https_endpoint_with_its_token() {
        let live = live().await;
        let r = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(outcome(&r), (Outcome::Disclosed, None));
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].fields["practice"], "Https Surgery");
        live.endpoint.task.abort();
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn bad_json_or_another_persons_record_is_refused_source_invalid() {
        let live = live().await;
        for mode in [Mode::BadJson, Mode::OtherSubject] {
            live.endpoint.set(mode);
            let r = ask(&live.fed, &live.passport, &live.consent).await;
            assert_eq!(
                outcome(&r),
                (Outcome::Refused, Some(RefusalReason::SourceInvalid)),
                "{mode:?}"
            );
            assert!(r.records.is_empty());
        }
        live.endpoint.task.abort();
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_slow_failing_or_stopped_endpoint_is_refused_source_unavailable() {
        let mut live = live().await;
        for mode in [Mode::Slow, Mode::Failing] {
            live.endpoint.set(mode);
            let r = ask(&live.fed, &live.passport, &live.consent).await;
            assert_eq!(
                outcome(&r),
                (Outcome::Refused, Some(RefusalReason::SourceUnavailable)),
                "{mode:?}"
            );
            assert!(r.records.is_empty());
        }
        live.endpoint.task.abort();
        let _ = (&mut live.endpoint.task).await;
        let r = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceUnavailable))
        );
        let metrics = super::metrics_at(live.fed.node(HOLDER).unwrap().metrics_addr.unwrap()).await;
        assert!(
            metrics.contains("throughgate_source_errors_total{kind=\"timeout\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("throughgate_source_errors_total{kind=\"unavailable\"} 2"),
            "{metrics}"
        );
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn an_endpoint_whose_certificate_another_ca_signed_is_refused() {
        let live = live().await;
        let (_, impostor) = issue();
        *live.endpoint.tls.lock().unwrap() = impostor;
        let r = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::SourceUnavailable))
        );
        assert!(r.records.is_empty());
        live.endpoint.task.abort();
        live.fed.shutdown().await;
    }

    /// The time the logged decision (in the response's receipt) records for the source's
    /// answer, and whether it records a digest.
    fn logged_source(r: &Response) -> Option<throughgate_protocol::time::Timestamp> {
        let entry: throughgate_protocol::audit::AuditEntry =
            throughgate_protocol::cbor::from_slice("entry", &r.receipt.entry, 65_536).unwrap();
        let throughgate_protocol::audit::AuditEvent::Decision(d) = entry.event else {
            panic!("not a decision");
        };
        d.source.map(|s| {
            assert_ne!(s.digest, [0; 32]);
            s.read_at
        })
    }

    #[tokio::test]
    async fn without_a_cache_every_query_reads_the_source_and_logs_its_answer() {
        let live = live().await;
        for n in 1..=2 {
            let r = ask(&live.fed, &live.passport, &live.consent).await;
            assert_eq!(outcome(&r), (Outcome::Disclosed, None));
            assert_eq!(live.endpoint.reads.load(Ordering::SeqCst), n);
            // Read when asked: the records' time is the decision's, in the log too.
            assert_eq!(r.records_read_at, Some(r.as_of));
            assert_eq!(r.records_age_secs(), Some(0));
            assert_eq!(logged_source(&r), r.records_read_at);
        }
        live.endpoint.task.abort();
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_cached_answer_serves_within_its_time_to_live_with_its_age_then_the_source_is_read_again(
    ) {
        let live = live_cached(30).await;
        let first = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(outcome(&first), (Outcome::Disclosed, None));
        assert_eq!(live.endpoint.reads.load(Ordering::SeqCst), 1);
        let read_at = first.records_read_at.unwrap();
        // Within the time-to-live: from the cache, the source untouched, the age shown.
        live.fed.clock.advance(10);
        let cached = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(outcome(&cached), (Outcome::Disclosed, None));
        assert_eq!(cached.records, first.records);
        assert_eq!(live.endpoint.reads.load(Ordering::SeqCst), 1);
        assert_eq!(cached.records_read_at, Some(read_at));
        let age = cached.records_age_secs().unwrap();
        assert!((10..30).contains(&age), "{age}");
        assert_eq!(logged_source(&cached), Some(read_at));
        // Past it: the source is read again.
        live.fed.clock.advance(30);
        let again = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(outcome(&again), (Outcome::Disclosed, None));
        assert_eq!(live.endpoint.reads.load(Ordering::SeqCst), 2);
        assert_eq!(again.records_age_secs(), Some(0));
        live.endpoint.task.abort();
        live.fed.shutdown().await;
    }

    #[tokio::test]
    async fn a_withdrawn_consent_is_refused_though_its_records_are_cached() {
        let live = live_cached(300).await;
        let r = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(outcome(&r), (Outcome::Disclosed, None));
        let prison = live
            .fed
            .client("hmp-leeds", StaffRole::Caseworker)
            .await
            .unwrap();
        prison
            .revoke_consent(&live.consent, "withdrawn")
            .await
            .unwrap();
        common::wait_deliveries(
            &prison,
            &live.consent,
            throughgate_protocol::messages::AckSubject::Revoke,
        )
        .await;
        prison.close().await;
        let r = ask(&live.fed, &live.passport, &live.consent).await;
        assert_eq!(
            outcome(&r),
            (Outcome::Refused, Some(RefusalReason::ConsentRevoked))
        );
        assert!(r.records.is_empty());
        assert_eq!(r.records_read_at, None);
        live.endpoint.task.abort();
        live.fed.shutdown().await;
    }
}
