//! TLS for the tests: a throwaway CA with a server and a client
//! certificate (generated at run time), and TLS-terminating proxies that
//! put the plain local servers behind TLS:
//!
//! * [`TlsTcpProxy`]: bytes in both directions (Kafka: tansu's own TLS
//!   listener does not work with librdkafka);
//! * [`HttpsAuthProxy`]: HTTP that answers 401 unless the request carries
//!   the expected `Authorization` header, then forwards to the plain server
//!   (Elasticsearch with authentication).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A CA, a server certificate for `127.0.0.1`/`localhost` and a client
/// certificate (CN `logingest`), as PEM files in a directory.
pub struct Pki {
    /// The CA certificate: what clients trust.
    pub ca_file: PathBuf,
    /// The server certificate, signed by the CA.
    pub server_cert_file: PathBuf,
    /// Its private key.
    pub server_key_file: PathBuf,
    /// A client certificate, signed by the CA (for mutual TLS).
    pub client_cert_file: PathBuf,
    /// Its private key.
    pub client_key_file: PathBuf,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

impl Pki {
    /// Generates the CA and both certificates into `dir` (file names start
    /// with `name`, so several PKIs can share a directory).
    pub fn generate(dir: &Path, name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server cert");

        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "logingest");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("client key");
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .expect("client cert");

        Self {
            ca_file: write(dir, &format!("{name}-ca.pem"), &ca_cert.pem()),
            server_cert_file: write(dir, &format!("{name}-server.pem"), &server_cert.pem()),
            server_key_file: write(
                dir,
                &format!("{name}-server-key.pem"),
                &server_key.serialize_pem(),
            ),
            client_cert_file: write(dir, &format!("{name}-client.pem"), &client_cert.pem()),
            client_key_file: write(
                dir,
                &format!("{name}-client-key.pem"),
                &client_key.serialize_pem(),
            ),
            server_cert: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
        }
    }

    /// A TLS acceptor presenting the server certificate (no client
    /// certificate asked).
    pub fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
            )
            .expect("server TLS config");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Terminates TLS on `127.0.0.1:port` and forwards the plain bytes to
/// `upstream`.
pub struct TlsTcpProxy {
    pub port: u16,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Handshakes that failed (e.g. a client that does not trust the CA).
    pub failed_handshakes: Arc<AtomicU64>,
}

impl TlsTcpProxy {
    /// Starts on a free port.
    pub async fn start(upstream: &str, acceptor: TlsAcceptor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_string();
        let (conn_tasks, failed) = (tasks.clone(), failed_handshakes.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (upstream, acceptor, failed) =
                    (upstream.clone(), acceptor.clone(), failed.clone());
                let conn = tokio::spawn(async move {
                    let Ok(mut inbound) = acceptor.accept(inbound).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conn_tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Self {
            port,
            tasks,
            failed_handshakes,
        }
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsTcpProxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

struct AuthShared {
    upstream: String,
    expected: String,
    client: reqwest::Client,
    accepted: AtomicU64,
    rejected: AtomicU64,
    bulk_accepted: AtomicU64,
}

/// HTTPS on `127.0.0.1:port`: 401 unless `Authorization` is exactly the
/// expected value, otherwise forwarded to the plain upstream.
pub struct HttpsAuthProxy {
    pub port: u16,
    shared: Arc<AuthShared>,
    accept: AbortHandle,
}

impl HttpsAuthProxy {
    /// Starts on a free port in front of `upstream` (`http://host:port`).
    pub async fn start(
        upstream: &str,
        acceptor: TlsAcceptor,
        expected_authorization: &str,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(AuthShared {
            upstream: upstream.trim_end_matches('/').to_string(),
            expected: expected_authorization.to_string(),
            client: reqwest::Client::new(),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bulk_accepted: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), accept_shared.clone());
                connections.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| handle(request, shared.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            shared,
            accept: accept.abort_handle(),
        }
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Requests answered 401.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::SeqCst)
    }

    /// Requests forwarded.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// `_bulk` requests forwarded that succeeded.
    pub fn bulk_accepted(&self) -> u64 {
        self.shared.bulk_accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsAuthProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection-specific headers and the credential: not forwarded.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "connection"
                    | "keep-alive"
                    | "te"
                    | "trailer"
                    | "transfer-encoding"
                    | "upgrade"
                    | "host"
                    | "content-length"
                    | "authorization"
            )
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn plain_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<AuthShared>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == shared.expected.as_bytes());
    if !authorized {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        let mut response = plain_response(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(
                br#"{"error":{"type":"security_exception","reason":"missing or wrong credentials"},"status":401}"#,
            ),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let is_bulk = parts.uri.path().ends_with("/_bulk");
    let sent = shared
        .client
        .request(parts.method, format!("{}{path}", shared.upstream))
        .headers(forwarded_headers(&parts.headers))
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(e) => {
            return Ok(plain_response(
                StatusCode::BAD_GATEWAY,
                Bytes::from(format!("upstream: {e}")),
            ))
        }
    };
    let status = upstream.status();
    let headers = forwarded_headers(upstream.headers());
    let body = upstream.bytes().await?;
    if is_bulk && status.is_success() {
        shared.bulk_accepted.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = plain_response(status, body);
    *response.headers_mut() = headers;
    Ok(response)
}
