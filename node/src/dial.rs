//! Connecting to one of several addresses of the same node (the replicas of one agency, all
//! presenting its key): attempts are staggered and raced, the first completed handshake wins.
//! Used by the node for its peers and by the staff client for its home node.

use std::net::SocketAddr;
use std::time::Duration;

/// How long a connection attempt to one address runs alone before the next address joins the
/// race.
pub const CONNECT_STAGGER: Duration = Duration::from_millis(250);

/// Why no address answered: the last failure seen, as `address: reason`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DialError(pub String);

/// Resolves `host:port` strings, in order, dropping duplicates; unresolvable ones are skipped.
/// Returns the addresses and the last resolution failure, if any.
pub async fn resolve_all<'a>(
    addresses: impl IntoIterator<Item = &'a str>,
) -> (Vec<SocketAddr>, Option<String>) {
    let mut out = Vec::new();
    let mut last = None;
    for addr in addresses {
        match tokio::net::lookup_host(addr).await {
            Ok(mut it) => match it.next() {
                Some(sock) if !out.contains(&sock) => out.push(sock),
                Some(_) => {}
                None => last = Some(format!("{addr}: does not resolve")),
            },
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    (out, last)
}

/// Connects to the first of `addrs` to complete a handshake. The first address is tried alone
/// for [`CONNECT_STAGGER`]; then each further address joins the race, or at once when every
/// attempt so far has failed. A dead address thus delays a connection by the stagger, never
/// by a handshake timeout. The caller bounds the whole with its own deadline.
pub async fn first_handshake(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addrs: &[SocketAddr],
    server_name: &str,
) -> Result<(SocketAddr, quinn::Connection), DialError> {
    let mut last = String::from("no address to connect to");
    let mut racing = futures::stream::FuturesUnordered::new();
    let mut next = addrs.iter().copied();
    loop {
        if let Some(sock) = next.next() {
            match endpoint.connect_with(config.clone(), sock, server_name) {
                Ok(connecting) => racing.push(async move { (sock, connecting.await) }),
                Err(e) => {
                    last = format!("{sock}: {e}");
                    continue;
                }
            }
        }
        if racing.is_empty() {
            return Err(DialError(last));
        }
        let more = next.len() > 0;
        tokio::select! {
            Some((sock, result)) = futures::StreamExt::next(&mut racing) => match result {
                Ok(conn) => return Ok((sock, conn)),
                Err(e) => last = format!("{sock}: {e}"),
            },
            () = tokio::time::sleep(CONNECT_STAGGER), if more => {}
        }
    }
}
