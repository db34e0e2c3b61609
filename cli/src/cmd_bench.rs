//! `tg bench`: a load benchmark in the manner of redis-benchmark. Starts a federation on
//! loopback in this process, records consent for a set of synthetic people, warms up, then
//! drives passport assemblies through the same client path `tg passport assemble` uses and
//! reports throughput, latency, CPU, memory and the crypto floor. The machinery lives in
//! `throughgate_testkit::bench`; this file parses, loops over sweeps and prints.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use throughgate_testkit::bench::{
    audit_verify, parse_count, records_range, BenchFederation, BenchOptions, BenchReport,
    ClientVerify, CryptoCost, SignatureBudget, WARMUP,
};

use crate::render;
use crate::Global;

/// Arguments of `tg bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Holder nodes. Up to six are the demo agencies (the requester, probation-yorks, is one of
    /// them); beyond six, synthetic holders `holder-07`... shaped like the demo agencies.
    #[arg(long, default_value_t = 6)]
    pub holders: usize,
    /// Consented people (each known to every holder), as the yardstick's `--people`.
    #[arg(long, default_value_t = 1000)]
    pub people: usize,
    /// Records per person per holder, as the yardstick's `--records` (the generator gives each
    /// person this number plus or minus one).
    #[arg(long, default_value_t = 5)]
    pub records: usize,
    /// Fill each holder's store to at least this many records (e.g. 1e6) with people who gave
    /// no consent, to measure cost against data size. Default: only the consented people's.
    #[arg(long, value_parser = parse_count_arg)]
    pub holder_records: Option<u64>,
    /// Concurrent caseworkers (sharing a pool of up to 8 connections to the requester's node,
    /// one QUIC stream per passport).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// What the caseworker client verifies: `full`, everything again, as `tg passport assemble`
    /// does; `statement`, only the home node's signed assembly statement (the model of a
    /// requester that verifies each holder's reply once, as the yardstick does).
    #[arg(long, value_enum, default_value_t = BenchVerify::Full)]
    pub client_verify: BenchVerify,
    /// Seconds of measured load, after a 2 s warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Sweep one parameter, one row per point: `holders=1,2,4,8,16,32`,
    /// `records=1e4,1e5,1e6` (records per holder store, as --holder-records),
    /// `concurrency=1,8,64,256`, `people=...` or `records-per-person=...`.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Instead of the load test: append this many entries (e.g. 1e6) to a fresh node's audit
    /// log with durable group commit, then time full verification of the log.
    #[arg(long, value_parser = parse_count_arg)]
    pub audit_verify: Option<u64>,
    /// Instead of the load test: set up the federation, then time `tg passport assemble` as a
    /// whole fresh process this many times (cold CLI: key, profile, handshake, manifest and
    /// consent look-up, assembly, verification, rendering).
    #[arg(long)]
    pub cold: Option<usize>,
    /// Every node's page cache, MiB, as `[storage] cache_mib` in a node's config (the default
    /// there too). The audit verifier reads the log through it.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(throughgate_node::config::Storage::CACHE_MIB))]
    pub cache_mib: u64,
    /// Every node's audit commit delay, milliseconds, as `[storage] commit_delay_ms` in a
    /// node's config (the default there too; 0 commits every batch at once).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(throughgate_node::config::Storage::COMMIT_DELAY_MS))]
    pub commit_delay_ms: u64,
    /// Iterations of the sign and verify timing loops.
    #[arg(long, default_value_t = 3000)]
    pub crypto_iterations: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Where every node keeps its state: `sled` (the embedded default) or `postgres` (one
    /// throwaway cluster with fsync on, from the system's `initdb`/`pg_ctl`, one database per
    /// agency).
    #[arg(long, value_enum, default_value_t = BenchStore::Sled)]
    pub store: BenchStore,
    /// Where holders read records when they answer: `store` (their imported records) or
    /// `postgres` (a live source each: a database of the agency's own in a throwaway local
    /// cluster, read through a mapping as a read-only role). Name both, `store,postgres`, to
    /// measure one after the other under the same settings and compare them in one table.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "store")]
    pub records_source: Vec<BenchSource>,
}

/// Where a benchmark's holders read records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSource {
    /// The node's own store of imported records.
    Store,
    /// A live PostgreSQL source.
    Postgres,
}

impl BenchSource {
    fn kind(self) -> throughgate_node::config::SourceKind {
        match self {
            BenchSource::Store => throughgate_node::config::SourceKind::Store,
            BenchSource::Postgres => throughgate_node::config::SourceKind::Postgres,
        }
    }
}

