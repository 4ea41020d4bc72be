//! Serving: the gRPC API (`proto/megdecoder/v1/decoder.proto`), the [`Hub`] that fans
//! decodings out to subscribers, bearer-token auth, TLS, health and reflection, and the
//! HTTP server (viewer, gRPC-Web, metrics).

mod auth;
mod http;
mod http_conn;
mod hub;
mod metrics;
mod serve;
mod service;

pub use auth::BearerAuth;
pub use http::{serve_http, HttpOptions};
pub use hub::{Hub, SubscriberStats, Subscription};
pub use metrics::{ServiceMetrics, OPENMETRICS_CONTENT_TYPE};
pub use serve::{serve, ServeOptions, ServerError, TlsFiles};
pub use service::{validate_subscribe, DecoderService, DecoderState, ModelInfo, StreamHandle};

/// Code generated from the proto by tonic-prost-build.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("megdecoder.v1");
    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("megdecoder_descriptor");
}
