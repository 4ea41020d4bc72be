//! Models: the encoder contract (ONNX metadata), the encoder session, the gallery and the
//! generator.

pub mod gallery;
pub mod npy;

pub use gallery::{Gallery, Hit};
