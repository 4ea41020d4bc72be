//! Generates the gRPC code and the reflection descriptor from proto/, with the protoc
//! that the protoc-bin-vendored crate ships (no system protoc needed).
//!
//! The messages and the client come from prost as usual. The server is generated from
//! the same service description by hand (tonic-build's `manual` builder) so that
//! `Subscribe` can answer with decodings encoded once for every subscriber
//! (`server::wire`): its output type and codec are ours; every other method is the
//! plain prost codec on the prost types.
use std::path::PathBuf;

use tonic_build::manual::{Builder, Method, Service};

/// (Rust name, route name, request, response, server-streaming) of each RPC of
/// `megdecoder.v1.Decoder`, in the proto's order.
const METHODS: &[(&str, &str, &str, &str, bool)] = &[
    ("subscribe", "Subscribe", "SubscribeRequest", "Decoding", true),
    ("get_status", "GetStatus", "GetStatusRequest", "Status", false),
    ("start_recording", "StartRecording", "StartRecordingRequest", "RecordingState", false),
    ("stop_recording", "StopRecording", "StopRecordingRequest", "RecordingState", false),
    ("get_gallery_image", "GetGalleryImage", "GetGalleryImageRequest", "GalleryImage", false),
    ("load_model", "LoadModel", "LoadModelRequest", "LoadModelResponse", false),
    ("get_signal", "GetSignal", "GetSignalRequest", "Signal", false),
];

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("megdecoder_descriptor.bin");
    println!("cargo:rerun-if-changed=proto/megdecoder/v1/decoder.proto");
    println!("cargo:rerun-if-changed=build.rs");
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(&out)
        .compile_protos(&["proto/megdecoder/v1/decoder.proto"], &["proto"])
        .expect("compiling proto/megdecoder/v1/decoder.proto");

    let proto = std::fs::read_to_string("proto/megdecoder/v1/decoder.proto").expect("reading the proto");
    let mut service = Service::builder().name("Decoder").package("megdecoder.v1");
    for &(name, route, input, output, streaming) in METHODS {
        // The list above must follow the proto: a method added there fails the build here.
        let rpc = format!("rpc {route}({input}) returns ({}{output})", if streaming { "stream " } else { "" });
        assert!(proto.contains(&rpc), "build.rs METHODS is out of date with the proto: no `{rpc}`");
        let mut m = Method::builder().name(name).route_name(route).input_type(format!("crate::server::proto::{input}"));
        m = if route == "Subscribe" {
            m.output_type("crate::server::wire::SubscriberDecoding").codec_path("crate::server::wire::SubscribeCodec")
        } else {
            m.output_type(format!("crate::server::proto::{output}")).codec_path("tonic_prost::ProstCodec")
        };
        if streaming {
            m = m.server_streaming();
        }
        service = service.method(m.build());
    }
    let rpcs = proto.matches("\n  rpc ").count();
    assert_eq!(rpcs, METHODS.len(), "build.rs METHODS lists {} RPCs, the proto {rpcs}", METHODS.len());
    Builder::new().build_client(false).compile(&[service.build()]);
}
