//! Runs the whole conformance suite against the project's own node: a demo federation on
//! loopback (ephemeral ports) whose manifest lists the suite's two member identities, one
//! outside and one inside the justice sector. Then drives the built `tg-conformance` binary to
//! check its command line, output formats and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use throughgate_conformance::identity::random_identifier;
use throughgate_conformance::{
    all_cases, report, select, CaseReport, Identity, SuiteConfig, Target, Timing, Verdict,
};
use throughgate_node::config::{Limits, RecordsRules, SourceKind};
use throughgate_node::keyfile::write_secret_key;
use throughgate_protocol::category::Category;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{Member, MemberRole, Sector};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};
use throughgate_testkit::synth::person_records;

/// Cases that fail against the project's own node because the node is wrong, each with where
/// and why. They stay strict in the suite; this test expects them to fail (and fails itself
/// the moment one passes, so the entry is removed when the node is fixed).
const KNOWN_NODE_FAILURES: &[(&str, &str)] = &[];

const PRIMARY: &str = "tg-conformance";
const SECOND: &str = "tg-conformance-justice";

fn member(id: &str, sector: Sector, key: &SecretKey) -> Member {
    Member {
        id: AgencyId::new(id).unwrap(),
        name: format!("Conformance suite ({sector})"),
        sector,
        // The suite never listens; the address is never dialled.
        addresses: vec!["127.0.0.1:9".into()],
        node_keys: vec![key.public()],
        categories: Vec::new(),
        id_scheme: IdScheme::CouncilRef,
        roles: vec![MemberRole::Requester],
        retired_keys: vec![],
    }
}

