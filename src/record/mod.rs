//! Session logging and replay: [`Recorder`] writes raw MEG, markers and decodings to XDF
//! (what LabRecorder, pyxdf and MNE read), crash-safe; [`read_xdf`] reads a file back,
//! damaged or not, for `replay`.

mod reader;
mod recorder;
pub mod replay;
mod session;
pub mod xdf;

pub use reader::{parse_xdf, read_xdf, xml_field, XdfError, XdfFile, XdfStream};
pub use recorder::{decoding_json, Recorder, RecorderSources, DECODINGS_ID, MARKERS_ID, MEG_ID};
pub use session::{check_dir, create_file, RecordError, RecorderControl, RecordingLabels, RecordingState};
