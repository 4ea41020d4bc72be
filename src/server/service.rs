//! [`DecoderService`]: the `megdecoder.v1.Decoder` gRPC service over the hub, the live
//! counters and the recorder.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use super::hub::Hub;
use super::proto;
use super::wire::SubscriberDecoding;
use crate::ingest::{StreamDescription, StreamStats};
use crate::model::Gallery;
use crate::pipeline::{DecodeMode, PipelineStats, SKIP_REASONS};
use crate::record::{RecorderControl, RecordingLabels, RecordingState};

/// A stream the decoder reads, for status.
#[derive(Clone)]
pub struct StreamHandle {
    pub description: StreamDescription,
    pub stats: Arc<StreamStats>,
}

/// The loaded model, for status.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub name: String,
    /// "name@digest-prefix", as decodings name their model.
    pub id: String,
    pub contract: String,
    pub sha256: String,
    pub embedding_space: String,
    pub embedding_dim: usize,
    pub generator: bool,
    /// The model's sampling rate (Hz).
    pub sample_rate: f64,
}

/// Everything the service reads from.
pub struct DecoderState {
    pub hub: Arc<Hub>,
    pub streams: Vec<StreamHandle>,
    /// Ring buffers by stream name (for fill metrics).
    pub rings: Vec<(String, Arc<crate::ingest::RingBuffer>)>,
    /// The running model (replaced when a model is switched in).
    pub model: Arc<RwLock<ModelInfo>>,
    pub pipeline: Arc<PipelineStats>,
    pub gallery: Arc<RwLock<Option<Arc<Gallery>>>>,
    pub images_generated: Arc<AtomicU64>,
    pub recorder: Option<Arc<dyn RecorderControl>>,
    /// Why a long-lived thread of the service died (health NOT_SERVING, GetStatus error).
    pub failure: crate::worker::Failure,
    /// Loads other models while running (None: LoadModel is UNIMPLEMENTED here).
    pub switcher: Option<Arc<crate::swap::ModelSwitcher>>,
    /// The pipeline's signal snapshots (None: GetSignal is UNIMPLEMENTED here).
    pub signal: Option<Arc<crate::pipeline::SignalTap>>,
    /// Seconds of model-rate samples the pipeline keeps (the most GetSignal returns).
    pub buffer_s: f64,
    /// Whether LoadModel may be called (a token is configured, or explicitly allowed).
    pub allow_load_model: bool,
}

