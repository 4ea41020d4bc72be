//! Session recording to XDF: pyxdf (the reference reader) loads what we write, a
//! recording killed with SIGKILL still loads, damaged files replay up to the damage, a
//! write error stops the recording but not decoding, and `replay --offline` reproduces
//! the live decodings.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meg_decoder::ingest::{AcquisitionConfig, MarkerAcquisition, MegAcquisition, StreamQuery};
use meg_decoder::lsl;
use meg_decoder::pipeline::{DecodeMode, Decoding};
use meg_decoder::record::{read_xdf, Recorder, RecorderControl, RecorderSources, RecordingLabels};
use meg_decoder::simulate::{self, LayoutKind, SimulatorConfig};

fn pyxdf(path: &Path) -> serde_json::Value {
    let out = Command::new(common::python())
        .arg(common::repo().join("tests/common/pyxdf_summary.py"))
        .arg(path)
        .output()
        .expect("python with pyxdf (make venv)");
    assert!(out.status.success(), "pyxdf failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stream<'a>(v: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream in {v}"))
}

#[test]
fn pyxdf_reads_every_stream_sample_and_timestamp() {
    common::init_lsl();
    let name = common::unique("rec");
    let cfg = SimulatorConfig {
        name: name.clone(),
        source_id: name.clone(),
        layout: LayoutKind::Ctf272,
        srate: 1200.0,
        counter_channel: true,
        marker_stream: Some(format!("{name}-markers")),
        isi_s: 0.5,
        duration_s: Some(4.0),
        wait_for_consumer_s: 10.0,
        ..Default::default()
    };
    let sim = std::thread::spawn(move || simulate::run(&cfg, &AtomicBool::new(false)).unwrap());
    let acq = MegAcquisition::start(AcquisitionConfig::new(StreamQuery::by_name(&name))).unwrap();
    let (mtx, mrx) = crossbeam_channel::unbounded();
    let markers = MarkerAcquisition::start(&StreamQuery::by_name(&format!("{name}-markers")), 5.0, vec![mtx]).unwrap();
    let (dtx, drx) = crossbeam_channel::unbounded();
    let dir = tempfile::tempdir().unwrap();
    let sources = RecorderSources {
        meg: acq.description.clone(),
        ring: acq.ring.clone(),
        meg_stats: acq.stats.clone(),
        markers: Some((markers.description.clone(), mrx)),
        decodings: drx,
        notes: None,
        metadata: Arc::new(std::sync::RwLock::new(serde_json::json!({"test": true}))),
    };
    let rec = Recorder::start(dir.path().to_path_buf(), sources).unwrap();
    let st = rec.start_from(RecordingLabels { subject: "S01".into(), ..Default::default() }, Some(0)).unwrap();
    assert!(st.recording && st.path.ends_with("sub-S01_ses-01_task-decoding_run-01_meg.xdf"), "{st:?}");
    for i in 0..5u64 {
        let d = Decoding {
            sequence: i,
            mode: DecodeMode::Continuous,
            marker: None,
            onset: i as f64 + 0.5,
            on_screen_at: None,
            window_start: i as f64,
            window_end: i as f64 + 1.5,
            decoded_at: lsl::local_clock().unwrap(),
            latency_s: 0.01,
            encoder_s: 0.001,
            embedding: vec![0.25; 8],
            top_k: Vec::new(),
            repaired: false,
            model: std::sync::Arc::from("test@000000000000"),
            stage: 0,
            stages: 0,
        };
        dtx.send(Arc::new(d)).unwrap();
    }
    let report = sim.join().unwrap();
    // Let the marker inlet deliver the last marker before the recording stops.
    std::thread::sleep(Duration::from_millis(800));
    let st = rec.stop();
    assert!(!st.recording && st.bytes_written > 0 && st.error.is_empty(), "{st:?}");
    let v = pyxdf(Path::new(&st.path));
    assert_eq!(v["subject"], "S01");
    let meg = stream(&v, "MEG");
    assert_eq!(meg["channel_count"], 272);
    assert_eq!(meg["n"].as_u64().unwrap(), report.samples, "every pushed sample is in the file");
    assert_eq!(meg["footer_count"].as_u64().unwrap(), report.samples);
    assert_eq!(meg["labels"][0], "COUNTER");
    assert_eq!(meg["labels"][1], "MLC12");
    let col0: Vec<f64> = serde_json::from_value(meg["col0"].clone()).unwrap();
    assert!(col0.iter().enumerate().all(|(i, &c)| c == i as f64), "counter channel not contiguous");
    // Timestamps equal the ring's (corrected) timestamps.
    let ts: Vec<f64> = serde_json::from_value(meg["ts"].clone()).unwrap();
    let mut ring_ts = vec![0.0; ts.len()];
    let mut data = vec![0.0; ts.len() * 272];
    acq.ring.read(0, &mut data, &mut ring_ts).unwrap();
    let worst = ts.iter().zip(&ring_ts).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "timestamps differ by {worst} s");
    let mk = stream(&v, "Markers");
    assert_eq!(mk["n"].as_u64().unwrap(), report.markers);
    assert!(mk["strings"][0].as_str().unwrap().starts_with("stim_"));
    let dec = stream(&v, "Decodings");
    assert_eq!(dec["n"], 5);
    let first: serde_json::Value = serde_json::from_str(dec["strings"][0].as_str().unwrap()).unwrap();
    assert_eq!(first["embedding"][3], 0.25);
    // Our own reader agrees.
    let f = read_xdf(Path::new(&st.path)).unwrap();
    assert!(f.damage.is_empty());
    assert_eq!(f.by_type("MEG").unwrap().timestamps.len() as u64, report.samples);
}