/// How much of each passport the bench's caseworker client verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchVerify {
    /// The whole bundle: query, statement, every response and receipt.
    Full,
    /// The home node's signed assembly statement only.
    Statement,
}

impl From<BenchVerify> for ClientVerify {
    fn from(v: BenchVerify) -> ClientVerify {
        match v {
            BenchVerify::Full => ClientVerify::Full,
            BenchVerify::Statement => ClientVerify::Statement,
        }
    }
}

/// The storage backend a benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStore {
    /// sled, in each node's folder.
    Sled,
    /// PostgreSQL.
    Postgres,
}

fn parse_count_arg(s: &str) -> Result<u64, String> {
    parse_count(s).ok_or_else(|| format!("{s:?} is not a count (e.g. 1000, 1e6, 10k)"))
}

/// What a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Holders,
    HolderRecords,
    RecordsPerPerson,
    People,
    Concurrency,
}

fn parse_sweep(s: &str) -> Result<(Key, Vec<u64>)> {
    let (k, vs) = s
        .split_once('=')
        .context("--sweep takes KEY=V1,V2,... (e.g. holders=1,2,4,8)")?;
    let key = match k.trim() {
        "holders" => Key::Holders,
        "records" | "holder-records" => Key::HolderRecords,
        "records-per-person" => Key::RecordsPerPerson,
        "people" => Key::People,
        "concurrency" => Key::Concurrency,
        other => bail!(
            "cannot sweep {other:?}: use holders, records, records-per-person, people or concurrency"
        ),
    };
    let values = vs
        .split(',')
        .map(|v| parse_count(v).with_context(|| format!("{v:?} is not a count")))
        .collect::<Result<Vec<u64>>>()?;
    if values.is_empty() || values.contains(&0) {
        bail!("--sweep values must be positive counts");
    }
    Ok((key, values))
}

/// The nodes' storage tuning from the arguments.
fn storage(a: &BenchArgs) -> throughgate_node::config::Storage {
    throughgate_node::config::Storage {
        cache_mib: a.cache_mib,
        commit_delay_ms: a.commit_delay_ms,
        ..Default::default()
    }
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Runs the benchmark.
pub async fn run(g: &Global, a: BenchArgs) -> Result<u8> {
    if let Some(n) = a.audit_verify {
        return run_audit_verify(g, n, storage(&a)).await;
    }
    if a.holders == 0 || a.people == 0 || a.concurrency == 0 || a.duration == 0 {
        bail!("--holders, --people, --concurrency and --duration must be positive");
    }
    if let Some(runs) = a.cold {
        return run_cold(g, &a, runs).await;
    }
    let crypto = CryptoCost::measure(a.crypto_iterations);
    let base = BenchOptions {
        holders: a.holders,
        people: a.people,
        records_per_person: a.records,
        holder_records: a.holder_records,
        seed: a.seed,
        storage: storage(&a),
        postgres: a.store == BenchStore::Postgres,
        records_source: a
            .records_source
            .first()
            .copied()
            .unwrap_or(BenchSource::Store)
            .kind(),
    };
    let duration = Duration::from_secs(a.duration);
    let sweep = a.sweep.as_deref().map(parse_sweep).transpose()?;
    if sweep.is_some() && a.records_source.len() > 1 {
        bail!("--sweep takes one --records-source");
    }
    let verify = ClientVerify::from(a.client_verify);
    if !g.json {
        print_crypto(&crypto, a.holders, verify);
        println!(
            "\nThroughgate's audit log is always durable: every decision is fsynced (group commit) \
             before anything is disclosed; there is no way to turn that off. Compare with the \
             yardstick's --durable figures. All nodes run in this one process: CPU and peak RSS \
             cover every node and every caseworker client.\n"
        );
    }
    let mut reports = Vec::new();
    match sweep {
        None => {
            for source in &a.records_source {
                let o = BenchOptions {
                    records_source: source.kind(),
                    ..base.clone()
                };
                let r = point(g, &o, a.concurrency, verify, duration, a.crypto_iterations).await?;
                if a.records_source.len() > 1 {
                    emit_row(g, &r, &format!("records from {}", r.records_source));
                }
                reports.push(r);
            }
        }
        Some((Key::Concurrency, values)) => {
            progress(g, "setting up the federation");
            let fed = BenchFederation::setup(base.clone()).await?;
            for c in values {
                progress(g, &format!("concurrency {c}"));
                // Sign and verify cost measured again for every point (the machine is shared).
                let crypto = CryptoCost::measure(a.crypto_iterations);
                let r = fed
                    .measure(usize_of(c), verify, WARMUP, duration, &crypto)
                    .await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        fed.shutdown().await;
                        return Err(e.into());
                    }
                };
                emit_row(g, &r, &format!("concurrency={c}"));
                reports.push(r);
            }
            fed.shutdown().await;
        }
        Some((key, values)) => {
            for v in values {
                let mut o = base.clone();
                match key {
                    Key::Holders => o.holders = usize_of(v),
                    Key::HolderRecords => o.holder_records = Some(v),
                    Key::RecordsPerPerson => o.records_per_person = usize_of(v),
                    Key::People => o.people = usize_of(v),
                    Key::Concurrency => {}
                }
                let label = match key {
                    Key::Holders => format!("holders={v}"),
                    Key::HolderRecords => format!("records/holder={v}"),
                    Key::RecordsPerPerson => format!("records/person={v}"),
                    Key::People => format!("people={v}"),
                    Key::Concurrency => String::new(),
                };
                progress(g, &label);
                let r = point(g, &o, a.concurrency, verify, duration, a.crypto_iterations).await?;
                emit_row(g, &r, &label);
                reports.push(r);
            }
        }
    }
    if reports.len() == 1 {
        if let Some(r) = reports.first() {
            if g.json {
                println!("{}", serde_json::to_string(&json_of(r))?);
            } else {
                print_report(r);
            }
        }
    } else if !g.json {
        print_table(&reports);
    }
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("error: {errors} passport(s) failed during the benchmark");
        for s in reports.iter().flat_map(|r| r.error_samples.iter()).take(5) {
            eprintln!("  {s}");
        }
        return Ok(crate::exit::FAILURE);
    }
    Ok(crate::exit::OK)
}

