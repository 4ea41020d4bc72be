//! [`Recorder`]: writes a session (raw MEG from the ring buffer, markers, decodings) to
//! XDF on its own thread, started and stopped from the CLI or gRPC.
//!
//! Every 50 ms it appends what arrived as one chunk per stream, each chunk one `write`
//! to the OS (so a crash of the process loses nothing already written, and a power loss
//! at most the 10 s since the last fsync). LabRecorder's rhythm: ClockOffset chunks every
//! 5 s per stream, a Boundary chunk every 10 s, stream footers at a clean stop. A write
//! error (disk full...) stops the recording with the error in its state; decoding goes on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::session::{check_dir, create_file, RecordError, RecorderControl, RecordingLabels, RecordingState};
use super::xdf::{info_xml, xml_escape, XdfWriter};
use crate::ingest::{Marker, ReadError, RingBuffer, StreamDescription, StreamStats};
use crate::lsl;
use crate::pipeline::Decoding;

/// Stream ids in our files.
pub const MEG_ID: u32 = 1;
pub const MARKERS_ID: u32 = 2;
pub const DECODINGS_ID: u32 = 3;

/// What the recorder records from.
pub struct RecorderSources {
    pub meg: StreamDescription,
    pub ring: Arc<RingBuffer>,
    pub meg_stats: Arc<StreamStats>,
    pub markers: Option<(StreamDescription, Receiver<Marker>)>,
    pub decodings: Receiver<Arc<Decoding>>,
    /// Events written into the decodings stream as JSON objects with an "event" key
    /// (e.g. a model switch), with their time (local LSL clock).
    pub notes: Option<Receiver<(f64, String)>>,
    /// Session metadata for the file header (model, configuration...), read when a
    /// recording starts (a model switch updates its "model").
    pub metadata: Arc<std::sync::RwLock<serde_json::Value>>,
}

enum Command {
    Start(RecordingLabels, Option<u64>, Sender<Result<RecordingState, RecordError>>),
    Stop(Sender<RecordingState>),
}

pub struct Recorder {
    dir: PathBuf,
    commands: Sender<Command>,
    state: Arc<Mutex<RecordingState>>,
    failure: crate::worker::Failure,
}

/// One decoding as stored in the decodings stream (a JSON string per sample).
pub fn decoding_json(d: &Decoding) -> String {
    serde_json::to_string(d).unwrap_or_default()
}

struct StreamTrack {
    first: f64,
    last: f64,
    count: u64,
    offsets: Vec<(f64, f64)>,
}

impl StreamTrack {
    fn new() -> Self {
        Self { first: 0.0, last: 0.0, count: 0, offsets: Vec::new() }
    }
    fn add(&mut self, first: f64, last: f64, n: usize) {
        if self.count == 0 {
            self.first = first;
        }
        self.last = last;
        self.count += n as u64;
    }
}

struct Active {
    writer: XdfWriter,
    path: String,
    cursor: u64,
    meg: StreamTrack,
    markers: StreamTrack,
    decodings: StreamTrack,
    marker_offset: f64,
    last_offsets: Instant,
    last_boundary: Instant,
}

impl Recorder {
    /// Checks the directory (at start-up, not an hour later) and starts the thread.
    pub fn start(dir: PathBuf, sources: RecorderSources) -> Result<Arc<Self>, RecordError> {
        check_dir(&dir)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let state = Arc::new(Mutex::new(RecordingState::default()));
        let (dir2, state2) = (dir.clone(), state.clone());
        let failure = crate::worker::Failure::default();
        let fail = failure.clone();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                let fault = crate::worker::Fault::for_thread("recorder");
                let body = std::panic::AssertUnwindSafe(|| run(dir2, sources, rx, state2, fault));
                if let Err(p) = std::panic::catch_unwind(body) {
                    let why = format!("thread 'recorder' panicked: {}", crate::worker::panic_message(p.as_ref()));
                    tracing::error!("{why}");
                    fail.set(why);
                }
            })
            .map_err(|e| RecordError::Io(e.to_string()))?;
        Ok(Arc::new(Self { dir, commands: tx, state, failure }))
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Why the recorder thread died, if it did.
    pub fn failure(&self) -> crate::worker::Failure {
        self.failure.clone()
    }

    /// Starts recording from ring sample `from` (None = now).
    pub fn start_from(&self, labels: RecordingLabels, from: Option<u64>) -> Result<RecordingState, RecordError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Start(labels, from, tx))
            .map_err(|_| RecordError::Io("recorder thread is gone".into()))?;
        rx.recv().map_err(|_| RecordError::Io("recorder thread is gone".into()))?
    }
}