/// Makes sure every node trusts a manifest listing the suite's members.
///
/// Workaround: `LocalFederation::start` (testkit/src/localfed.rs) currently ignores
/// `FedOptions.extra_members`, so the test publishes manifest version n+1 with them, signed by
/// the federation's governance key, and every node adopts it (as it would from a peer). When
/// the federation already lists them, this does nothing.
fn admit_extra_members(fed: &LocalFederation, extra: &[Member]) {
    let missing: Vec<Member> = extra
        .iter()
        .filter(|m| fed.manifest_body.member(&m.id).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut body = fed.manifest_body.clone();
    body.version += 1;
    body.members.extend(missing);
    let env = Envelope::seal(&body, &[(SignerRole::Governance, &fed.governance)]);
    for n in &fed.nodes {
        let node = n.node.as_ref().expect("running node");
        node.state().adopt_manifest(&env).expect("manifest adopted");
    }
}

struct Setup {
    fed: LocalFederation,
    dir: tempfile::TempDir,
    target: Target,
}

async fn start(target_agency: &str) -> Setup {
    start_with(
        target_agency,
        tempfile::tempdir().unwrap(),
        BTreeMap::new(),
        false,
    )
    .await
}

/// [`start`] in `dir`, with these agencies answering from live record sources.
async fn start_with(
    target_agency: &str,
    dir: tempfile::TempDir,
    records: BTreeMap<String, RecordsRules>,
    metrics: bool,
) -> Setup {
    let primary = SecretKey::generate();
    let second = SecretKey::generate();
    write_secret_key(&dir.path().join("suite.key"), &primary).unwrap();
    write_secret_key(&dir.path().join("suite-justice.key"), &second).unwrap();
    let extra = vec![
        member(PRIMARY, Sector::Welfare, &primary),
        member(SECOND, Sector::Justice, &second),
    ];
    let fed = LocalFederation::start(FedOptions {
        people: 40,
        limits: Limits {
            request_timeout_ms: 1000,
            ..Limits::default()
        },
        extra_members: extra.clone(),
        records,
        metrics,
        ..FedOptions::default()
    })
    .await
    .unwrap();
    admit_extra_members(&fed, &extra);
    // The test federation's governance key, for the manifest cases that sign manifests.
    write_secret_key(&dir.path().join("governance.key"), &fed.governance).unwrap();
    let node = fed.node(target_agency).unwrap();
    let target = Target {
        addr: node.addr,
        agency: node.id.clone(),
        key: node.key.public(),
    };
    Setup { fed, dir, target }
}

/// Writes an identity file for the target: a person it holds (with a `risk` record when the
/// target holds risk), a valid identifier it does not, and its categories.
fn write_identity(
    s: &Setup,
    name: &str,
    primary_sector: &str,
    with_second: bool,
    with_governance: bool,
) -> std::path::PathBuf {
    let node = s.fed.node(s.target.agency.as_str()).unwrap();
    let agency = node.agency;
    let holds_risk = agency.holds(Category::Risk);
    let person = s
        .fed
        .population
        .known_to(agency)
        .find(|p| {
            let recs = person_records(agency, p, &s.fed.synth);
            !recs.is_empty() && (!holds_risk || recs.iter().any(|r| r.category == Category::Risk))
        })
        .expect("a person the target holds");
    let subject = person.identifier(agency.scheme);
    let other = s
        .fed
        .population
        .known_to(agency)
        .find(|p| p.index != person.index && !person_records(agency, p, &s.fed.synth).is_empty())
        .expect("a second person the target holds")
        .identifier(agency.scheme);
    let unknown = loop {
        let id = random_identifier(agency.scheme);
        if s.fed.population.find(&id).is_none() {
            break id;
        }
    };
    let categories: Vec<String> = agency
        .categories
        .iter()
        .map(|c| format!("{:?}", c.as_str()))
        .collect();
    let mut text = format!(
        "agency = \"{PRIMARY}\"\nkey_file = \"suite.key\"\nsector = \"{primary_sector}\"\n\
         purpose = \"resettlement\"\ntarget_categories = [{}]\n\
         subject = {{ scheme = \"{}\", value = \"{}\" }}\n\
         unknown_subject = {{ scheme = \"{}\", value = \"{}\" }}\n\
         other_subject = {{ scheme = \"{}\", value = \"{}\" }}\n",
        categories.join(", "),
        subject.scheme,
        subject.value,
        unknown.scheme,
        unknown.value,
        other.scheme,
        other.value
    );
    if with_governance {
        text.push_str("governance_key = \"governance.key\"\n");
    }
    if with_second {
        text.push_str(&format!(
            "\n[second]\nagency = \"{SECOND}\"\nkey_file = \"suite-justice.key\"\nsector = \"justice\"\n"
        ));
    }
    let path = s.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn timing() -> Timing {
    Timing {
        answer: Duration::from_secs(5),
        slow_sender: Duration::from_secs(10),
    }
}

fn check_all(reports: &[CaseReport]) {
    let table = report::table(reports);
    eprintln!("{table}");
    let mut problems = Vec::new();
    for r in reports {
        let known = KNOWN_NODE_FAILURES.iter().find(|(id, _)| *id == r.id);
        match (r.outcome, known) {
            (Verdict::Pass, None) => {}
            (Verdict::Fail, Some(_)) => {}
            (Verdict::Pass, Some((id, _))) => problems.push(format!(
                "{id} now passes: remove it from KNOWN_NODE_FAILURES"
            )),
            (_, _) => problems.push(format!("{} {}: {}", r.id, r.outcome.as_str(), r.detail)),
        }
    }
    for (id, why) in KNOWN_NODE_FAILURES {
        if let Some(r) = reports.iter().find(|r| r.id == *id) {
            if r.outcome == Verdict::Fail {
                eprintln!("known node failure {id} ({why}): {}", r.detail);
            }
        }
    }
    assert!(problems.is_empty(), "{}\n{table}", problems.join("\n"));
}

async fn binary(args: Vec<String>) -> (i32, String, String) {
    let exe = env!("CARGO_BIN_EXE_tg-conformance");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe).args(args).output().unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn target_args(t: &Target, identity: &Path) -> Vec<String> {
    vec![
        "--target".into(),
        t.addr.to_string(),
        "--target-agency".into(),
        t.agency.to_string(),
        "--target-key".into(),
        t.key.to_hex(),
        "--identity".into(),
        identity.display().to_string(),
        "--answer-timeout".into(),
        "5".into(),
        "--slow-timeout".into(),
        "10".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_passes_against_our_own_node() {
    let started = Instant::now();
    let s = start("probation-yorks").await;
    let identity_path = write_identity(&s, "suite.toml", "welfare", true, true);
    let identity = Identity::load(&identity_path).unwrap();
    assert!(identity.second.is_some());

    // The whole suite, in process, against probation (a justice holder of `risk`).
    let cfg = SuiteConfig {
        target: s.target.clone(),
        identity,
        timing: timing(),
    };
    let reports = throughgate_conformance::run(&cfg, &all_cases())
        .await
        .unwrap();
    assert_eq!(reports.len(), all_cases().len());
    check_all(&reports);
    let inconsistent = reports
        .iter()
        .find(|r| r.id == "audit.witness_refuses_inconsistent")
        .unwrap();
    assert!(
        inconsistent.detail.contains("rewriting") && !inconsistent.detail.contains("already"),
        "{}",
        inconsistent.detail
    );

    // The binary: --list prints every id, one a line.
    let (code, out, err) = binary(vec!["--list".into()]).await;
    assert_eq!(code, 0, "{err}");
    let ids: Vec<&str> = out.lines().collect();
    let expected: Vec<&str> = all_cases().iter().map(|c| c.id).collect();
    assert_eq!(ids, expected);

    // A couple of cases, JSON output and JUnit file: exit 0.
    let junit = s.dir.path().join("junit.xml");
    let mut args = target_args(&s.target, &identity_path);
    args.extend(
        [
            "--case",
            "query.expired",
            "--case",
            "envelope.garbage_cbor",
            "--case",
            "consent.revoked",
            "--json",
        ]
        .map(String::from),
    );
    let (code, out, err) = binary(args).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert!(arr.iter().all(|r| r["outcome"] == "pass"), "{out}");
    assert_eq!(arr[0]["id"], "envelope.garbage_cbor");
    let mut args = target_args(&s.target, &identity_path);
    args.extend(["--case", "transport.*", "--junit"].map(String::from));
    args.push(junit.display().to_string());
    let (code, out, err) = binary(args).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("PASS"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let transport = select(&["transport".into()]).unwrap().len();
    assert_eq!(xml.matches("<testcase ").count(), transport, "{xml}");
    assert!(xml.contains(r#"failures="0""#), "{xml}");

    // Exit 1 when a case fails: pin a wrong key for the target.
    let mut wrong = s.target.clone();
    wrong.key = SecretKey::generate().public();
    let mut args = target_args(&wrong, &identity_path);
    args.extend(["--case", "transport.server_presents_pinned_key"].map(String::from));
    let (code, out, _) = binary(args).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL"), "{out}");

    // Exit 127 when a case cannot run: the risk cases need an identity outside justice, the
    // manifest cases that sign manifests a governance key.
    let justice_only = write_identity(&s, "justice.toml", "justice", false, false);
    let mut args = target_args(&s.target, &justice_only);
    args.extend(
        [
            "--case",
            "minimisation.risk_only_not_disclosed",
            "--case",
            "query.no_consent",
            "--case",
            "manifest.rollback_not_adopted",
            "--case",
            "manifest.under_signed_not_adopted",
            "--json",
        ]
        .map(String::from),
    );
    let (code, out, _) = binary(args).await;
    assert_eq!(code, 127, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let outcome = |id: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["outcome"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        outcome("minimisation.risk_only_not_disclosed").as_deref(),
        Some("unsupported"),
        "{out}"
    );
    assert_eq!(
        outcome("manifest.rollback_not_adopted").as_deref(),
        Some("unsupported"),
        "{out}"
    );
    assert_eq!(
        outcome("manifest.under_signed_not_adopted").as_deref(),
        Some("pass"),
        "{out}"
    );
    assert_eq!(
        outcome("query.no_consent").as_deref(),
        Some("pass"),
        "{out}"
    );

    // Bad arguments: exit 2.
    let (code, _, err) = binary(vec!["--list".into(), "--case".into(), "no.such".into()]).await;
    assert_eq!(code, 2, "{err}");

    s.fed.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_passes_against_a_health_node() {
    // nhs-wy: a non-justice holder with another identifier scheme and policy.
    let s = start("nhs-wy").await;
    let identity_path = write_identity(&s, "suite.toml", "welfare", true, true);
    let cfg = SuiteConfig {
        target: s.target.clone(),
        identity: Identity::load(&identity_path).unwrap(),
        timing: timing(),
    };
    // The alarm-raising witness cases each need a log the target holds in good standing: after
    // the first alarm the node refuses that log outright, and the later cases only see that.
    // The suite against probation-yorks checks `witness_refuses_inconsistent` afresh; here
    // `witness_refuses_fork` runs first, alone, and `witness_refuses_shrink` last, on the
    // first identity's log (an identity without [second]).
    let fork = throughgate_conformance::run(
        &cfg,
        &select(&["audit.witness_refuses_fork".into()]).unwrap(),
    )
    .await
    .unwrap();
    check_all(&fork);
    assert!(
        fork[0].detail.contains("refused; the target now refuses"),
        "{}",
        fork[0].detail
    );
    let reports = throughgate_conformance::run(&cfg, &all_cases())
        .await
        .unwrap();
    check_all(&reports);
    let single = write_identity(&s, "single.toml", "welfare", false, true);
    let cfg = SuiteConfig {
        target: s.target.clone(),
        identity: Identity::load(&single).unwrap(),
        timing: timing(),
    };
    let shrink = throughgate_conformance::run(
        &cfg,
        &select(&["audit.witness_refuses_shrink".into()]).unwrap(),
    )
    .await
    .unwrap();
    check_all(&shrink);
    assert!(
        shrink[0].detail.contains("after") && !shrink[0].detail.contains("already"),
        "{}",
        shrink[0].detail
    );
    s.fed.shutdown().await;
}

/// The suite, unchanged, against a holder that answers from the agency's own PostgreSQL (a
/// `postgres` record source, read as a read-only role) instead of its imported store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_passes_against_a_node_answering_from_a_live_postgres_source() {
    use throughgate_testkit::livesource as demo;
    const TARGET: &str = "probation-yorks";
    let cluster = match throughgate_testkit::pgcluster::TempCluster::start(false) {
        Ok(c) => c,
        Err(e) if e.is_missing_postgres() && std::env::var("CI").map_or(true, |v| v.is_empty()) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP: live postgres source: {e}");
            return;
        }
        Err(e) => panic!("cannot start a PostgreSQL cluster: {e}"),
    };
    let url = cluster.create_database("agency").unwrap();
    let mut admin = demo::create(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("source-url");
    std::fs::write(&url_file, demo::reader_url(cluster.socket_dir(), "agency")).unwrap();
    std::fs::set_permissions(
        &url_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let shape = throughgate_testkit::agencies::demo_agency(TARGET).unwrap();
    let defaults = FedOptions::default();
    let mapping_file = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping_file,
        demo::mapping(shape, defaults.seed, defaults.records_per_person),
    )
    .unwrap();
    let rules = RecordsRules {
        source: SourceKind::Postgres,
        source_timeout_ms: 700,
        postgres: Some(throughgate_node::config::PostgresSource {
            url_file,
            mapping_file,
        }),
        ..RecordsRules::default()
    };
    let s = start_with(
        TARGET,
        dir,
        BTreeMap::from([(TARGET.to_owned(), rules)]),
        true,
    )
    .await;
    // The agency's database holds what its store would: every record of everyone it knows.
    let records: Vec<_> = s
        .fed
        .population
        .known_to(shape)
        .flat_map(|p| person_records(shape, p, &s.fed.synth))
        .collect();
    assert!(demo::load(&mut admin, &records).await.unwrap() > 0);
    let identity_path = write_identity(&s, "suite.toml", "welfare", true, true);
    let cfg = SuiteConfig {
        target: s.target.clone(),
        identity: Identity::load(&identity_path).unwrap(),
        timing: timing(),
    };
    let reports = throughgate_conformance::run(&cfg, &all_cases())
        .await
        .unwrap();
    assert_eq!(reports.len(), all_cases().len());
    check_all(&reports);
    // The holder's answers did come from the database.
    let metrics = metrics_of(&s, TARGET).await;
    let reads = metrics
        .lines()
        .find_map(|l| l.strip_prefix("throughgate_source_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reads > 0.0, "{metrics}");
    assert!(
        !metrics.contains("throughgate_source_errors_total{"),
        "{metrics}"
    );
    s.fed.shutdown().await;
    drop(cluster);
}

/// The Prometheus text `agency`'s node serves.
async fn metrics_of(s: &Setup, agency: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.fed.node(agency).unwrap().metrics_addr.unwrap();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}