/// One point: set up, measure, shut down.
async fn point(
    g: &Global,
    o: &BenchOptions,
    concurrency: usize,
    verify: ClientVerify,
    duration: Duration,
    crypto_iterations: usize,
) -> Result<BenchReport> {
    progress(
        g,
        &format!(
            "starting {} holders, {} consented people, {} records/person/holder{}",
            o.holders,
            o.people,
            o.records_per_person,
            o.holder_records
                .map(|r| format!(", stores filled to {r} records"))
                .unwrap_or_default()
        ),
    );
    let fed = BenchFederation::setup(o.clone())
        .await
        .context("setting up the benchmark federation")?;
    let (lo, hi) = records_range(&fed.records_per_holder);
    progress(
        g,
        &format!(
            "ready: {lo}-{hi} records per holder; nodes started in {:.1} s, records loaded in {:.1} s, consent delivered in {:.1} s; {:.0} s warm-up, {} s measured with {concurrency} caseworkers ({} client verification)",
            fed.setup.start_s,
            fed.setup.load_s,
            fed.setup.consent_s,
            WARMUP.as_secs_f64(),
            duration.as_secs(),
            verify.as_str()
        ),
    );
    // Sign and verify cost measured for every point, just before it (the machine is shared).
    let crypto = CryptoCost::measure(crypto_iterations);
    let r = fed
        .measure(concurrency, verify, WARMUP, duration, &crypto)
        .await;
    fed.shutdown().await;
    Ok(r?)
}

fn progress(g: &Global, msg: &str) {
    if !g.json {
        eprintln!("bench: {msg}");
    }
}

fn json_of(r: &BenchReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        let budget = SignatureBudget::new(r.holders, r.checkpoint_signs_per_passport)
            .for_client(r.client_verify);
        o.insert(
            "signature_budget".into(),
            serde_json::to_value(&budget.lines).unwrap_or_default(),
        );
        o.insert(
            "notes".into(),
            serde_json::json!([
                "durable is always true: the audit log fsyncs every commit batch before disclosure; it cannot be turned off",
                "all nodes and clients run in one process: cpu and peak_rss cover all of them; peak_rss_per_node_mib is that divided by the nodes",
                "client_cpu_ms_per_passport is thread CPU time while the caseworker clients' calls were polled; node_cpu_ms_per_passport is the process CPU less that",
                "crypto floor = cores / (signs * sign_us + verifies * verify_us), with signs and verifies counted in the measured window (cache hits are not verifications)"
            ]),
        );
    }
    v
}