impl RecorderControl for Recorder {
    fn start(&self, labels: RecordingLabels) -> Result<RecordingState, RecordError> {
        self.start_from(labels, None)
    }
    fn stop(&self) -> RecordingState {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Stop(tx)).is_err() {
            return self.state();
        }
        rx.recv().unwrap_or_else(|_| self.state())
    }
    fn state(&self) -> RecordingState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn set_state(state: &Mutex<RecordingState>, f: impl FnOnce(&mut RecordingState)) {
    f(&mut state.lock().unwrap_or_else(|e| e.into_inner()));
}

fn run(
    dir: PathBuf,
    src: RecorderSources,
    commands: Receiver<Command>,
    state: Arc<Mutex<RecordingState>>,
    fault: crate::worker::Fault,
) {
    let c = src.ring.channels();
    let chunk = 1024usize;
    let mut data = vec![0.0f64; chunk * c];
    let mut ts = vec![0.0f64; chunk];
    let mut strings: Vec<(f64, String)> = Vec::new();
    let mut active: Option<Active> = None;
    loop {
        fault.check();
        match commands.recv_timeout(Duration::from_millis(50)) {
            Ok(Command::Start(labels, from, reply)) => {
                let res = if let Some(a) = &active {
                    Err(RecordError::AlreadyRecording(a.path.clone()))
                } else {
                    open(&dir, &src, labels, from).map(|a| {
                        let st = RecordingState {
                            recording: true,
                            path: a.path.clone(),
                            bytes_written: a.writer.bytes_written,
                            error: String::new(),
                            started_at: lsl::local_clock().unwrap_or(0.0),
                        };
                        tracing::info!("recording to {}", a.path);
                        active = Some(a);
                        set_state(&state, |s| *s = st.clone());
                        st
                    })
                };
                let _ = reply.send(res);
            }
            Ok(Command::Stop(reply)) => {
                if let Some(mut a) = active.take() {
                    let res = tick(&mut a, &src, &mut data, &mut ts, &mut strings).and_then(|_| close(&mut a));
                    set_state(&state, |s| {
                        s.recording = false;
                        s.bytes_written = a.writer.bytes_written;
                        if let Err(e) = res {
                            s.error = format!("closing {}: {e}", a.path);
                        }
                    });
                    tracing::info!("recording stopped: {} ({} bytes)", a.path, a.writer.bytes_written);
                }
                let _ = reply.send(state.lock().unwrap_or_else(|e| e.into_inner()).clone());
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if let Some(mut a) = active.take() {
                    let _ = tick(&mut a, &src, &mut data, &mut ts, &mut strings).and_then(|_| close(&mut a));
                }
                return;
            }
        }
        match active.as_mut() {
            Some(a) => {
                if let Err(e) = tick(a, &src, &mut data, &mut ts, &mut strings) {
                    let msg = format!("recording to {} stopped: {e}", a.path);
                    tracing::error!("{msg}; decoding goes on");
                    set_state(&state, |s| {
                        s.recording = false;
                        s.error = msg;
                    });
                    active = None;
                } else {
                    set_state(&state, |s| s.bytes_written = a.writer.bytes_written);
                }
            }
            None => {
                // Not recording: keep the queues empty.
                if let Some((_, m)) = &src.markers {
                    m.try_iter().for_each(drop);
                }
                src.decodings.try_iter().for_each(drop);
                if let Some(n) = &src.notes {
                    n.try_iter().for_each(drop);
                }
            }
        }
    }
}

fn open(
    dir: &std::path::Path,
    src: &RecorderSources,
    labels: RecordingLabels,
    from: Option<u64>,
) -> Result<Active, RecordError> {
    let labels = labels.normalised()?;
    let (path, file) = create_file(dir, &labels)?;
    let io = |e: std::io::Error| RecordError::Io(format!("writing {}: {e}", path.display()));
    let header = format!(
        "<datetime>{}</datetime><recorder>meg-decoder {}</recorder><subject>{}</subject><session>{}</session><task>{}</task><meg_decoder>{}</meg_decoder>",
        chrono_now(),
        env!("CARGO_PKG_VERSION"),
        labels.subject,
        labels.session,
        labels.task,
        xml_escape(&src.metadata.read().unwrap_or_else(|e| e.into_inner()).to_string())
    );
    let mut writer = XdfWriter::create(file, &header).map_err(io)?;
    // The source's own header: the samples are written in its own format (the ring holds
    // them exactly; the inlet accepts numeric formats only).
    writer.stream_header(MEG_ID, &src.meg.xml).map_err(io)?;
    if let Some((d, _)) = &src.markers {
        writer.stream_header(MARKERS_ID, &d.xml).map_err(io)?;
    }
    let desc = "<decodings><format>one JSON object per sample: sequence, mode, marker, window_start, window_end, decoded_at, latency_s, encoder_s, embedding, top_k, repaired, model; or an event: {event: model_switch, from, to, dir, first_sequence, at}</format></decodings>";
    writer
        .stream_header(
            DECODINGS_ID,
            &info_xml("meg-decoder decodings", "Decodings", 1, 0.0, "string", "meg-decoder", desc),
        )
        .map_err(io)?;
    writer.boundary().map_err(io)?;
    let mut a = Active {
        writer,
        path: path.display().to_string(),
        cursor: from.unwrap_or_else(|| src.ring.head()),
        meg: StreamTrack::new(),
        markers: StreamTrack::new(),
        decodings: StreamTrack::new(),
        marker_offset: 0.0,
        last_offsets: Instant::now(),
        last_boundary: Instant::now(),
    };
    write_offsets(&mut a, src).map_err(io)?;
    Ok(a)
}