impl DecoderState {
    /// Whether the service does its job now: no thread has died and the MEG stream (the
    /// first stream) delivers data.
    pub fn healthy(&self) -> bool {
        self.failure.get().is_none() && self.streams.first().is_none_or(|h| h.stats.snapshot().connected)
    }
    /// The running model.
    pub fn model(&self) -> ModelInfo {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The running model's gallery.
    pub fn gallery(&self) -> Option<Arc<Gallery>> {
        self.gallery.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The running model as GetStatus reports it.
    pub fn model_status(&self) -> proto::ModelStatus {
        let sw = self.switcher.as_ref();
        model_status_pb(
            &self.model(),
            sw.map(|s| s.current_dir().display().to_string()).unwrap_or_default(),
            self.gallery().map_or(0, |g| g.len() as u32),
            sw.map_or(0, |s| s.switches.load(Ordering::Relaxed)),
        )
    }
}

/// A decoding older than this (window end to send) is not sent unless the subscriber asks
/// for another bound.
pub const DEFAULT_MAX_AGE_S: f64 = 2.0;

pub struct DecoderService {
    state: Arc<DecoderState>,
    /// Why calls that change state (recording, model switches) are refused here, if they
    /// are (the viewer's HTTP port without a bearer token).
    read_only: Option<&'static str>,
}

impl DecoderService {
    pub fn new(state: Arc<DecoderState>) -> Self {
        Self { state, read_only: None }
    }

    /// A service whose state-changing calls are refused with PERMISSION_DENIED and `why`.
    pub fn read_only(state: Arc<DecoderState>, why: &'static str) -> Self {
        Self { state, read_only: Some(why) }
    }

    /// Whether this service may change the decoder's state (record, switch models).
    fn may_change_state(&self) -> Result<(), Status> {
        self.read_only.map_or(Ok(()), |why| Err(Status::permission_denied(why)))
    }
}

/// Checks a subscription request: every field in range, or INVALID_ARGUMENT naming it.
pub fn validate_subscribe(r: &proto::SubscribeRequest) -> Result<(), Status> {
    if !r.max_rate_hz.is_finite() || r.max_rate_hz < 0.0 || (r.max_rate_hz > 0.0 && r.max_rate_hz < 1e-3) {
        return Err(Status::invalid_argument(format!(
            "max_rate_hz must be 0 (no limit) or between 0.001 and 1e6 decodings per second, got {:e}",
            r.max_rate_hz
        )));
    }
    if proto::ImageFormat::try_from(r.image_format).is_err() {
        return Err(Status::invalid_argument(format!(
            "unknown image_format {}: only IMAGE_FORMAT_PNG (1) is supported",
            r.image_format
        )));
    }
    if !r.max_age_s.is_finite() || !(0.0..=3600.0).contains(&r.max_age_s) {
        return Err(Status::invalid_argument(format!(
            "max_age_s must be 0 (the default, 2 s) to 3600 seconds, got {:e}",
            r.max_age_s
        )));
    }
    if r.image_size > 2048 {
        return Err(Status::invalid_argument(format!("image_size {} is too large (at most 2048)", r.image_size)));
    }
    Ok(())
}

#[tonic::async_trait]
impl super::grpc::decoder_server::Decoder for DecoderService {
    type SubscribeStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<SubscriberDecoding, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
        let req = request.into_inner();
        validate_subscribe(&req)?;
        let (want_cont, want_locked) = match (req.continuous, req.event_locked) {
            (false, false) => (true, true),
            other => other,
        };
        let min_gap =
            (req.max_rate_hz > 0.0 && req.max_rate_hz < 1e6).then(|| Duration::from_secs_f64(1.0 / req.max_rate_hz));
        let max_age = if req.max_age_s > 0.0 { req.max_age_s } else { DEFAULT_MAX_AGE_S };
        let sub = self.state.hub.subscribe(peer);
        let hub = self.state.hub.clone();
        // The stream reads the subscriber's broadcast receiver directly: no task or queue
        // in between. Dropping it (the client went away) drops the subscription at once.
        let state = (sub, req, 0u64, None::<Instant>, false);
        let stream = futures_util::stream::unfold(state, move |(mut sub, req, mut missed, mut last_cont, ended)| {
            let hub = hub.clone();
            async move {
                if ended {
                    return None;
                }
                loop {
                    let next = tokio::select! {
                        biased;
                        _ = sub.closing.wait_for(|closing| *closing) => None,
                        d = sub.decodings.recv() => Some(d),
                    };
                    let Some(next) = next else {
                        // Shutdown: a final status, so the client knows why the stream ended.
                        let status = Status::unavailable("meg-decoder is shutting down; reconnect when it is back");
                        return Some((Err(status), (sub, req, missed, last_cont, true)));
                    };
                    let mut next = next;
                    // Closed loop: when behind, only the newest counts.
                    if req.latest_only {
                        while next.is_ok() && !sub.decodings.is_empty() {
                            match sub.decodings.try_recv() {
                                Ok(newer) => {
                                    sub.stats.consumed.fetch_add(1, Ordering::Relaxed);
                                    missed += 1;
                                    sub.stats.missed.fetch_add(1, Ordering::Relaxed);
                                    hub.missed_total.fetch_add(1, Ordering::Relaxed);
                                    next = Ok(newer);
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    let d = match next {
                        Ok(d) => {
                            sub.stats.consumed.fetch_add(1, Ordering::Relaxed);
                            d
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            sub.stats.consumed.fetch_add(n, Ordering::Relaxed);
                            missed += n;
                            sub.stats.missed.fetch_add(n, Ordering::Relaxed);
                            hub.missed_total.fetch_add(n, Ordering::Relaxed);
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    let keep = match d.decoding.mode {
                        DecodeMode::Continuous => {
                            want_cont && min_gap.is_none_or(|g| last_cont.is_none_or(|t| t.elapsed() >= g))
                        }
                        DecodeMode::EventLocked => want_locked,
                    };
                    if !keep {
                        continue;
                    }
                    if d.decoding.mode == DecodeMode::Continuous {
                        last_cont = Some(Instant::now());
                    }
                    // Fresh or told: too old to be of use is dropped and counted.
                    let age = crate::lsl::local_clock().map_or(0.0, |now| now - d.decoding.window_end);
                    if age > max_age {
                        missed += 1;
                        sub.stats.missed.fetch_add(1, Ordering::Relaxed);
                        hub.missed_total.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut image = None;
                    if req.include_images && sub.images.has_changed().unwrap_or(false) {
                        let img = sub.images.borrow_and_update().clone();
                        if let Some(img) = img {
                            image = Some((img.png_at(req.image_size).await, img.sequence));
                        }
                    }
                    let msg = SubscriberDecoding {
                        top_k: if req.top_k == 0 { usize::MAX } else { req.top_k as usize },
                        include_embedding: req.include_embedding,
                        published: d,
                        missed,
                        age_ms: age * 1e3,
                        image,
                    };
                    sub.stats.sent.fetch_add(1, Ordering::Relaxed);
                    return Some((Ok(msg), (sub, req, 0, last_cont, false)));
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_status(&self, _: Request<proto::GetStatusRequest>) -> Result<Response<proto::Status>, Status> {
        let s = &self.state;
        let lat = s.pipeline.latency();
        let streams = s
            .streams
            .iter()
            .map(|h| {
                let st = h.stats.snapshot();
                proto::StreamStatus {
                    name: h.description.name.clone(),
                    r#type: h.description.kind.clone(),
                    source_id: h.description.source_id.clone(),
                    channels: h.description.channel_count as u32,
                    nominal_rate_hz: h.description.nominal_srate,
                    measured_rate_hz: st.measured_rate_hz,
                    lag_ms: st.lag_s * 1e3,
                    samples: st.samples,
                    gaps: st.gaps,
                    missing_samples: st.missing_samples,
                    reconnects: st.reconnects,
                    connected: st.connected,
                    clock_offset_ms: st.clock_offset_s * 1e3,
                    non_finite_samples: st.non_finite_samples,
                    ring_fill: s.rings.iter().find(|(n, _)| *n == h.description.name).map_or(0.0, |(_, r)| r.fill()),
                }
            })
            .collect();
        let subscribers = s
            .hub
            .subscribers()
            .iter()
            .map(|x| proto::SubscriberStatus {
                id: x.id,
                peer: x.peer.clone(),
                sent: x.sent.load(Ordering::Relaxed),
                missed: s.hub.missed_by(x),
                connected_s: x.since.elapsed().as_secs_f64(),
                behind: s.hub.behind(x),
            })
            .collect();
        let skipped_by_reason = SKIP_REASONS
            .iter()
            .map(|r| {
                (
                    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                    s.pipeline.skipped(*r),
                )
            })
            .collect();
        Ok(Response::new(proto::Status {
            error: s.failure.get().unwrap_or_default(),
            streams,
            model: Some(s.model_status()),
            pipeline: Some(proto::PipelineStatus {
                decoded: s.pipeline.decoded.load(Ordering::Relaxed),
                decoded_event_locked: s.pipeline.decoded_event_locked.load(Ordering::Relaxed),
                skipped: s.pipeline.skipped_total(),
                latency_p50_ms: lat.p50_ms,
                latency_p90_ms: lat.p90_ms,
                latency_p99_ms: lat.p99_ms,
                encoder_p50_ms: lat.encoder_p50_ms,
                encoder_p99_ms: lat.encoder_p99_ms,
                images_generated: s.images_generated.load(Ordering::Relaxed),
                skipped_by_reason,
            }),
            subscribers,
            recording: Some(recording_pb(&s.recorder.as_ref().map(|r| r.state()).unwrap_or_default())),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn start_recording(
        &self,
        request: Request<proto::StartRecordingRequest>,
    ) -> Result<Response<proto::RecordingState>, Status> {
        self.may_change_state()?;
        let rec = self.recorder()?;
        let r = request.into_inner();
        let labels =
            RecordingLabels { subject: r.subject, session: r.session, task: r.task, run: (r.run > 0).then_some(r.run) };
        let state = tokio::task::spawn_blocking(move || rec.start(labels))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                crate::record::RecordError::Labels(m) => Status::invalid_argument(m),
                crate::record::RecordError::AlreadyRecording(p) => {
                    Status::failed_precondition(format!("already recording to {p}; StopRecording first"))
                }
                // The full cause (with server paths) goes to the log, not to the client.
                other => {
                    tracing::error!("starting a recording: {other}");
                    Status::internal("the recording could not be started; the server log says why")
                }
            })?;
        Ok(Response::new(recording_pb(&state)))
    }

    async fn stop_recording(
        &self,
        _: Request<proto::StopRecordingRequest>,
    ) -> Result<Response<proto::RecordingState>, Status> {
        self.may_change_state()?;
        let rec = self.recorder()?;
        let state =
            tokio::task::spawn_blocking(move || rec.stop()).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(recording_pb(&state)))
    }

    async fn get_gallery_image(
        &self,
        request: Request<proto::GetGalleryImageRequest>,
    ) -> Result<Response<proto::GalleryImage>, Status> {
        let id = request.into_inner().image_id;
        let g = self.state.gallery().ok_or_else(|| Status::failed_precondition("the model has no gallery"))?;
        let shown: String = id.chars().take(64).collect::<String>().escape_default().to_string();
        let more = if id.chars().count() > 64 { "..." } else { "" };
        let i = g.index_of(&id).ok_or_else(|| Status::not_found(format!("no image '{shown}{more}' in the gallery")))?;
        let png = g.image_png(i).ok_or_else(|| {
            Status::failed_precondition(format!("'{shown}' is in the gallery but the model ships no image file for it"))
        })?;
        Ok(Response::new(proto::GalleryImage { image_id: id, png }))
    }

    async fn load_model(
        &self,
        request: Request<proto::LoadModelRequest>,
    ) -> Result<Response<proto::LoadModelResponse>, Status> {
        self.may_change_state()?;
        let Some(sw) = self.state.switcher.clone() else {
            return Err(Status::unimplemented("this server cannot switch models"));
        };
        if !self.state.allow_load_model {
            return Err(Status::permission_denied(
                "LoadModel needs an authenticated caller: start `serve` with --token-file (or set server.allow_load_model = true on a trusted network)",
            ));
        }
        let requested = request.into_inner().model;
        let dir = sw.resolve(&requested).map_err(switch_status)?;
        tracing::info!("LoadModel: loading {}", dir.display());
        let report = tokio::task::spawn_blocking(move || sw.switch_to(&dir))
            .await
            .map_err(|e| Status::internal(format!("model loader: {e}")))?
            .map_err(switch_status)?;
        // This switch's model, even if another switch followed at once.
        let now = self.state.model_status();
        let model = model_status_pb(&report.model, report.dir.display().to_string(), now.gallery_images, now.switches);
        Ok(Response::new(proto::LoadModelResponse {
            model: Some(model),
            previous: report.done.previous.to_string(),
            first_sequence: report.done.first_sequence,
            switched_at: report.done.at,
        }))
    }

    async fn get_signal(&self, request: Request<proto::GetSignalRequest>) -> Result<Response<proto::Signal>, Status> {
        let Some(tap) = self.state.signal.clone() else {
            return Err(Status::unimplemented("this server keeps no signal snapshots"));
        };
        let req = request.into_inner();
        let seconds = signal_seconds(req.seconds, self.state.buffer_s)?;
        let picks = SignalPicks::parse(&req.picks)?;
        let rate = self.state.model().sample_rate;
        let rows = (seconds * rate).ceil() as usize;
        let snap = tap.request(rows, std::time::Duration::from_secs(1)).await;
        let chosen = picks.select(&snap.channels)?;
        let width = snap.channels.len().max(1);
        let n = snap.times.len().min(rows);
        let first = snap.times.len() - n;
        let mut data = Vec::with_capacity(chosen.len() * n);
        for &c in &chosen {
            data.extend(snap.rows.chunks_exact(width).skip(first).map(|row| row[c]));
        }
        // The earliest time shown (after a source clock reset, not the first one).
        let t0 = snap.times[first..].iter().copied().fold(f64::INFINITY, f64::min);
        Ok(Response::new(proto::Signal {
            sample_rate_hz: snap.sample_rate,
            channels: chosen.iter().map(|&c| snap.channels[c].clone()).collect(),
            units: chosen.iter().map(|&c| snap.units.get(c).copied().unwrap_or("").to_string()).collect(),
            times: snap.times[first..].to_vec(),
            data,
            markers: snap
                .markers
                .iter()
                .filter(|(t, _)| *t >= t0)
                .map(|(t, text)| proto::SignalMarker { time: *t, text: text.clone() })
                .collect(),
            taken_at: snap.taken_at,
            model: snap.model.to_string(),
            segment_starts: snap
                .segment_starts
                .iter()
                .filter(|&&i| i as usize > first)
                .map(|&i| i - first as u32)
                .collect(),
        }))
    }
}

/// GetSignalRequest.seconds checked: 0 means 5 s; at most the pipeline's buffer.
fn signal_seconds(seconds: f64, buffer_s: f64) -> Result<f64, Status> {
    if seconds == 0.0 {
        return Ok(5.0_f64.min(buffer_s));
    }
    if !seconds.is_finite() || seconds < 0.0 || seconds > buffer_s {
        return Err(Status::invalid_argument(format!(
            "seconds must be 0 (5 s) or up to the pipeline's buffer of {buffer_s} s (pipeline.buffer_s), got {}",
            crate::config::shown(seconds)
        )));
    }
    Ok(seconds)
}

/// GetSignalRequest.picks: channel names, or prefixes ending in '*'.
struct SignalPicks(Vec<String>);

impl SignalPicks {
    const MAX: usize = 4096;

    fn parse(picks: &[String]) -> Result<Self, Status> {
        if picks.len() > Self::MAX {
            return Err(Status::invalid_argument(format!("at most {} picks, got {}", Self::MAX, picks.len())));
        }
        if let Some(bad) = picks.iter().find(|p| p.is_empty() || p.len() > 64 || *p == "*") {
            return Err(Status::invalid_argument(format!(
                "pick '{}' is not a channel name or a prefix like 'MLO*' (1-64 bytes; leave picks empty for every channel)",
                bad.chars().take(64).collect::<String>().escape_default()
            )));
        }
        Ok(Self(picks.to_vec()))
    }

    /// Indices of the channels picked (every channel when there are no picks), in the
    /// channels' order; an error names a pick that matches nothing.
    fn select(&self, channels: &[String]) -> Result<Vec<usize>, Status> {
        if self.0.is_empty() {
            return Ok((0..channels.len()).collect());
        }
        let matches = |p: &str, name: &str| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        };
        if let Some(none) = self.0.iter().find(|p| !channels.iter().any(|c| matches(p, c))) {
            return Err(Status::invalid_argument(format!(
                "pick '{}' matches none of the model's {} channels (e.g. {})",
                none.escape_default(),
                channels.len(),
                channels.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok((0..channels.len()).filter(|&i| self.0.iter().any(|p| matches(p, &channels[i]))).collect())
    }
}

/// A ModelStatus from what the service knows of a model.
fn model_status_pb(m: &ModelInfo, dir: String, gallery_images: u32, switches: u64) -> proto::ModelStatus {
    proto::ModelStatus {
        name: m.name.clone(),
        contract: m.contract.clone(),
        sha256: m.sha256.clone(),
        embedding_space: m.embedding_space.clone(),
        embedding_dim: m.embedding_dim as u32,
        gallery_images,
        generator: m.generator,
        id: m.id.clone(),
        dir,
        switches,
    }
}

fn switch_status(e: crate::swap::SwitchError) -> Status {
    use crate::swap::SwitchError;
    match e {
        SwitchError::NotAllowed(m) => Status::permission_denied(m),
        SwitchError::NotFound(m) => Status::not_found(m),
        SwitchError::Rejected(m) => Status::failed_precondition(m),
        SwitchError::Unavailable(m) => Status::unavailable(m),
    }
}

impl DecoderService {
    fn recorder(&self) -> Result<Arc<dyn RecorderControl>, Status> {
        self.state.recorder.clone().ok_or_else(|| {
            Status::failed_precondition("recording is not configured: start `serve` with --record-dir DIR")
        })
    }
}

fn recording_pb(s: &RecordingState) -> proto::RecordingState {
    proto::RecordingState {
        recording: s.recording,
        path: s.path.clone(),
        bytes_written: s.bytes_written,
        error: s.error.clone(),
        started_at: s.started_at,
    }
}