/// Prints a sweep row as soon as it is measured (JSON: one object per line).
fn emit_row(g: &Global, r: &BenchReport, label: &str) {
    if g.json {
        let mut v = json_of(r);
        if let Some(o) = v.as_object_mut() {
            o.insert("point".into(), serde_json::Value::String(label.to_owned()));
        }
        println!("{v}");
    } else {
        eprintln!(
            "bench: {label}: {:.0} passports/s, p50 {:.2} ms, p99 {:.2} ms, {:.2} of floor, {} errors",
            r.passports_per_sec, r.latency_ms.p50, r.latency_ms.p99, r.floor_fraction, r.errors
        );
    }
}

fn print_crypto(c: &CryptoCost, holders: usize, verify: ClientVerify) {
    println!(
        "Ed25519 on this machine ({} cores): sign {:.1} us, strict verify {:.1} us ({:.1} us \
         including decoding the key, as Throughgate's verify does)",
        c.cores, c.sign_us, c.verify_us, c.verify_with_key_decode_us
    );
    let b = SignatureBudget::new(holders, holders as f64 + 1.0).for_client(verify);
    let mut t = render::table(&["who", "what", "signs", "verifies", "cached"]);
    for l in &b.lines {
        t.add_row(vec![
            l.who.to_owned(),
            l.what.to_owned(),
            format!("{}", l.signs),
            format!("{}", l.verifies),
            if l.cached { "yes" } else { "" }.to_owned(),
        ]);
    }
    println!(
        "Signatures per passport with {holders} holders, {} client verification (checkpoints at \
         most one per entry here; the run reports the counts actually made):\n{t}",
        verify.as_str()
    );
    println!(
        "Total before caches: {} signs, {} verifies; with every cache warm, {} and {}.",
        b.signs(),
        b.verifies(),
        b.warm().signs(),
        b.warm().verifies()
    );
}

fn print_report(r: &BenchReport) {
    let (lo, hi) = records_range(&r.records_per_holder);
    let mut t = render::table(&["measure", "value"]);
    let rows: Vec<(&str, String)> = vec![
        (
            "federation",
            format!(
                "{} holders ({} nodes), {} consented people, {} records/person/holder, {lo}-{hi} records per holder",
                r.holders, r.nodes, r.people, r.records_per_person
            ),
        ),
        ("records from", r.records_source.clone()),
        ("caseworkers", r.concurrency.to_string()),
        (
            "measured",
            format!("{:.1} s, {} passports", r.duration_s, r.passports),
        ),
        ("passports/s", format!("{:.1}", r.passports_per_sec)),
        ("holder queries/s", format!("{:.1}", r.holder_queries_per_sec)),
        (
            "latency p50 / p95 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} ms",
                r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
            ),
        ),
        (
            "CPU per passport",
            format!(
                "{:.2} ms (process at {:.0}% of {} cores)",
                r.cpu_ms_per_passport,
                r.cpu_utilisation * 100.0,
                r.cores
            ),
        ),
        (
            "  node side / client side",
            format!(
                "{:.2} / {:.2} ms ({} client verification)",
                r.node_cpu_ms_per_passport,
                r.client_cpu_ms_per_passport,
                r.client_verify.as_str()
            ),
        ),
        (
            "context switches",
            format!(
                "{:.1} per passport (every thread of the process)",
                r.context_switches_per_passport
            ),
        ),
        (
            "peak RSS (whole process)",
            format!(
                "{:.0} MiB during the run ({:.0} MiB per node); {:.0} MiB while loading",
                r.peak_rss_mib, r.peak_rss_per_node_mib, r.setup_peak_rss_mib
            ),
        ),
        (
            "audit group commit",
            format!(
                "{:.2} checkpoints signed per passport, {:.1} entries per batch, commit delay up to {} ms",
                r.checkpoint_signs_per_passport, r.audit_entries_per_checkpoint, r.commit_delay_ms
            ),
        ),
        (
            "signatures per passport",
            format!(
                "{:.2} signs, {:.2} verifies",
                r.signs_per_passport, r.verifies_per_passport
            ),
        ),
        (
            "crypto floor",
            format!(
                "{:.0} passports/s = {} cores / ({:.2} x {:.1} us + {:.2} x {:.1} us)",
                r.crypto_floor_passports_per_sec,
                r.cores,
                r.signs_per_passport,
                r.sign_us,
                r.verifies_per_passport,
                r.verify_us
            ),
        ),
        ("achieved fraction of floor", format!("{:.2}", r.floor_fraction)),
        ("durable", "always (fsync per commit batch)".to_owned()),
        ("errors", r.errors.to_string()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    println!("{t}");
}

fn print_table(reports: &[BenchReport]) {
    let mut t = render::table(&[
        "records from",
        "holders",
        "records/holder",
        "caseworkers",
        "passports/s",
        "holder q/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "CPU ms/passport",
        "node / client ms",
        "peak RSS MiB",
        "floor/s",
        "of floor",
        "errors",
    ]);
    for r in reports {
        let (lo, hi) = records_range(&r.records_per_holder);
        t.add_row(vec![
            r.records_source.clone(),
            r.holders.to_string(),
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            },
            r.concurrency.to_string(),
            format!("{:.1}", r.passports_per_sec),
            format!("{:.1}", r.holder_queries_per_sec),
            format!("{:.2}", r.latency_ms.p50),
            format!("{:.2}", r.latency_ms.p95),
            format!("{:.2}", r.latency_ms.p99),
            format!("{:.2}", r.latency_ms.max),
            format!("{:.2}", r.cpu_ms_per_passport),
            format!(
                "{:.2} / {:.2}",
                r.node_cpu_ms_per_passport, r.client_cpu_ms_per_passport
            ),
            format!("{:.0}", r.peak_rss_mib),
            format!("{:.0}", r.crypto_floor_passports_per_sec),
            format!("{:.2}", r.floor_fraction),
            r.errors.to_string(),
        ]);
    }
    println!("{t}");
}