#[test]
fn sigkill_mid_session_still_loads_up_to_the_last_second() {
    common::init_lsl();
    let name = common::unique("kill");
    let _sim = common::Reaper(common::spawn(&["simulate", "--name", &name, "--source-id", &name]));
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = dir.path().to_str().unwrap();
    let mut serve = common::Reaper(common::spawn(&[
        "serve",
        "--stream-name",
        &name,
        "--no-markers",
        "--listen",
        &listen,
        "--record-dir",
        d,
        "--record",
        "--subject",
        "K1",
    ]));
    common::wait_port(&listen);
    std::thread::sleep(Duration::from_secs(3));
    serve.0.kill().unwrap(); // SIGKILL
    let killed_at = lsl::local_clock().unwrap();
    let _ = serve.0.wait();
    let files = common::xdf_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let v = pyxdf(&files[0]);
    let meg = stream(&v, "MEG");
    let last = meg["last_ts"].as_f64().unwrap();
    assert!(killed_at - last < 1.0, "lost {:.3} s before the kill", killed_at - last);
    assert!(meg["n"].as_u64().unwrap() > 1500);
    // The simulator stamps chunks when it pushes them (as liblsl stamps a device), so
    // steps jitter; no sample is missing if the count matches the span and no step is a gap.
    let ts: Vec<f64> = serde_json::from_value(meg["ts"].clone()).unwrap();
    let span_samples = (ts[ts.len() - 1] - ts[0]) * 1000.0 + 1.0;
    assert!((ts.len() as f64 / span_samples - 1.0).abs() < 0.01, "{} samples over {span_samples:.0}", ts.len());
    assert!(ts.windows(2).all(|w| w[1] - w[0] < 0.05), "samples missing inside the file");
}

#[test]
fn damaged_file_replays_the_readable_part_and_names_the_offset() {
    common::init_lsl();
    let name = common::unique("dmg");
    let dir = tempfile::tempdir().unwrap();
    // A recording made by the real service.
    let (_sim, mut serve, _listen) = simulate_and_record(&name, dir.path(), "D1", "1.0", &[]);
    // Long enough that the part before the damage holds windows past the settle period.
    std::thread::sleep(Duration::from_secs(7));
    common::sigterm_and_wait(&mut serve.0);
    let path = common::xdf_files(dir.path()).pop().unwrap();
    let whole = read_xdf(&path).unwrap();
    assert!(whole.damage.is_empty());
    let n_whole = whole.by_type("MEG").unwrap().timestamps.len();
    // Corrupt bytes in the middle and cut the end inside a chunk.
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes.splice(mid..mid, [0xFFu8; 7]); // 7 stray bytes: every chunk after them is misread
    bytes.truncate(bytes.len() - 100); // and the end cut inside a chunk
    let bad = dir.path().join("damaged.xdf");
    std::fs::write(&bad, &bytes).unwrap();
    let f = read_xdf(&bad).unwrap();
    assert!(!f.damage.is_empty());
    let n_bad = f.by_type("MEG").unwrap().timestamps.len();
    assert!(n_bad > n_whole / 3 && n_bad < n_whole, "{n_bad} of {n_whole}");
    let out = common::bin()
        .args(["replay", bad.to_str().unwrap(), "--offline", "--output", dir.path().join("d.jsonl").to_str().unwrap()])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("damaged at byte"), "{err}");
    let lines = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap().lines().count();
    assert!(lines > 10, "{lines} decodings from the readable part");
    // Not an XDF file at all.
    std::fs::write(dir.path().join("x.xdf"), b"hello").unwrap();
    assert!(read_xdf(&dir.path().join("x.xdf")).unwrap_err().to_string().contains("not an XDF file"));
}

