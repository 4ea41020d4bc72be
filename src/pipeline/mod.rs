//! The decoding pipeline: ring buffer -> preprocess -> windows -> encoder -> retrieval.
//!
//! ```text
//! RingBuffer ─▶ Preprocessor ─▶ ModelRateBuffer ─▶ WindowScheduler ─▶ WindowAssembler ─▶ Encoder ─▶ Gallery.top_k ─▶ Decoding
//! (stream rate)  pick, SI units,   (model rate,       continuous hop,     [C, T], scale,      (ONNX       cosine            ─▶ sinks
//!                NaN hold, SOS,     segments)          event-locked        baseline, clamp     Runtime)
//!                resample
//! ```
//!
//! A model may come with progressive [`Stage`]s (shorter windows from the onset, each its
//! own encoder), decoded event-locked as each window completes, before the model's own,
//! and with a [`ContinuousModel`] (trained for continuous use: the image on screen), which
//! then decodes every continuous window on its own window.
//!
//! [`DecoderCore`] is the whole chain as a deterministic function of its input;
//! [`LivePipeline`] runs it on its own thread against the ring buffer and the marker
//! channel, and [`ImageWorker`] draws images apart from it, always on the newest
//! embedding, so generation never delays the embedding stream.

mod continuous;
mod core;
mod decoding;
mod events;
mod live;
mod preprocess;
mod signal;
mod stages;
mod window;

pub use self::core::{model_id, DecoderCore, NonFinitePolicy, PipelineConfig, PipelineError};
pub use continuous::ContinuousModel;
pub use decoding::{
    DecodeMode, Decoding, Histogram, LatencySummary, MarkerRef, PipelineStats, SkipReason, ENCODER_BUCKETS,
    LATENCY_BUCKETS, SKIP_REASONS,
};
pub use events::{EventConfig, EventError, Onset, OnsetDetector, OnsetPairing, OnsetSource, Paired};
pub use live::{
    prime_from_ring, DecodingSink, GeneratedImage, ImageSink, ImageWorker, LivePipeline, ModelSwitch, PipelineInputs,
    RingChunks, SwitchDone,
};
pub use preprocess::{
    design_filters, is_brain_type, normalize_channel_name, resampling_summary, si_unit_of_type, unit_factor,
    unit_to_si, ChannelMap, ChannelMatching, MappingError, ModelSample, Preprocessor,
};
pub use signal::{SignalSnapshot, SignalTap, MAX_SIGNAL_ROWS};
pub use stages::Stage;
pub use window::{ModelRateBuffer, Skipped, WindowAssembler, WindowRequest, WindowScheduler};
