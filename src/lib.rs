//! meg-decoder: live MEG in over LSL, image embeddings, retrievals and images out over gRPC.
#![deny(unsafe_code)]

pub mod app;
pub mod config;
pub mod dsp;
pub mod ingest;
#[allow(unsafe_code)]
pub mod lsl;
pub mod model;
pub mod pipeline;
pub mod record;
pub mod server;
pub mod simulate;
pub mod swap;
pub mod worker;
