//! Serving: the gRPC API (`proto/megdecoder/v1/decoder.proto`), the [`Hub`] that fans
//! decodings out to subscribers, bearer-token auth, TLS, health and reflection.

mod auth;
mod hub;
mod metrics;
mod serve;
mod service;

pub use auth::BearerAuth;
pub use hub::{Hub, SubscriberStats, Subscription};
pub use metrics::{render as render_metrics, serve_metrics};
pub use serve::{serve, ServeOptions, ServerError, TlsFiles};
pub use service::{validate_subscribe, DecoderService, DecoderState, ModelInfo, StreamHandle};

/// Code generated from the proto by tonic-prost-build.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("megdecoder.v1");
    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("megdecoder_descriptor");
}
