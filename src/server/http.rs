//! The HTTP server (`http.listen`): the browser viewer, gRPC-Web for it (the same
//! `megdecoder.v1.Decoder` service, bearer token and all), `/metrics` and `/healthz`.
//!
//! One hyper server with axum routes. Connections are capped (more are closed at once),
//! accept errors back off instead of spinning, TLS uses the gRPC port's certificate, and
//! each connection keeps the limits of [`super::http_conn`] (`http.header_timeout_s` for
//! first bytes, headers, request bodies and idleness). The port also answers native gRPC
//! (HTTP/2) under the same rules.
//! Without a bearer token, the service behind this port is read-only
//! ([`DecoderService::read_only`]: StartRecording, StopRecording and LoadModel are
//! refused): a browser-reachable port must not let any page on the network start a
//! recording.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tonic::transport::server::TcpConnectInfo;

use super::auth::BearerAuth;
use super::grpc::decoder_server::DecoderServer;
use super::http_conn::{serve_connection, sniff_http2, FirstBytes};
use super::metrics::{ServiceMetrics, OPENMETRICS_CONTENT_TYPE};
use super::serve::{ServerError, TlsFiles};
use super::service::{DecoderService, DecoderState};

/// How the HTTP server runs.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub listen: SocketAddr,
    /// Serve the viewer page and gRPC-Web (false: only /metrics and /healthz).
    pub viewer: bool,
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// The viewer's files, embedded in the binary: the page and its stylesheet as written,
/// the script as `make viewer` bundles it.
const INDEX_HTML: &str = include_str!("../../viewer/src/index.html");
const VIEWER_JS: &str = include_str!("../../viewer/dist/viewer.js");
const VIEWER_CSS: &str = include_str!("../../viewer/src/viewer.css");

/// Why the HTTP port refuses calls that change state when the server has no token.
const READ_ONLY: &str = "this server has no bearer token, so the viewer's HTTP port is read-only: start `serve` with --token-file to record or switch models from the browser";

/// Binds `opts.listen` now (a taken port fails at start-up) and serves until the
/// returned task is aborted.
pub async fn serve_http(
    state: Arc<DecoderState>,
    opts: HttpOptions,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| ServerError::Bind {
        addr: opts.listen,
        why: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is already in use; choose another with --http-listen".into()
        } else {
            e.to_string()
        },
    })?;
    let addr = listener.local_addr().map_err(|e| ServerError::Transport(e.to_string()))?;
    let tls = opts.tls.as_ref().map(tls_acceptor).transpose()?;
    let app = router(state, &opts);
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let timeout = opts.header_timeout;
    let task = tokio::spawn(async move {
        loop {
            let (sock, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("HTTP server: accept failed ({e}); retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!("HTTP server: connection cap reached; closing a new connection");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let peer = TcpConnectInfo { local_addr: Some(addr), remote_addr: Some(remote) };
            let (app, tls) = (app.clone(), tls.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    Some(acceptor) => {
                        let Ok(Ok(s)) = tokio::time::timeout(timeout, acceptor.accept(sock)).await else {
                            return;
                        };
                        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_connection(s, FirstBytes::default(), h2, app, timeout, peer).await;
                    }
                    None => {
                        let mut sock = sock;
                        if let Some((h2, first)) = sniff_http2(&mut sock, timeout).await {
                            serve_connection(sock, first, h2, app, timeout, peer).await;
                        }
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Tls(format!("reading {}: {e}", files.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServerError::Tls(format!("reading {}: {e}", files.key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("{} and {}: {e}", files.cert.display(), files.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The routes: /metrics and /healthz always; the viewer and gRPC-Web when enabled.
fn router(state: Arc<DecoderState>, opts: &HttpOptions) -> axum::Router {
    let metrics = ServiceMetrics::new(state.clone());
    let health = state.clone();
    let mut app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let page = metrics.render();
                async move { ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], page) }
            }),
        )
        .route("/healthz", get(move || std::future::ready(healthz(&health))));
    if opts.viewer {
        // Without a token any page on the network could reach this port: read-only.
        let service = match opts.token {
            Some(_) => DecoderService::new(state),
            None => DecoderService::read_only(state, READ_ONLY),
        };
        let decoder = DecoderServer::with_interceptor(service, BearerAuth::new(opts.token.clone()));
        let grpc_web =
            tonic::service::Routes::new(decoder).prepare().into_axum_router().layer(tonic_web::GrpcWebLayer::new());
        app = app
            .route("/", get(|| asset(INDEX_HTML, "text/html; charset=utf-8")))
            .route("/viewer.js", get(|| asset(VIEWER_JS, "text/javascript; charset=utf-8")))
            .route("/viewer.css", get(|| asset(VIEWER_CSS, "text/css; charset=utf-8")))
            .merge(grpc_web);
    }
    app.fallback(|req: Request<Body>| async move {
        let path: String = req.uri().path().chars().take(100).collect();
        (StatusCode::NOT_FOUND, format!("no page {path}: try / (the viewer, when on), /metrics or /healthz\n"))
    })
}

/// A built-in file: the viewer is small, so it is revalidated on every load.
async fn asset(body: &'static str, kind: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body)
}

/// 200 while healthy; 503 while a thread has died or the MEG source is gone.
fn healthz(state: &DecoderState) -> (StatusCode, String) {
    match state.failure.get() {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("failing: {why}\n")),
        None if !state.healthy() => (StatusCode::SERVICE_UNAVAILABLE, "MEG source gone\n".into()),
        None => (StatusCode::OK, "ok\n".into()),
    }
}
