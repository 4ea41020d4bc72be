//! Starting the gRPC server: bind (with a clear error if the port is taken), optional
//! TLS, health and reflection services, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use super::auth::BearerAuth;
use super::grpc::decoder_server::DecoderServer;
use super::service::{DecoderService, DecoderState};

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {why}")]
    Bind { addr: SocketAddr, why: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Transport(String),
}

/// Binds now (so a taken port fails at start-up) and returns the bound address and the
/// server future, which runs until `shutdown` resolves.
pub async fn serve(
    state: Arc<DecoderState>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = Result<(), ServerError>>), ServerError> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| ServerError::Bind {
        addr: opts.listen,
        why: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is already in use (another meg-decoder running?); choose another with --listen".into()
        } else {
            e.to_string()
        },
    })?;
    let addr = listener.local_addr().map_err(|e| ServerError::Transport(e.to_string()))?;
    let mut builder = Server::builder();
    if let Some(tls) = &opts.tls {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| ServerError::Tls(format!("reading {}: {e}", p.display())));
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<DecoderServer<DecoderService>>().await;
    // Health follows the service: NOT_SERVING while a thread has died or the MEG source is
    // gone, for both the decoder service and the server as a whole ("").
    let watched = state.clone();
    let health_task = tokio::spawn(async move {
        let mut serving = true;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = watched.healthy();
            if now != serving {
                serving = now;
                let status = if now { ServingStatus::Serving } else { ServingStatus::NotServing };
                health_reporter.set_service_status("", status).await;
                health_reporter.set_service_status("megdecoder.v1.Decoder", status).await;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Transport(e.to_string()))?;
    let decoder = DecoderServer::with_interceptor(DecoderService::new(state), BearerAuth::new(opts.token));
    // Decodings are small messages sent as they are made: Nagle's algorithm would hold
    // one back for the peer's delayed ACK (up to ~40 ms on Linux), so it is off on every
    // connection (tonic's own `tcp_nodelay` applies only to listeners it binds itself).
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        conn.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        })
    });
    let router = builder.add_service(health).add_service(reflection).add_service(decoder);
    let fut = async move {
        let res = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| ServerError::Transport(e.to_string()));
        health_task.abort();
        res
    };
    Ok((addr, fut))
}