async fn run_cold(g: &Global, a: &BenchArgs, runs: usize) -> Result<u8> {
    let exe = std::env::current_exe().context("finding the tg executable")?;
    progress(g, "setting up the federation");
    let fed = BenchFederation::setup(BenchOptions {
        holders: a.holders,
        people: a.people,
        records_per_person: a.records,
        holder_records: a.holder_records,
        seed: a.seed,
        storage: storage(a),
        postgres: a.store == BenchStore::Postgres,
        records_source: a
            .records_source
            .first()
            .copied()
            .unwrap_or(BenchSource::Store)
            .kind(),
    })
    .await?;
    progress(
        g,
        &format!("timing {runs} cold `tg passport assemble` processes"),
    );
    let r = fed.cold_assemble(&exe, runs).await;
    fed.shutdown().await;
    let r = r?;
    if g.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let mut t = render::table(&["measure", "value"]);
        t.add_row(vec!["command".to_owned(), r.command.clone()]);
        t.add_row(vec![
            "runs".to_owned(),
            format!("{} ok, {} failed", r.runs, r.failures),
        ]);
        t.add_row(vec![
            "wall time p50 / min / max".to_owned(),
            format!("{:.1} / {:.1} / {:.1} ms", r.p50_ms, r.min_ms, r.max_ms),
        ]);
        println!("{t}");
    }
    Ok(if r.failures == 0 {
        crate::exit::OK
    } else {
        crate::exit::FAILURE
    })
}

async fn run_audit_verify(
    g: &Global,
    n: u64,
    storage: throughgate_node::config::Storage,
) -> Result<u8> {
    progress(
        g,
        &format!(
            "appending {n} entries to a fresh audit log (durable group commit, page cache {} MiB)",
            storage.cache_mib
        ),
    );
    let r = audit_verify(n, 16_384, storage).await?;
    if g.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let mut t = render::table(&["measure", "value"]);
        t.add_row(vec![
            "appended".to_owned(),
            format!(
                "{} entries in {:.1} s ({:.0}/s, {:.0} entries per checkpoint)",
                r.appended, r.append_s, r.append_per_sec, r.entries_per_checkpoint
            ),
        ]);
        t.add_row(vec![
            "verified".to_owned(),
            format!(
                "{} entries and {} checkpoints in {:.2} s",
                r.verified, r.checkpoints, r.verify_s
            ),
        ]);
        t.add_row(vec![
            "verification rate".to_owned(),
            format!("{:.0} entries/s", r.verify_per_sec),
        ]);
        t.add_row(vec![
            "memory".to_owned(),
            format!(
                "peak RSS {:.0} MiB appending, {:.0} MiB verifying, with a {} MiB page cache",
                r.append_peak_rss_mib, r.verify_peak_rss_mib, r.cache_mib
            ),
        ]);
        t.add_row(vec![
            "result".to_owned(),
            if r.ok {
                "log verifies"
            } else {
                "LOG DOES NOT VERIFY"
            }
            .to_owned(),
        ]);
        println!("{t}");
    }
    Ok(if r.ok {
        crate::exit::OK
    } else {
        crate::exit::INVALID
    })
}