/// Starts `simulate` (demo world, markers every `isi` s) and `serve --record` on it;
/// returns both processes and the gRPC address once it listens.
fn simulate_and_record(
    name: &str,
    dir: &Path,
    subject: &str,
    isi: &str,
    extra: &[&str],
) -> (common::Reaper, common::Reaper, String) {
    let markers = format!("{name}-m");
    let sim = common::Reaper(common::spawn(&[
        "simulate",
        "--name",
        name,
        "--source-id",
        name,
        "--model",
        "models/demo",
        "--markers",
        &markers,
        "--isi",
        isi,
    ]));
    let listen = format!("127.0.0.1:{}", common::free_port());
    let serve = common::Reaper(
        common::bin()
            .current_dir(common::repo())
            .args([
                "serve",
                "--stream-name",
                name,
                "--markers-name",
                &markers,
                "--listen",
                &listen,
                "--record-dir",
                dir.to_str().unwrap(),
            ])
            .args(["--record", "--subject", subject])
            // Short sessions: decode 1 s after start rather than after the band-pass's own
            // 3.1 s settle period (the setting is recorded, so replay uses it too).
            .args(["--set", "preprocessing.settle_s=1.0"])
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_port(&listen);
    (sim, serve, listen)
}

#[test]
fn live_decodings_equal_offline_replay_of_the_recording() {
    common::init_lsl();
    let name = common::unique("eq");
    let dir = tempfile::tempdir().unwrap();
    let (_sim, mut serve, listen) = simulate_and_record(&name, dir.path(), "E1", "0.7", &["--hop", "0.1"]);
    let client = common::bin()
        .args([
            "client",
            "--addr",
            &format!("http://{listen}"),
            "--json",
            "--embedding",
            "--max-rate",
            "0",
            "--duration",
            "7",
        ])
        .output()
        .unwrap();
    common::sigterm_and_wait(&mut serve.0);
    let live: Vec<serde_json::Value> =
        String::from_utf8_lossy(&client.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(live.len() > 30, "only {} live decodings", live.len());
    assert!(live.iter().any(|d| d["mode"] == "event_locked"), "no event-locked decodings live");
    let path = common::xdf_files(dir.path()).pop().unwrap();
    let out_path = dir.path().join("offline.jsonl");
    let out = common::bin()
        .current_dir(common::repo())
        .args(["replay", path.to_str().unwrap(), "--offline", "--output", out_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offline: Vec<serde_json::Value> =
        std::fs::read_to_string(&out_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Offline timestamps are rebuilt from the file (raw + interpolated clock offsets):
    // equal to the live ones within microseconds, so windows are matched to the nearest.
    let mut matched = 0;
    for l in &live {
        let ws = l["window_start"].as_f64().unwrap();
        let o = offline
            .iter()
            .filter(|o| o["mode"] == l["mode"] && o["stage"] == l["stage"])
            .min_by(|a, b| {
                (a["window_start"].as_f64().unwrap() - ws)
                    .abs()
                    .total_cmp(&(b["window_start"].as_f64().unwrap() - ws).abs())
            })
            .filter(|o| (o["window_start"].as_f64().unwrap() - ws).abs() < 0.002)
            .unwrap_or_else(|| panic!("live decoding {} has no offline twin", l["sequence"]));
        let (a, b): (Vec<f32>, Vec<f32>) = (
            serde_json::from_value(l["embedding"].clone()).unwrap(),
            serde_json::from_value(o["embedding"].clone()).unwrap(),
        );
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-5, "decoding {}: embeddings differ by {err}", l["sequence"]);
        assert_eq!(l["top_k"][0]["image_id"], o["top_k"][0]["image_id"]);
        matched += 1;
    }
    assert_eq!(matched, live.len());
}

#[test]
fn write_error_stops_recording_and_decoding_goes_on() {
    common::init_lsl();
    let name = common::unique("full");
    let dir = tempfile::tempdir().unwrap();
    let _sim = common::Reaper(common::spawn(&["simulate", "--name", &name, "--source-id", &name]));
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    // A file-size limit of 2000 KiB (~1.6 s of 306 ch x 1000 Hz) acts like a full disk (EFBIG on write); SIGXFSZ ignored.
    let (_, cfg) = common::init_lsl();
    let script = format!(
        "trap '' XFSZ; ulimit -f 2000; exec {} serve --stream-name {name} --no-markers --listen {listen} --record-dir {} --record --subject F1",
        env!("CARGO_BIN_EXE_meg-decoder"),
        dir.path().display()
    );
    let mut serve = common::Reaper(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("LSLAPICFG", cfg)
            .env("MEG_DECODER_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    common::wait_port(&listen);
    std::thread::sleep(Duration::from_secs(3));
    let status = common::bin().args(["client", "--addr", &format!("http://{listen}"), "--status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("recording: false"), "{text}");
    assert!(text.contains("File too large") || text.contains("stopped"), "{text}");
    // Decoding goes on.
    let out = common::bin()
        .args(["client", "--addr", &format!("http://{listen}"), "--count", "5", "--json", "--max-rate", "0"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    common::sigterm_and_wait(&mut serve.0);
    // What was written before the error still loads.
    let files = common::xdf_files(dir.path());
    let v = pyxdf(&files[0]);
    assert!(stream(&v, "MEG")["n"].as_u64().unwrap() > 100);
}

#[test]
fn replay_plays_a_recording_back_as_live_streams() {
    use meg_decoder::record::xdf::{info_xml, XdfWriter};
    common::init_lsl();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.xdf");
    let name = common::unique("orig");
    // A recording: 4 channels at 100 Hz for 3 s (values = sample index * 10 + channel), and 3 markers.
    let chans = "<channels>".to_string()
        + &(0..4).map(|c| format!("<channel><label>C{c}</label><unit>T</unit></channel>")).collect::<String>()
        + "</channels>";
    let mut w = XdfWriter::create(std::fs::File::create(&path).unwrap(), "").unwrap();
    w.stream_header(1, &info_xml(&name, "MEG", 4, 100.0, "float32", &name, &chans)).unwrap();
    w.stream_header(2, &info_xml(&format!("{name}-m"), "Markers", 1, 0.0, "string", &format!("{name}-m"), "")).unwrap();
    let ts: Vec<f64> = (0..300).map(|i| 1000.0 + i as f64 / 100.0).collect();
    let vals: Vec<f32> = (0..300 * 4).map(|i| ((i / 4) * 10 + i % 4) as f32).collect();
    w.samples_f32(1, &ts[..150], &vals[..600], 4).unwrap();
    w.samples_f32(1, &ts[150..], &vals[600..], 4).unwrap();
    w.samples_str(2, [(1000.5, "img_0001"), (1001.5, "img_0002"), (1002.5, "img_0003")].into_iter()).unwrap();
    w.clock_offset(1, 1000.0, 0.0).unwrap();
    drop(w);

    let prefix = "replayed-";
    let _player =
        common::Reaper(common::spawn(&["replay", path.to_str().unwrap(), "--prefix", prefix, "--chunk", "5"]));
    let mut cfg = AcquisitionConfig::new(StreamQuery::by_name(&format!("{prefix}{name}")));
    cfg.resolve_timeout_s = 10.0;
    let acq = MegAcquisition::start(cfg).unwrap();
    let (mtx, mrx) = crossbeam_channel::unbounded();
    let _markers =
        MarkerAcquisition::start(&StreamQuery::by_name(&format!("{prefix}{name}-m")), 10.0, vec![mtx]).unwrap();
    assert_eq!(acq.description.labels(), vec!["C0", "C1", "C2", "C3"]);
    assert_eq!(acq.description.nominal_srate, 100.0);
    let start = Instant::now();
    while acq.ring.head() < 250 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    let n = acq.ring.head() as usize;
    assert!(n >= 250, "received {n} of 300 samples");
    let mut data = vec![0f32; n * 4];
    let mut got_ts = vec![0f64; n];
    acq.ring.read(0, &mut data, &mut got_ts).unwrap();
    // The inlet may join after the first samples; what arrives is the recording, in order,
    // with the recorded spacing.
    let first = (data[0] / 10.0) as usize;
    for (i, row) in data.chunks_exact(4).enumerate() {
        assert_eq!(row, &vals[(first + i) * 4..(first + i + 1) * 4], "sample {i}");
    }
    assert!(got_ts.windows(2).all(|w| ((w[1] - w[0]) - 0.01).abs() < 1e-6));
    let markers: Vec<String> = mrx.try_iter().map(|m| m.text).collect();
    assert!(markers.ends_with(&["img_0003".to_string()]) && !markers.is_empty(), "{markers:?}");
}

#[test]
fn sigterm_with_subscribers_and_a_recording_stops_cleanly_within_the_timeout() {
    // Three subscribers (two console clients reading, one grpcio client that stopped
    // reading), a session being recorded; SIGTERM: serve exits 0 within the 3 s shutdown
    // timeout, every client's stream ends, the file has its footers and loads in pyxdf.
    common::init_lsl();
    let name = common::unique("term");
    let dir = tempfile::tempdir().unwrap();
    let (_sim, mut serve, listen) = simulate_and_record(&name, dir.path(), "T1", "1.0", &[]);
    let addr = format!("http://{listen}");
    let mut readers: Vec<common::Reaper> = (0..2)
        .map(|_| {
            common::Reaper(
                common::bin()
                    .args(["client", "--addr", &addr, "--json", "--max-rate", "0"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let stalled = format!(
        "import sys, time, grpc\n\
         from meg_decoder_client._pb import decoder_pb2 as pb, decoder_pb2_grpc as rpc\n\
         it = rpc.DecoderStub(grpc.insecure_channel({listen:?})).Subscribe(pb.SubscribeRequest(include_embedding=True))\n\
         next(it)\nprint('subscribed', flush=True)\ntime.sleep(60)\n",
    );
    let mut stalled = common::Reaper(
        Command::new(common::python()).args(["-c", &stalled]).stdout(std::process::Stdio::piped()).spawn().unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stalled.0.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "subscribed");
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let _ = Command::new("kill").arg("-TERM").arg(serve.0.id().to_string()).status();
    let status = loop {
        if let Some(s) = serve.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "serve still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    eprintln!("serve exited {status} {:.2} s after SIGTERM", took.as_secs_f64());
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_millis(3800), "took {took:?}");
    for r in &mut readers {
        let deadline = Instant::now() + Duration::from_secs(3);
        while r.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "a client's stream did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let files = common::xdf_files(dir.path());
    assert_eq!(files.len(), 1);
    let v = pyxdf(&files[0]);
    let meg = stream(&v, "MEG");
    assert!(meg["n"].as_u64().unwrap() > 2000);
    assert_eq!(meg["footer_count"].as_u64(), meg["n"].as_u64(), "footer written at the clean stop");
}

/// A source written with MNE-LSL's own outlet (not our code), pushing known values in
/// `dtype` at 1000 Hz for `seconds`; channel 0 counts samples.
const PEER_SOURCE: &str = r#"
import sys, time
import numpy as np
from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock
name, dtype, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
c, fs = 8, 1000.0
info = StreamInfo(name, "MEG", c, fs, dtype, name)
info.set_channel_names(["COUNT"] + [f"MEG{i:03d}" for i in range(1, c)])
info.set_channel_types(["misc"] + ["mag"] * (c - 1))
info.set_channel_units(["0"] * c)
out = StreamOutlet(info, chunk_size=10)
out.wait_for_consumers(10)
def values(n0, n):
    i = np.arange(n0, n0 + n)[:, None]
    ch = np.arange(c)[None, :]
    if dtype == "int16":
        v = ((i * 7 + ch * 1301) % 30000) - 15000
    else:
        v = 1e-12 * np.sin(0.01 * i * (ch + 1)) + 1e-13 * ch + 1e-15 * (i % 97)
    v[:, 0] = i[:, 0]
    return v.astype(dtype)
t0, n = local_clock(), 0
print("ready", flush=True)
while n < seconds * fs:
    due = t0 + (n + 10) / fs
    time.sleep(max(0.0, due - local_clock()))
    out.push_chunk(values(n, 10))
    n += 10
time.sleep(1.0)
"#;

/// Loads `xdf` with pyxdf and compares the MEG stream to what PEER_SOURCE pushed.
const PEER_CHECK: &str = r#"
import json, sys
import numpy as np, pyxdf
path, dtype = sys.argv[1], sys.argv[2]
streams, _ = pyxdf.load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)
s = [s for s in streams if s["info"]["type"][0] == "MEG"][0]
x = np.asarray(s["time_series"], dtype=np.float64)
i = x[:, 0].astype(np.int64)[:, None]
c = x.shape[1]
ch = np.arange(c)[None, :]
if dtype == "int16":
    want = (((i * 7 + ch * 1301) % 30000) - 15000).astype(np.float64)
else:
    want = 1e-12 * np.sin(0.01 * i * (ch + 1)) + 1e-13 * ch + 1e-15 * (i % 97)
want[:, 0] = i[:, 0]
err = np.abs(x[:, 1:] - want[:, 1:])
rel = (err / np.maximum(np.abs(want[:, 1:]), 1e-30)).max()
print(json.dumps({"n": int(len(x)), "contiguous": bool((np.diff(i[:, 0]) == 1).all()),
                  "format": s["info"]["channel_format"][0],
                  "exact": bool((err == 0).all()), "max_rel": float(rel)}))
"#;

/// Pulls 2000 samples of `meg-decoder replay`'s stream with pylsl (in the stream's own
/// format) and compares them with what PEER_SOURCE pushed.
const REPLAY_CHECK: &str = r#"
import json, sys
import numpy as np
from pylsl import StreamInlet, resolve_byprop
name, dtype = sys.argv[1], sys.argv[2]
info = resolve_byprop("name", name, timeout=20)[0]
inlet = StreamInlet(info)
rows = []
while len(rows) < 2000:
    chunk, _ = inlet.pull_chunk(timeout=5.0)
    if not chunk:
        break
    rows.extend(chunk)
x = np.asarray(rows, dtype=np.float64)
i = x[:, 0].astype(np.int64)[:, None]
ch = np.arange(x.shape[1])[None, :]
if dtype == "int16":
    want = (((i * 7 + ch * 1301) % 30000) - 15000).astype(np.float64)
else:
    want = 1e-12 * np.sin(0.01 * i * (ch + 1)) + 1e-13 * ch + 1e-15 * (i % 97)
print(json.dumps({"n": len(rows), "format": info.channel_format(), "exact": bool((x[:, 1:] == want[:, 1:]).all())}))
"#;

#[test]
fn int16_and_float64_sources_from_mne_lsl_are_recorded_as_pushed() {
    common::init_lsl();
    let (_, lsl_cfg) = common::init_lsl();
    for dtype in ["int16", "float64"] {
        let name = common::unique(&format!("fmt-{dtype}"));
        let dir = tempfile::tempdir().unwrap();
        let mut src = common::Reaper(
            Command::new(common::python())
                .args(["-c", PEER_SOURCE, &name, dtype, "6"])
                .env("LSLAPICFG", lsl_cfg)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(src.0.stdout.take().unwrap()), &mut line).unwrap();
        // A model for these channels, so `serve` runs as a lab would run it on this source.
        let model = dir.path().join("model");
        let out = Command::new(common::python())
            .arg(common::repo().join("models/probe_model.py"))
            .arg(&model)
            .args(["--kind", "rms", "--channels", "MEG001", "MEG002", "--window-samples", "30", "--window-start", "0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listen = format!("127.0.0.1:{}", common::free_port());
        let mut serve = common::Reaper(
            common::bin()
                .args(["serve", "--stream-name", &name, "--model", model.to_str().unwrap(), "--no-markers"])
                .args(["--listen", &listen, "--record-dir", dir.path().to_str().unwrap(), "--record"])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let _ = src.0.wait();
        common::sigterm_and_wait(&mut serve.0);
        let path = common::xdf_files(dir.path()).pop().unwrap();
        let out =
            Command::new(common::python()).args(["-c", PEER_CHECK, path.to_str().unwrap(), dtype]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!("{dtype} source recorded: {v}");
        assert!(v["n"].as_u64().unwrap() > 3000 && v["contiguous"] == true, "{v}");
        // Written in the source's own format, every value exactly as pushed.
        assert_eq!(v["format"], if dtype == "int16" { "int16" } else { "double64" });
        assert_eq!(v["exact"], true, "{dtype} values must come back exactly: {v}");

        // Replayed as a live stream, pylsl receives the source's values exactly again.
        let prefix = format!("re-{}-", std::process::id());
        let _replay = common::Reaper(
            common::bin()
                .args(["replay", path.to_str().unwrap(), "--prefix", &prefix])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let out = Command::new(common::python())
            .args(["-c", REPLAY_CHECK, &format!("{prefix}{name}"), dtype])
            .env("LSLAPICFG", lsl_cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!("{dtype} recording replayed: {r}");
        assert!(r["n"].as_u64().unwrap() >= 2000, "{r}");
        assert_eq!(r["format"], if dtype == "int16" { 5 } else { 2 }, "replayed in the source's format: {r}");
        assert_eq!(r["exact"], true, "replay must reproduce the source's values: {r}");
    }
}
