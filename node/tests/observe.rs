//! The operator's endpoints: `/metrics` in Prometheus text format, `/healthz` and `/readyz`, on
//! a loopback HTTP port; and logs never name people.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_node::config::Limits;
use throughgate_testkit::localfed::{FedOptions, LocalFederation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served_on_loopback() {
    let limits = Limits {
        witness_interval_secs: 86_400,
        ..Limits::default()
    };
    let fed = LocalFederation::start(FedOptions {
        people: 40,
        limits,
        metrics: true,
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let person = person_known_to(&fed, &ALL);
    let p = plan(&fed, person, 3600);
    grant(&fed, &p).await;
    assemble_as_caseworker(&fed, &p.passport_id).await;

    let nhs = fed.node("nhs-wy").unwrap().metrics_addr.unwrap();
    assert!(nhs.ip().is_loopback());
    assert_eq!(get(nhs, "/healthz").await.0, 200);
    assert_eq!(get(nhs, "/readyz").await, (200, "ready\n".to_owned()));
    let (status, body) = get(nhs, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            r#"throughgate_queries_total{outcome="disclosed",requester="probation-yorks"} 1"#
        ),
        "{body}"
    );
    assert!(body.contains("throughgate_query_seconds_bucket"), "{body}");
    assert!(body.contains("throughgate_manifest_version 1"), "{body}");
    assert!(
        body.contains("throughgate_audit_batch_size_count"),
        "{body}"
    );
    assert!(body.contains("throughgate_outbox_pending 0"), "{body}");
    let probation = fed.node("probation-yorks").unwrap().metrics_addr.unwrap();
    let (_, body) = get(probation, "/metrics").await;
    assert!(
        body.contains(r#"throughgate_passports_total{kind="complete"} 1"#),
        "{body}"
    );
    // Nothing about the person appears.
    assert!(!body.contains(person.family_name) && !body.contains(p.passport_id.as_str()));
    assert_eq!(get(nhs, "/nope").await.0, 404);
    // Readiness follows the manifest: past its expiry the node is not ready.
    fed.clock.advance(91 * 86_400);
    let (status, body) = get(nhs, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("expired"), "{body}");
    fed.shutdown().await;
}
