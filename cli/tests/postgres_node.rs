//! A node set up with `tg node init --postgres-url-file` keeps its state in PostgreSQL, and two
//! `tg node run` processes of one agency (replicas) serve from one database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use common::free_udp_port;
use throughgate_node::db::Db;
use throughgate_node::store::PostgresStore;
use throughgate_testkit::pgcluster::TempCluster;

fn tg<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_tg"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("TG_PROFILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "tg failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Kills the node processes when the test ends, however it ends.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `tg node run`, its output in `log`.
fn run_node(config: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tg"))
        .args(["node", "run", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Polls `tg node status` with `profile` until the node answers; returns the JSON.
fn wait_ready(profile: &Path, log: &Path) -> serde_json::Value {
    for _ in 0..40 {
        let o = tg([
            "node".as_ref(),
            "status".as_ref(),
            "--json".as_ref(),
            "--profile".as_ref(),
            profile.as_os_str(),
        ]);
        if o.status.success() {
            return serde_json::from_slice(&o.stdout).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!(
        "node behind {} never answered; its log:\n{}",
        profile.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn a_node_initialised_on_postgres_runs_as_two_replicas_on_one_database_and_restores_a_backup_into_an_empty_one(
) {
    let cluster = match TempCluster::start(false) {
        Ok(c) => c,
        Err(e) if e.is_missing_postgres() && !in_ci() => {
            let _ = writeln!(std::io::stderr(), "SKIP: postgres node: {e}");
            return;
        }
        Err(e) => panic!("cannot start a PostgreSQL cluster: {e}"),
    };
    let url = cluster.create_database("dwp").unwrap();
    let root = tempfile::tempdir().unwrap();
    let url_file = root.path().join("db.url");
    std::fs::write(&url_file, &url).unwrap();
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let one = root.path().join("dwp");
    let port = free_udp_port();
    ok(&tg([
        "node".as_ref(),
        "init".as_ref(),
        "--agency".as_ref(),
        "dwp".as_ref(),
        "--demo-agency".as_ref(),
        "--dir".as_ref(),
        one.as_os_str(),
        "--listen".as_ref(),
        format!("127.0.0.1:{port}").as_ref(),
        "--postgres-url-file".as_ref(),
        url_file.as_os_str(),
    ]));
    let config = std::fs::read_to_string(one.join("node.toml")).unwrap();
    assert!(config.contains("backend = \"postgres\""), "{config}");
    assert!(!one.join("data").exists(), "nothing was written to sled");
    let staff = Db::new(Arc::new(PostgresStore::open(&url).unwrap()))
        .all_staff()
        .unwrap();
    assert_eq!(
        staff.len(),
        1,
        "the first operator's credential is in the database"
    );

    // The second replica: the same folder (key, config, manifest) on another port.
    let two = root.path().join("dwp-2");
    let port2 = free_udp_port();
    std::fs::create_dir_all(two.join("staff")).unwrap();
    for f in ["node.key", "policy.toml", "member.toml"] {
        std::fs::copy(one.join(f), two.join(f)).unwrap();
        std::fs::set_permissions(two.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Its own QUIC port, and no metrics endpoint (the first replica's port is taken).
    let config2: String = config
        .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{port2}"))
        .lines()
        .filter(|l| !l.starts_with("metrics_listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(two.join("node.toml"), config2).unwrap();
    let profile = one.join("staff").join("op-1.profile.toml");
    let profile_text = std::fs::read_to_string(&profile).unwrap();
    assert!(
        profile_text.contains(&format!("127.0.0.1:{port}")),
        "{profile_text}"
    );
    let profile2 = one.join("staff").join("op-1.replica-2.profile.toml");
    std::fs::write(
        &profile2,
        profile_text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{port2}")),
    )
    .unwrap();
    std::fs::set_permissions(&profile2, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A node without a manifest adopts the one in manifest.tgm: make one for dwp alone.
    let gov = root.path().join("governance.key");
    ok(&tg([
        "key".as_ref(),
        "generate".as_ref(),
        "--out".as_ref(),
        gov.as_os_str(),
    ]));
    let manifest = one.join("manifest.tgm");
    ok(&tg([
        "manifest".as_ref(),
        "create".as_ref(),
        "--member".as_ref(),
        one.join("member.toml").as_os_str(),
        "--governance-key".as_ref(),
        gov.as_os_str(),
        "--out".as_ref(),
        manifest.as_os_str(),
    ]));
    std::fs::copy(&manifest, two.join("manifest.tgm")).unwrap();

    let (log1, log2) = (root.path().join("dwp-1.log"), root.path().join("dwp-2.log"));
    let mut nodes = Nodes(vec![run_node(&one.join("node.toml"), &log1)]);
    let first = wait_ready(&profile, &log1);
    nodes.0.push(run_node(&two.join("node.toml"), &log2));
    let second = wait_ready(&profile2, &log2);
    assert_eq!(first["agency"], "dwp", "{first}");
    assert_eq!(second["agency"], "dwp", "{second}");
    assert_eq!(first["key_fingerprint"], second["key_fingerprint"]);
    // Each status names the replica that answered it.
    assert_eq!(first["reached"], format!("127.0.0.1:{port}"), "{first}");
    assert_eq!(second["reached"], format!("127.0.0.1:{port2}"), "{second}");
    assert_eq!(first["manifest_version"], second["manifest_version"]);
    // One log in the database, signed with the agency's key, verifying whole.
    let db = Db::new(Arc::new(PostgresStore::open(&url).unwrap()));
    let key = throughgate_node::keyfile::read_secret_key(&one.join("node.key")).unwrap();
    let agency = throughgate_protocol::ids::AgencyId::new("dwp").unwrap();
    let v = throughgate_node::audit::verify_log(
        &db,
        &throughgate_protocol::audit::origin(&agency),
        &[key.public()],
    )
    .unwrap();
    assert!(v.ok(), "{v:?}");
    assert!(
        v.entries >= 1,
        "the first operator's credential is logged: {v:?}"
    );

    // A backup taken through a replica while both run is one snapshot of the database.
    let backup = root.path().join("dwp.tgb");
    ok(&tg([
        "--profile".as_ref(),
        profile.as_os_str(),
        "node".as_ref(),
        "backup".as_ref(),
        "--out".as_ref(),
        backup.as_os_str(),
    ]));
    drop(nodes);
    let restore = || {
        tg([
            "node".as_ref(),
            "restore".as_ref(),
            "--config".as_ref(),
            one.join("node.toml").as_os_str(),
            "--from".as_ref(),
            backup.as_os_str(),
        ])
    };
    // Never over a database that holds data.
    let refused = restore();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("create an empty database"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Into an empty database, left half-written by an interrupted restore: no node serves
    // from it until a restore completes.
    let fresh = cluster.create_database("dwp_restored").unwrap();
    std::fs::write(&url_file, &fresh).unwrap();
    let mut marker = throughgate_node::store::WriteBatch::new();
    marker.put(
        throughgate_node::store::RESTORE_INCOMPLETE.to_vec(),
        b"1".to_vec(),
    );
    marker.put(b"rec/half".to_vec(), b"written".to_vec());
    use throughgate_node::store::Store as _;
    PostgresStore::open(&fresh).unwrap().apply(marker).unwrap();
    let run = tg([
        "node".as_ref(),
        "run".as_ref(),
        "--config".as_ref(),
        one.join("node.toml").as_os_str(),
    ]);
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("did not finish"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let restored = ok(&restore());
    assert!(restored.contains("PostgreSQL database"), "{restored}");
    let db = Db::new(Arc::new(PostgresStore::open(&fresh).unwrap()));
    assert!(db.store().get(b"rec/half").unwrap().is_none());
    let after = throughgate_node::audit::verify_log(
        &db,
        &throughgate_protocol::audit::origin(&agency),
        &[key.public()],
    )
    .unwrap();
    assert!(after.ok() && after.entries >= v.entries, "{after:?}");
    let nodes = Nodes(vec![run_node(&one.join("node.toml"), &log1)]);
    let status = wait_ready(&profile, &log1);
    assert_eq!(status["agency"], "dwp", "{status}");
    drop(nodes);
}

#[test]
fn bench_runs_every_node_on_postgresql_past_the_hourly_consent_limit() {
    if let Err(e) = throughgate_testkit::pgcluster::find_binaries() {
        assert!(!in_ci(), "PostgreSQL is missing under CI: {e}");
        let _ = writeln!(std::io::stderr(), "SKIP: bench on postgres: {e}");
        return;
    }
    // 25 people: more consents than one caseworker may record in an hour on a node.
    let out = tg([
        "bench",
        "--store",
        "postgres",
        "--holders",
        "2",
        "--people",
        "25",
        "--records",
        "1",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--json",
    ]);
    let d: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(
        d["system"].as_str().unwrap().contains("postgresql store"),
        "{d}"
    );
    assert_eq!(d["errors"].as_f64(), Some(0.0), "{d}");
    assert!(d["passports"].as_f64().unwrap() > 0.0, "{d}");
}

#[test]
fn bench_measures_holders_answering_from_the_store_and_from_a_live_postgres_source() {
    if let Err(e) = throughgate_testkit::pgcluster::find_binaries() {
        assert!(!in_ci(), "PostgreSQL is missing under CI: {e}");
        let _ = writeln!(std::io::stderr(), "SKIP: bench with a live source: {e}");
        return;
    }
    let out = tg([
        "bench",
        "--records-source",
        "store,postgres",
        "--holders",
        "2",
        "--people",
        "10",
        "--records",
        "2",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--json",
    ]);
    let text = ok(&out);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0]["records_source"], "the store", "{text}");
    assert_eq!(
        rows[1]["records_source"], "a live postgresql source",
        "{text}"
    );
    for d in &rows {
        assert_eq!(d["errors"].as_f64(), Some(0.0), "{d}");
        assert!(d["passports"].as_f64().unwrap() > 0.0, "{d}");
        assert!(d["records_per_holder"][0].as_f64().unwrap() > 0.0, "{d}");
    }
}
