//! A live HTTPS source: an endpoint of the agency's own that answers with a subject's records
//! as JSON Lines in the import format.
//!
//! The node sends `POST <url>` with a bearer token and the JSON body
//! `{"subject": "<identifier>", "categories": ["housing", ...]}`. The endpoint answers `200`
//! with the subject's records (JSON Lines, possibly none), or `404` when it does not know the
//! subject. With `"categories": []` the node only asks whether the subject is known (linking
//! a consent), and the body of the answer is ignored. Any other status, a redirect, a body over
//! the size limit, or an answer later than the deadline discloses nothing.
//!
//! TLS is always on and verified against the configured CA file only (no system roots); the
//! certificate must name the URL's host.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use throughgate_protocol::category::Category;
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::record::Record;
use tokio_rustls::rustls;

use super::{check_answer, read_secret_text, within, RecordSource, SourceError, SourceSetupError};
use crate::config::SourceKind;
use crate::import::{ImportFormat, ImportLimits};

/// The largest answer read, in bytes.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// The largest token or CA file read.
const MAX_FILE: u64 = 256 * 1024;

/// The agency's HTTPS endpoint.
pub struct HttpSource {
    uri: Uri,
    host: String,
    port: u16,
    server_name: rustls::pki_types::ServerName<'static>,
    authorization: String,
    tls: tokio_rustls::TlsConnector,
    scheme: IdScheme,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// Reads the token (mode 0600) and CA files and checks the URL.
    pub fn open(
        url: &str,
        token_file: PathBuf,
        ca_file: PathBuf,
        scheme: IdScheme,
    ) -> Result<HttpSource, SourceSetupError> {
        let bad_url = |detail: &str| SourceSetupError::Invalid {
            path: PathBuf::from("records.http.url"),
            detail: detail.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| bad_url("not a URL; give https://host:port/path"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad_url("the URL must start with https://"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad_url("the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| bad_url("the URL's host is not a valid name or address"))?;
        let token = read_secret_text(token_file.clone(), MAX_FILE)?;
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SourceSetupError::Invalid {
                path: token_file,
                detail: "the token must be one line of printable ASCII without spaces".into(),
            });
        }
        let tls = connector(&ca_file)?;
        Ok(HttpSource {
            uri,
            host,
            port,
            server_name,
            authorization: format!("Bearer {token}"),
            tls,
            scheme,
        })
    }

    /// Sends one request; gives the status and (for 200) the body.
    async fn post(&self, body: Vec<u8>) -> Result<(StatusCode, Bytes), SourceError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| SourceError::Unavailable(format!("cannot connect ({})", e.kind())))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| SourceError::Unavailable(format!("TLS handshake failed: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| SourceError::Unavailable(format!("HTTP handshake failed: {e}")))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "record source connection closed");
            }
        });
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| self.host.clone());
        let request = Request::post(self.uri.clone())
            .header(hyper::header::HOST, authority)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/jsonl")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SourceError::Unavailable(format!("cannot build the request: {e}")))?;
        let answer = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| SourceError::Unavailable(format!("the request failed: {e}")))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Ok((status, Bytes::new()));
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| {
                    SourceError::Invalid(format!(
                        "the answer could not be read whole, or is over {MAX_ANSWER} bytes"
                    ))
                })?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        answer
    }

    fn request_body(subject: &str, categories: &BTreeSet<Category>) -> Vec<u8> {
        let categories: Vec<&str> = categories.iter().map(|c| c.as_str()).collect();
        serde_json::to_vec(&serde_json::json!({
            "subject": subject,
            "categories": categories,
        }))
        .unwrap_or_default()
    }

    async fn fetch_now(
        &self,
        subject: &str,
        categories: &BTreeSet<Category>,
    ) -> Result<Vec<Record>, SourceError> {
        if categories.is_empty() {
            return Ok(Vec::new());
        }
        let (status, body) = self.post(Self::request_body(subject, categories)).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            other => {
                return Err(SourceError::Unavailable(format!(
                    "the endpoint answered HTTP {}",
                    other.as_u16()
                )))
            }
        }
        let limits = ImportLimits {
            max_bytes: MAX_ANSWER,
            max_rows: super::MAX_RECORDS_PER_SUBJECT,
            ..ImportLimits::default()
        };
        let records = crate::import::import(&body, ImportFormat::Json, self.scheme, &limits)
            .map_err(|e| SourceError::Invalid(e.to_string()))?;
        check_answer(subject, &records)?;
        Ok(records)
    }

    async fn known_now(&self, subject: &str) -> Result<bool, SourceError> {
        let (status, _) = self
            .post(Self::request_body(subject, &BTreeSet::new()))
            .await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(SourceError::Unavailable(format!(
                "the endpoint answered HTTP {}",
                other.as_u16()
            ))),
        }
    }
}

/// A TLS connector trusting only the CA certificates in `ca_file`.
fn connector(ca_file: &PathBuf) -> Result<tokio_rustls::TlsConnector, SourceSetupError> {
    use rustls::pki_types::pem::PemObject;
    let invalid = |detail: String| SourceSetupError::Invalid {
        path: ca_file.clone(),
        detail,
    };
    let meta = std::fs::metadata(ca_file).map_err(|source| SourceSetupError::Io {
        path: ca_file.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE {
        return Err(invalid(format!("the file is over {MAX_FILE} bytes")));
    }
    let pem = std::fs::read(ca_file).map_err(|source| SourceSetupError::Io {
        path: ca_file.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| invalid("the file is not PEM certificates".into()))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("a certificate is not usable as a CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("the file holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl RecordSource for HttpSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Http
    }

    fn fetch<'a>(
        &'a self,
        subject: &'a str,
        categories: &'a BTreeSet<Category>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>, SourceError>> {
        Box::pin(within(timeout, self.fetch_now(subject, categories)))
    }

    fn subject_known<'a>(
        &'a self,
        subject: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        Box::pin(within(timeout, self.known_now(subject)))
    }
}