fn write_offsets(a: &mut Active, src: &RecorderSources) -> std::io::Result<()> {
    let now = lsl::local_clock().unwrap_or(0.0);
    let meg = src.meg_stats.clock_offset();
    a.writer.clock_offset(MEG_ID, now, meg)?;
    a.meg.offsets.push((now, meg));
    if src.markers.is_some() {
        a.writer.clock_offset(MARKERS_ID, now, a.marker_offset)?;
        a.markers.offsets.push((now, a.marker_offset));
    }
    a.writer.clock_offset(DECODINGS_ID, now, 0.0)?;
    a.decodings.offsets.push((now, 0.0));
    Ok(())
}

/// Appends everything that arrived since the last tick.
fn tick(
    a: &mut Active,
    src: &RecorderSources,
    data: &mut [f64],
    ts: &mut [f64],
    strings: &mut Vec<(f64, String)>,
) -> std::io::Result<()> {
    let c = src.ring.channels();
    let chunk = ts.len();
    // MEG from the ring: timestamps back on the source clock (the ring holds corrected
    // ones); the offset goes in ClockOffset chunks, as LabRecorder stores it.
    let offset = src.meg_stats.clock_offset();
    loop {
        let head = src.ring.head();
        if head <= a.cursor {
            break;
        }
        let n = ((head - a.cursor) as usize).min(chunk);
        match src.ring.read(a.cursor, &mut data[..n * c], &mut ts[..n]) {
            Ok(_) => {
                ts[..n].iter_mut().for_each(|t| *t -= offset);
                a.writer.samples_as(MEG_ID, &ts[..n], &data[..n * c], c, src.meg.format)?;
                a.meg.add(ts[0], ts[n - 1], n);
                a.cursor += n as u64;
            }
            Err(ReadError::Overwritten { oldest, .. }) => {
                tracing::error!("recorder fell behind the ring buffer: {} samples not recorded", oldest - a.cursor);
                a.cursor = oldest + chunk as u64;
            }
            Err(ReadError::NotYet { .. }) => break,
        }
    }
    if let Some((_, rx)) = &src.markers {
        strings.clear();
        for m in rx.try_iter() {
            a.marker_offset = m.timestamp - m.source_timestamp;
            strings.push((m.source_timestamp, m.text));
        }
        if !strings.is_empty() {
            a.writer.samples_str(MARKERS_ID, strings.iter().map(|(t, s)| (*t, s.as_str())))?;
            a.markers.add(strings[0].0, strings[strings.len() - 1].0, strings.len());
        }
    }
    strings.clear();
    strings.extend(src.decodings.try_iter().map(|d| (d.decoded_at, decoding_json(&d))));
    if let Some(notes) = &src.notes {
        let before = strings.len();
        strings.extend(notes.try_iter());
        if strings.len() > before {
            strings.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    if !strings.is_empty() {
        a.writer.samples_str(DECODINGS_ID, strings.iter().map(|(t, s)| (*t, s.as_str())))?;
        a.decodings.add(strings[0].0, strings[strings.len() - 1].0, strings.len());
    }
    if a.last_offsets.elapsed() >= Duration::from_secs(5) {
        write_offsets(a, src)?;
        a.last_offsets = Instant::now();
    }
    if a.last_boundary.elapsed() >= Duration::from_secs(10) {
        a.writer.boundary()?;
        a.writer.sync()?;
        a.last_boundary = Instant::now();
    }
    Ok(())
}

fn close(a: &mut Active) -> std::io::Result<()> {
    a.writer.boundary()?;
    for (id, t) in [(MEG_ID, &a.meg), (MARKERS_ID, &a.markers), (DECODINGS_ID, &a.decodings)] {
        if id == MARKERS_ID && t.count == 0 && t.offsets.is_empty() {
            continue;
        }
        a.writer.stream_footer(id, t.first, t.last, t.count, &t.offsets)?;
    }
    a.writer.flush()?;
    a.writer.sync()
}

/// UTC time as ISO 8601 (no chrono dependency: seconds since the epoch, formatted).
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = secs / 86400;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}
