//! Generates the gRPC code and the reflection descriptor from proto/, with the protoc
//! that the protoc-bin-vendored crate ships (no system protoc needed).
use std::path::PathBuf;

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("megdecoder_descriptor.bin");
    println!("cargo:rerun-if-changed=proto/megdecoder/v1/decoder.proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&out)
        .compile_protos(&["proto/megdecoder/v1/decoder.proto"], &["proto"])
        .expect("compiling proto/megdecoder/v1/decoder.proto");
}
