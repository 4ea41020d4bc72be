//! What real acquisition does, and the service getting it right: sources whose true rate
//! is off nominal or drifts (live, over LSL, chunks stamped at push time), DC offsets,
//! trigger and photodiode channels paired with jittered markers, a model trained on
//! zero-phase filtered data, the Python reference preprocessing of models/contract.py, and
//! the two real MEG recordings of ../shared/data/real-meg streamed by MNE-LSL's PlayerLSL.
//!
//! Models here are probe encoders exported through models/contract.py
//! (models/probe_model.py): `raw` returns the preprocessed window itself, so a test sees
//! exactly what the service feeds a model.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meg_decoder::config::Config;
use meg_decoder::dsp::{butter_bandpass, SosFilter};
use meg_decoder::ingest::Marker;
use meg_decoder::model::{Encoder, EncoderOptions, ModelContract};
use meg_decoder::pipeline::{
    ChannelMap, ChannelMatching, DecodeMode, DecoderCore, Decoding, EventConfig, OnsetSource, PipelineConfig,
    Preprocessor, SkipReason,
};
use meg_decoder::server::proto;
use meg_decoder::simulate::{self, EvokedWorld, SimulatorConfig, Stamping};

/// Exports a probe encoder with models/probe_model.py (onnx + contract.py, as a lab would).
fn probe(dir: &Path, args: &[&str]) -> PathBuf {
    let out = Command::new(common::python())
        .arg(common::repo().join("models/probe_model.py"))
        .arg(dir)
        .args(args)
        .output()
        .expect("python with onnx (make venv)");
    assert!(out.status.success(), "probe_model.py: {}", String::from_utf8_lossy(&out.stderr));
    dir.join("encoder.onnx")
}

fn load(path: &Path) -> Encoder {
    Encoder::load(path, &EncoderOptions { warmup_runs: 0, ..Default::default() }).unwrap()
}

/// Runs the core over rendered data in chunks of 50, handing each marker over once the
/// data has passed its `arrive` time.
fn run_core(
    core: &mut DecoderCore,
    width: usize,
    rows: &[f32],
    ts: &[f64],
    markers: &[(f64, Marker)],
) -> Vec<Decoding> {
    let seg = vec![0u32; ts.len()];
    let mut out = Vec::new();
    let mut next = 0;
    for start in (0..ts.len()).step_by(50) {
        let end = (start + 50).min(ts.len());
        while next < markers.len() && markers[next].0 <= ts[end - 1] {
            core.push_marker(markers[next].1.clone());
            next += 1;
        }
        core.push_samples(&rows[start * width..end * width], &ts[start..end], &seg[start..end], &|| 0.0, &mut |d| {
            out.push(d)
        });
    }
    out
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map(|(i, _)| i).unwrap()
}

#[test]
fn windows_stay_on_their_markers_with_a_fast_source_and_a_drifting_clock() {
    // Two sources at once, each with its own service: one 1% fast, one whose sampling
    // clock is 3000 ppm slow. Chunks are stamped when pushed (as liblsl stamps a
    // device), markers carry the true onset times (the drifting source: jittered markers
    // paired with its trigger channel), a 20 ms pulse on MEG0113 marks every onset. Counting model samples at the nominal rate would move the pulse by 1.2 and
    // 0.36 samples per second; it must stay put for the whole minute.
    common::init_lsl();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("probe");
    probe(&model, &["--kind", "raw", "--channels", "MEG0113", "--baseline", "-0.5", "-0.1"]);
    let seconds = 62.0;
    let run = |label: &str, true_rate: Option<f64>, drift_ppm: f64, trigger: bool| {
        let name = common::unique(label);
        let sim = SimulatorConfig {
            name: name.clone(),
            source_id: name.clone(),
            marker_stream: Some(format!("{name}-m")),
            true_rate,
            drift_ppm,
            stamping: Stamping::Push,
            format: meg_decoder::lsl::ChannelFormat::Double64,
            onset_pulse: true,
            trigger_channel: trigger,
            marker_jitter_s: if trigger { 0.02 } else { 0.0 },
            noise_level: 0.1,
            // The next onset falls after the window (-0.5..+1.0 s): one pulse per window.
            isi_s: 1.2,
            isi_jitter_s: 0.1,
            duration_s: Some(seconds),
            wait_for_consumer_s: 10.0,
            ..Default::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let sim_thread = std::thread::spawn(move || simulate::run(&sim, &s2).unwrap());
        let mut cfg = Config::default();
        cfg.model.dir = model.clone();
        cfg.stream.name = name.clone();
        cfg.markers.name = format!("{name}-m");
        cfg.markers.resolve_timeout_s = 10.0;
        cfg.pipeline.continuous = false;
        if trigger {
            cfg.events.trigger_channel = simulate::TRIGGER_LABEL.into();
        }
        let app = meg_decoder::app::App::start(&cfg, "test").unwrap();
        let mut sub = app.state.hub.subscribe("test".into());
        (
            sim_thread,
            app,
            sub_thread(move || {
                let mut got = Vec::new();
                let deadline = Instant::now() + Duration::from_secs_f64(seconds + 20.0);
                while Instant::now() < deadline {
                    match sub.decodings.try_recv() {
                        Ok(d) => got.push((*d.decoding).clone()),
                        Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => panic!("test subscriber lagged"),
                        Err(_) => break,
                    }
                    if got.last().is_some_and(|d: &Decoding| d.window_end > 0.0) && sub_done(&got, seconds) {
                        break;
                    }
                }
                got
            }),
        )
    };
    // The fast source's onsets come from its markers; the drifting one's from its trigger
    // channel, labelled by markers that jitter by up to 20 ms.
    let fast = run("fast", Some(1010.0), 0.0, false);
    let slow = run("drift", None, -3000.0, true);
    for (label, (sim, app, collector)) in [("1% fast", fast), ("-3000 ppm", slow)] {
        let report = sim.join().unwrap();
        let got = collector.join().unwrap();
        let stats = app.state.streams[0].stats.snapshot();
        let app_stats = app.state.pipeline.clone();
        app.shutdown();
        let locked: Vec<&Decoding> = got.iter().filter(|d| d.mode == DecodeMode::EventLocked).collect();
        let idx: Vec<usize> = locked.iter().map(|d| argmax(&d.embedding)).collect();
        let span = locked.last().unwrap().marker.as_ref().unwrap().timestamp
            - locked.first().unwrap().marker.as_ref().unwrap().timestamp;
        eprintln!(
            "{label}: {} of {} markers decoded over {span:.1} s, pulse at window index {:?}..{:?} (gaps {}, resets {})",
            locked.len(),
            report.markers,
            idx.iter().min(),
            idx.iter().max(),
            stats.gaps,
            stats.clock_resets
        );
        assert!(span >= 55.0, "{label}: decodings span only {span:.1} s");
        assert_eq!(app_stats.skipped_total(), app_stats.skipped(SkipReason::TooLate), "{label}: windows skipped");
        assert!(locked.len() as u64 + 3 >= report.markers, "{label}: {} of {} markers", locked.len(), report.markers);
        // The onset is at index 60 (0.5 s at 120 Hz); the 20 ms pulse peaks one sample later.
        let lo = *idx.iter().min().unwrap();
        let hi = *idx.iter().max().unwrap();
        assert!(hi - lo <= 2 && (59..=63).contains(&lo) && (59..=63).contains(&hi), "{label}: pulse moved: {idx:?}");
        assert_eq!((stats.gaps, stats.clock_resets), (0, 0), "{label}: push-stamping jitter taken for gaps");
        assert!(
            locked.iter().all(|d| d.marker.as_ref().unwrap().text.starts_with("stim_")),
            "{label}: every onset labelled by its marker"
        );
    }
}

fn sub_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    std::thread::spawn(f)
}

/// The collector stops once decodings cover the whole run.
fn sub_done(got: &[Decoding], seconds: f64) -> bool {
    let first = got.iter().find_map(|d| d.marker.as_ref().map(|m| m.timestamp));
    let last = got.iter().rev().find_map(|d| d.marker.as_ref().map(|m| m.timestamp));
    matches!((first, last), (Some(a), Some(b)) if b - a > seconds - 3.0)
}

fn sim_cfg(seed: u64) -> SimulatorConfig {
    SimulatorConfig { seed, srate: 1000.0, ..Default::default() }
}

#[test]
fn dc_offsets_do_not_ring_through_the_filters_or_the_fitted_scaler() {
    let tmp = tempfile::tempdir().unwrap();
    let chans = ["MEG0111", "MEG0112", "MEG0113", "MEG1711", "MEG1712"];
    let mut args = vec!["--kind", "raw", "--highpass", "0.1", "--lowpass", "40", "--scaler", "fit:5", "--channels"];
    args.extend(chans);
    let model = probe(&tmp.path().join("p"), &args);
    let decode = |offset: f32| {
        let cfg = SimulatorConfig { dc_offset: offset, ..sim_cfg(4) };
        let (rows, ts, _) = simulate::render(&cfg, 24.0, 30.0).unwrap();
        let pc = PipelineConfig { hop_s: Some(0.25), ..Default::default() };
        let mut core = DecoderCore::new(load(&model), None, &simulate::stream_description(&cfg), pc).unwrap();
        let out = run_core(&mut core, 306, &rows, &ts, &[]);
        let settling = core.stats().skipped(SkipReason::Settling);
        (out, settling, rows)
    };
    let (clean, settle_clean, _) = decode(0.0);
    let (offset, settle_offset, rows) = decode(1e-10);
    assert!(clean.len() > 50, "{} decodings", clean.len());
    assert_eq!(clean.len(), offset.len());
    assert_eq!(settle_clean, settle_offset);
    assert!(settle_clean > 0, "windows inside the settle period must be skipped");
    let rms = |v: &[f32]| (v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let mut worst: f64 = 0.0;
    for (a, b) in clean.iter().zip(&offset) {
        assert_eq!(a.window_start, b.window_start);
        let diff: Vec<f32> = a.embedding.iter().zip(&b.embedding).map(|(x, y)| x - y).collect();
        worst = worst.max(rms(&diff) / rms(&a.embedding));
    }
    eprintln!(
        "offsets of up to 1e-10 T: decoded windows differ from the offset-free run by {worst:.2e} (relative RMS)"
    );
    assert!(worst < 1e-3, "the offset leaks into decoded windows: {worst}");

    // The same band-pass started from rest (the old behaviour) still carries the step of
    // a 1e-10 offset 5 s later, far above the signal: the comparison above would catch it.
    let mut f = SosFilter::new(butter_bandpass(4, 0.1, 40.0, 1000.0), 1);
    let mut step = [0.0f32];
    for _ in 0..5000 {
        step = [1e-10];
        f.process_row(&mut step);
    }
    let signal: Vec<f32> = rows.iter().step_by(306).map(|v| v - rows[0]).collect();
    assert!(f64::from(step[0].abs()) > 3.0 * rms(&signal[..5000]), "step {} vs signal {}", step[0], rms(&signal));
}

/// Markers as a stimulus PC sends them: late by 0-30 ms (deterministic pseudo-jitter).
fn jittered(markers: &[Marker]) -> Vec<(f64, Marker)> {
    markers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let late = 0.030 * ((i * 7919 % 97) as f64 / 97.0);
            let t = m.timestamp + late;
            (t + 0.005, Marker { timestamp: t, source_timestamp: t, text: m.text.clone() })
        })
        .collect()
}

#[test]
fn trigger_and_photodiode_onsets_are_sample_exact_and_take_the_markers_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let model = probe(&tmp.path().join("p"), &["--kind", "raw", "--channels", "MEG0113"]);
    let cfg = SimulatorConfig {
        trigger_channel: true,
        photodiode_channel: true,
        isi_s: 0.8,
        world: Some(Arc::new(EvokedWorld::load(&common::repo().join("models/demo")).unwrap())),
        ..sim_cfg(9)
    };
    let (rows, ts, markers) = simulate::render(&cfg, 30.0, 200.0).unwrap();
    let width = simulate::stream_description(&cfg).channel_count;
    assert_eq!(width, 308);
    // The sample at which each stimulus really starts (the simulator's trigger goes up at
    // the first sample at or after the onset).
    let onset_time = |m: &Marker| ts[(((m.timestamp - 200.0) * 1000.0) - 1e-6).ceil() as usize];
    let mut stray = jittered(&markers);
    stray.push((220.4, Marker { timestamp: 220.35, source_timestamp: 220.35, text: "no_trigger".into() }));
    stray.sort_by(|a, b| a.0.total_cmp(&b.0));

    let decode = |events: EventConfig, input: &[(f64, Marker)]| {
        let pc = PipelineConfig { hop_s: None, events, ..Default::default() };
        let mut core = DecoderCore::new(load(&model), None, &simulate::stream_description(&cfg), pc).unwrap();
        let out = run_core(&mut core, width, &rows, &ts, input);
        (out, core)
    };
    let by_label: HashMap<&str, &Marker> = markers.iter().map(|m| (m.text.as_str(), m)).collect();
    let check = |out: &[Decoding], tolerance: f64, what: &str| -> f64 {
        let mut worst: f64 = 0.0;
        for d in out {
            let m = d.marker.as_ref().unwrap();
            let truth = by_label.get(m.text.as_str()).unwrap_or_else(|| panic!("{what}: unknown label {}", m.text));
            worst = worst.max((m.timestamp - onset_time(truth)).abs());
        }
        assert!(worst <= tolerance, "{what}: onset off by {worst} s");
        worst
    };

    let trigger = EventConfig { trigger_channel: "STI 014".into(), ..Default::default() };
    let (out, core) = decode(trigger, &stray);
    assert!(out.len() + 2 >= markers.len() && out.len() > 25, "{} of {} decoded", out.len(), markers.len());
    let worst = check(&out, 1e-6, "trigger");
    let stats = core.stats();
    let ordering = std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.onsets_paired.load(ordering), stats.onsets_detected.load(ordering));
    assert_eq!(stats.markers_unpaired.load(ordering), 1, "the marker without a trigger");
    eprintln!("trigger: {} onsets, worst error {worst:.2e} s, labels from jittered markers", out.len());

    let photodiode = EventConfig {
        source: OnsetSource::Photodiode,
        photodiode_channel: simulate::PHOTODIODE_LABEL.into(),
        photodiode_threshold: Some(0.5),
        ..Default::default()
    };
    let (out, _) = decode(photodiode, &jittered(&markers));
    assert!(out.len() > 25);
    let worst = check(&out, 0.001 + 1e-9, "photodiode");
    eprintln!("photodiode: {} onsets, worst error {worst:.2e} s", out.len());

    // Markers alone carry the stimulus PC's jitter (the reason to prefer the trigger).
    let (out, _) = decode(EventConfig::default(), &jittered(&markers));
    let worst = check(&out, 0.031, "markers");
    assert!(worst > 0.02, "marker jitter should show: {worst}");

    // Without markers, each trigger is labelled by its code.
    let trigger = EventConfig { trigger_channel: "STI 014".into(), ..Default::default() };
    let (out, _) = decode(trigger, &[]);
    assert!(out.len() > 25 && out.iter().all(|d| d.marker.as_ref().unwrap().text.parse::<u32>().is_ok()));
}

#[test]
fn zero_phase_models_get_the_filters_group_delay_compensated() {
    // The evoked response of the demo world, noise-free: where its peak lands in the
    // window (relative to the onset) for a model trained on zero-phase data, against
    // MNE-style offline preprocessing (forward-backward filtering of the whole record).
    let world = Arc::new(EvokedWorld::load(&common::repo().join("models/demo")).unwrap());
    let cfg = SimulatorConfig { world: Some(world), noise_level: 0.0, isi_s: 1.6, isi_jitter_s: 0.0, ..sim_cfg(21) };
    let (rows, ts, markers) = simulate::render(&cfg, 20.0, 10.0).unwrap();
    let (lo, hi, fs) = (0.1, 40.0, 1000.0);
    // The channel with the strongest response.
    let ch = (0..306)
        .max_by(|&a, &b| {
            let p = |c: usize| rows.iter().skip(c).step_by(306).map(|v| v.abs()).fold(0.0f32, f32::max);
            p(a).total_cmp(&p(b))
        })
        .unwrap();
    let label = simulate::stream_description(&cfg).channels[ch].label.clone();
    // Offline reference: forward-backward filtering (zero phase) at 1000 Hz.
    let mut x: Vec<f32> = rows.iter().skip(ch).step_by(306).copied().collect();
    let mut f = SosFilter::new(butter_bandpass(4, lo, hi, fs), 1);
    f.process(&mut x);
    x.reverse();
    let mut f = SosFilter::new(butter_bandpass(4, lo, hi, fs), 1);
    f.process(&mut x);
    x.reverse();
    // The evoked field (average over epochs) offline, and the latency of its peak.
    let epochs: Vec<&Marker> = markers.iter().filter(|m| m.timestamp > 14.0 && m.timestamp < 28.0).collect();
    let mut erf = vec![0.0f64; 800];
    for m in &epochs {
        let o = ((m.timestamp - 10.0) * fs - 1e-6).ceil() as usize;
        erf.iter_mut().zip(&x[o..o + 800]).for_each(|(e, v)| *e += f64::from(*v));
    }
    let peak = (0..800).max_by(|&a, &b| erf[a].abs().total_cmp(&erf[b].abs())).unwrap();
    let offline = peak as f64 / fs;
    let tmp = tempfile::tempdir().unwrap();
    // The same peak in the average of the windows the service fed the model.
    let latency = |phase: &str| -> f64 {
        let dir = tmp.path().join(phase);
        let model = probe(
            &dir,
            &["--kind", "raw", "--highpass", "0.1", "--lowpass", "40", "--filter-phase", phase, "--channels", &label],
        );
        let pc = PipelineConfig { hop_s: None, ..Default::default() };
        let mut core = DecoderCore::new(load(&model), None, &simulate::stream_description(&cfg), pc).unwrap();
        let input: Vec<(f64, Marker)> = markers.iter().map(|m| (m.timestamp, m.clone())).collect();
        let out = run_core(&mut core, 306, &rows, &ts, &input);
        let used: Vec<&Decoding> = out
            .iter()
            .filter(|d| d.marker.as_ref().unwrap().timestamp > 14.0 && d.marker.as_ref().unwrap().timestamp < 28.0)
            .collect();
        assert_eq!(used.len(), epochs.len());
        let mut avg = vec![0.0f64; 181];
        let mut start = 0.0;
        for d in &used {
            avg.iter_mut().zip(&d.embedding).for_each(|(a, v)| *a += f64::from(*v));
            start += d.window_start - d.marker.as_ref().unwrap().timestamp;
        }
        start /= used.len() as f64;
        // The extremum nearest the offline peak (within 60 ms), with the offline sign.
        let sign = erf[peak].signum();
        let k = (0..181)
            .filter(|&k| ((start + k as f64 / 120.0) - offline).abs() <= 0.06)
            .max_by(|&a, &b| (sign * avg[a]).total_cmp(&(sign * avg[b])))
            .unwrap();
        start + k as f64 / 120.0
    };
    let zero = latency("zero-phase");
    let causal = latency("causal");
    eprintln!(
        "evoked peak on {label}: offline zero-phase {:.1} ms, service with compensation {:.1} ms, without (causal) {:.1} ms",
        offline * 1e3,
        zero * 1e3,
        causal * 1e3
    );
    assert!((zero - offline).abs() <= 1.0 / 120.0 + 1e-9, "compensated peak {zero} vs offline {offline}");
    assert!(causal - offline > 0.008, "the causal filters' delay should show without compensation");
}

#[test]
fn service_preprocessing_matches_the_python_reference_of_the_contract() {
    // models/contract.py's preprocess() is what a lab trains on; the service must feed the
    // model the same numbers: random MEG-like data with DC offsets, an off-grid rate
    // (600.614 Hz, as Elekta/MEGIN), band-pass + notch, steady-state start; with the
    // default (sinc) resampler and the low-latency causal one, whose anti-alias filter
    // and interpolation the reference must reproduce too.
    for (fs, resampler) in [(600.614, "sinc"), (600.614, "causal"), (1000.0, "causal"), (5000.0, "causal")] {
        let (c, x32) = random_walks(fs);
        matches_the_python_reference(fs, resampler, c, &x32);
    }
    // Real hardware's numbers: the CTF 275 recording's first 3 magnetometers as MNE reads
    // them (tesla, with the system's DC offsets), looped to 10 s.
    let script = r#"
import sys, numpy as np, mne
mne.set_log_level("error")  # stdout carries the samples
raw = mne.io.read_raw_fif(sys.argv[1]).pick("mag")
x = raw.get_data()[:3]
x = np.tile(x, (1, int(np.ceil(10 * raw.info["sfreq"] / x.shape[1]))))
sys.stdout.buffer.write(x.T.astype("<f4").tobytes())
print(raw.info["sfreq"], file=sys.stderr)
"#;
    let path = common::repo().join("../shared/data/real-meg/ctf275_comp_raw.fif");
    let out = Command::new(common::python()).args(["-c", script, path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fs: f64 = String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap().parse().unwrap();
    let x32: Vec<f32> = out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    for resampler in ["sinc", "causal"] {
        matches_the_python_reference(fs, resampler, 3, &x32);
    }
}

/// Three channels of random walks in tesla with a 50 Hz line and DC offsets, 10 s at `fs`.
fn random_walks(fs: f64) -> (usize, Vec<f32>) {
    let (c, n) = (3usize, (fs * 10.0) as usize);
    let mut rng = 17u64;
    let mut next = || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((rng >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let mut x = vec![0.0f64; n * c];
    for ch in 0..c {
        let mut walk = 0.0;
        for i in 0..n {
            walk = 0.98 * walk + next();
            x[i * c + ch] = 1e-12 * (walk + 0.3 * (2.0 * std::f64::consts::PI * 50.0 * i as f64 / fs).sin())
                + 1e-10 * (ch as f64 + 1.0);
        }
    }
    (c, x.iter().map(|&v| v as f32).collect())
}

/// `x32` (sample-major, `c` = 3 channels) through the service's Preprocessor and through
/// models/contract.py's `preprocess`: the same model-rate numbers to 1e-4 of the RMS.
fn matches_the_python_reference(fs: f64, resampler: &str, c: usize, x32: &[f32]) {
    let n = x32.len() / c;
    let names = ["A1", "A2", "A3"];
    let meta: HashMap<String, String> = [
        ("meg_decoder.contract", "1"),
        ("name", "ref"),
        ("sample_rate_hz", "120.0"),
        ("window_samples", "60"),
        ("window_start_s", "-0.1"),
        ("channel_names", r#"["A1", "A2", "A3"]"#),
        ("baseline_s", "[-0.1, 0.0]"),
        ("scaler", "none"),
        ("clamp", "20.0"),
        ("embedding_space", "x"),
        ("embedding_dim", "3"),
        ("highpass_hz", "0.5"),
        ("lowpass_hz", "40.0"),
        ("filter_order", "4"),
        ("notch_hz", "[50.0]"),
        ("resampler", resampler),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let contract = ModelContract::from_metadata(&meta).unwrap();
    let chans: Vec<_> = names
        .iter()
        .map(|l| meg_decoder::ingest::ChannelInfoData { label: l.to_string(), kind: "mag".into(), unit: "T".into() })
        .collect();
    let map = ChannelMap::new(&contract.channel_names, &chans, ChannelMatching::Exact).unwrap();
    let mut pre = Preprocessor::new(&contract, map, fs).unwrap();
    let mut rust: Vec<Vec<f32>> = Vec::new();
    for i in 0..n {
        pre.push(&x32[i * c..(i + 1) * c], i as f64 / fs, |s| rust.push(s.row.to_vec()));
    }
    // The same through Python (numpy/scipy), from the same float32 values.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("x.f32");
    std::fs::write(&input, x32.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let meta_json = serde_json::json!({
        "sample_rate_hz": 120.0, "highpass_hz": 0.5, "lowpass_hz": 40.0, "filter_order": 4, "notch_hz": [50.0],
        "resampler": resampler,
    });
    let script = format!(
        "import sys, json, numpy as np; sys.path.insert(0, {models:?}); import contract\n\
         x = np.fromfile({input:?}, dtype='<f4').astype(np.float64).reshape(-1, {c}).T\n\
         y = contract.preprocess(x, {fs}, json.loads({meta:?}))\n\
         sys.stdout.write(json.dumps(y.T.tolist()))",
        models = common::repo().join("models").display().to_string(),
        input = input.display().to_string(),
        meta = meta_json.to_string(),
    );
    let out = Command::new(common::python()).args(["-c", &script]).output().expect("python with scipy (make venv)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let py: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rust.len() > 1000 && (rust.len() as i64 - py.len() as i64).abs() <= 1, "{} vs {}", rust.len(), py.len());
    let (mut err, mut power) = (0.0f64, 0.0f64);
    for (a, b) in rust.iter().zip(&py) {
        for (u, v) in a.iter().zip(b) {
            err = err.max((f64::from(*u) - v).abs());
            power += v * v;
        }
    }
    let rms = (power / (py.len() * c) as f64).sqrt();
    eprintln!("{resampler} at {fs} Hz: service vs contract.py preprocess: max error {:.2e} of RMS {rms:.2e}", err);
    assert!(err < 1e-4 * rms, "{resampler} at {fs} Hz: max error {err} vs RMS {rms}");
    // The causal profile's look-ahead is one input sample (the sinc's is 50 ms).
    let look_ahead = pre.latency_s();
    if resampler == "causal" {
        assert!((look_ahead - 1.0 / fs).abs() < 1e-12, "look-ahead {look_ahead} s");
    } else {
        assert!((look_ahead - 0.05).abs() < 0.002, "look-ahead {look_ahead} s");
    }
}

/// MNE-LSL's PlayerLSL streaming a real recording, looping; the player prints the channel
/// types and units MNE reads from the file, then serves until killed.
struct Player {
    _child: common::Reaper,
    info: serde_json::Value,
}

fn play(file: &str, name: &str) -> Player {
    let (_, cfg) = common::init_lsl();
    let script = r#"
import json, sys, time
import mne
from mne_lsl.player import PlayerLSL
fname, name = sys.argv[1], sys.argv[2]
raw = mne.io.read_raw_fif(fname, verbose="error")
player = PlayerLSL(fname, chunk_size=16, name=name, source_id=name)
player.start()
print(json.dumps({"ch_names": raw.ch_names, "types": raw.get_channel_types(), "sfreq": raw.info["sfreq"],
                  "first": raw.get_data()[:, 0].tolist()}), flush=True)
while True:
    time.sleep(1)
"#;
    let path = common::repo().join("../shared/data/real-meg").join(file);
    let mut child = Command::new(common::python())
        .args(["-c", script, path.to_str().unwrap(), name])
        .env("LSLAPICFG", cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python with mne-lsl (make venv)");
    // MNE prints progress lines first; the JSON line says the player is streaming.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with('{') {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the player exited before streaming");
    }
    let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("player said {line:?}: {e}"));
    Player { _child: common::Reaper(child), info }
}

/// `inspect-stream` sees the player's stream as MNE reads the file, then `serve
/// --stream-name` (no type: the player's is empty) decodes it with a model made for the
/// system's channels under the names another site would use.
fn real_recording(file: &str, model_names: impl Fn(&str) -> Option<String>, expect_types: &[(&str, &str)]) {
    let name = common::unique("real");
    let player = play(file, &name);
    let types: Vec<String> = serde_json::from_value(player.info["types"].clone()).unwrap();
    let labels: Vec<String> = serde_json::from_value(player.info["ch_names"].clone()).unwrap();

    let out = common::bin()
        .args(["inspect-stream", "--filter", &name, "--json", "--measure", "1", "--wait", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "inspect-stream: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["stream"]["kind"], "", "PlayerLSL publishes an empty type");
    let units = v["channel_units"].as_array().unwrap();
    assert_eq!(units.len(), labels.len());
    for (i, u) in units.iter().enumerate() {
        assert_eq!(u["label"], labels[i].as_str());
        assert_eq!(u["type"], types[i].as_str(), "{}", labels[i]);
        assert_eq!(u["to_si"].as_f64().unwrap(), 1.0, "{}: MNE-LSL's unit code '0' is the SI unit", labels[i]);
    }
    for (kind, si) in expect_types {
        let u = units.iter().find(|u| u["type"] == *kind).unwrap_or_else(|| panic!("no {kind} channel"));
        assert_eq!(u["si_unit"].as_str().unwrap_or(""), *si, "{kind}");
        assert_eq!(u["brain_sensor"].as_bool().unwrap(), !si.is_empty() && *kind != "ref_meg", "{kind}");
    }
    let measured = v["measured"]["rate_hz"].as_f64().unwrap_or(0.0);
    let sfreq = player.info["sfreq"].as_f64().unwrap();
    assert!((measured / sfreq - 1.0).abs() < 0.25, "measured {measured} Hz vs {sfreq}");

    // A model for this system's brain channels, named as another site names them.
    let names: Vec<String> = labels
        .iter()
        .zip(&types)
        .filter(|(_, t)| t.as_str() == "mag" || t.as_str() == "grad")
        .filter_map(|(l, _)| model_names(l))
        .take(40)
        .collect();
    assert_eq!(names.len(), 40);
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("channels.txt");
    std::fs::write(&list, names.join("\n")).unwrap();
    let model = tmp.path().join("model");
    let rms = ["--kind", "rms", "--channels", "x", "--channels-file", list.to_str().unwrap()];
    let filters = ["--highpass", "1", "--lowpass", "40", "--settle", "0.5"];
    probe(&model, &[&rms[..], &["--window-samples", "60", "--window-start", "-0.1"], &filters].concat());
    // With an encoder for continuous use beside it (its own 0.25 s window, baselined on
    // itself), which then decodes every continuous window of the real recording.
    let window = ["--window-samples", "31", "--window-start", "0", "--baseline", "0", "0.25"];
    probe(&model.join("continuous"), &[&rms[..], &window, &filters, &["--target", "on_screen"]].concat());
    let (port, http) = (common::free_port(), format!("127.0.0.1:{}", common::free_port()));
    let rec = tmp.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let mut serve = common::Reaper(
        common::bin()
            .args(["serve", "--stream-name", &name, "--model", model.to_str().unwrap(), "--no-markers"])
            .args(["--hop", "0.1", "--listen", &format!("127.0.0.1:{port}"), "--http-listen", &http])
            .args(["--record-dir", rec.to_str().unwrap(), "--record"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    common::wait_port(&format!("127.0.0.1:{port}"));
    let out = common::bin()
        .args(["client", "--addr", &format!("http://127.0.0.1:{port}"), "--json", "--embedding", "--max-rate", "0"])
        // 20 decodings at a 0.1 s hop: at least 2 s of stream buffered for GetSignal below
        // (the continuous encoder's 0.25 s window starts decoding soon after the settle).
        .args(["--count", "20", "--duration", "20"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(lines.len(), 20, "decodings of {file}: {}", String::from_utf8_lossy(&out.stderr));
    for d in &lines {
        let e: Vec<f64> = serde_json::from_value(d["embedding"].clone()).unwrap();
        assert_eq!(e.len(), 40);
        // Made by the continuous encoder: its window, and the instant it refers to.
        let (start, end) = (d["window_start"].as_f64().unwrap(), d["window_end"].as_f64().unwrap());
        assert!((end - start - 0.25).abs() < 2e-3, "{file}: window {start}..{end}");
        assert_eq!(d["on_screen_at"].as_f64(), Some(start), "{file}: {d}");
        // RMS of 1-40 Hz MEG in tesla: femto- to nanotesla, never fT read as T or vice versa.
        assert!(e.iter().all(|v| v.is_finite() && *v > 1e-16 && *v < 1e-9), "{file}: {e:?}");
    }
    // What the viewer plots (GetSignal): the model's channels of the real recording, in
    // tesla, on the model's sample grid; and the HTTP server's health and metrics.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let signal = rt.block_on(async {
        let mut c = proto::decoder_client::DecoderClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();
        c.get_signal(proto::GetSignalRequest { seconds: 2.0, picks: vec![] }).await.unwrap().into_inner()
    });
    assert_eq!(signal.channels, names, "{file}: signal channels");
    assert!(signal.units.iter().all(|u| u == "T"), "{file}: units {:?}", signal.units);
    let n = signal.times.len();
    assert!(n as f64 >= 1.9 * signal.sample_rate_hz, "{file}: {n} samples for 2 s at {} Hz", signal.sample_rate_hz);
    assert_eq!(signal.data.len(), 40 * n);
    let period = 1.0 / signal.sample_rate_hz;
    // On the grid within each segment. Segments break where the source's timestamps do:
    // MNE-LSL 1.14's player, each time a loop ends exactly at the end of the file, pushes
    // the whole file again in one chunk stamped as one chunk, so its times step back by
    // the file's length (a source clock reset to the service: a new segment, listed in
    // segment_starts).
    let off_grid: Vec<(usize, f64)> = signal
        .times
        .windows(2)
        .map(|w| (w[1] - w[0]) / period)
        .enumerate()
        .filter(|(_, r)| (r - 1.0).abs() > 0.1)
        .collect();
    let breaks: Vec<usize> = signal.segment_starts.iter().map(|&i| i as usize - 1).collect();
    assert!(
        off_grid.iter().all(|(i, _)| breaks.contains(i)),
        "{file}: steps off the sample grid (index, samples) {off_grid:?} but segments start at {:?}",
        signal.segment_starts
    );
    assert!(breaks.len() <= 3, "{file}: {} segments in 2 s", breaks.len() + 1);
    assert!(signal.data.iter().all(|v| v.is_finite() && v.abs() < 1e-9), "{file}: not MEG in tesla");
    assert!(signal.data.iter().any(|v| v.abs() > 1e-16), "{file}: a flat signal");
    let health = http_get(&http, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{file}: {health}");
    let metrics = http_get(&http, "/metrics");
    assert!(metrics.contains(&format!("megdecoder_samples_total{{stream=\"{name}\"}}")), "{file}: {metrics:.400}");
    common::sigterm_and_wait(&mut serve.0);
    drop(player);
    // The session file holds the recording's own values exactly (the player pushes
    // double64, the recorder writes double64), in the player's loop order.
    let mut found = common::xdf_files(&rec);
    assert_eq!(found.len(), 1, "{found:?}");
    let xdf = found.remove(0);
    let check = r#"
import json, sys
import numpy as np, pyxdf, mne
streams, _ = pyxdf.load_xdf(sys.argv[1], synchronize_clocks=False, dejitter_timestamps=False)
s = [s for s in streams if s["info"]["name"][0] == sys.argv[3]][0]
x = np.asarray(s["time_series"], dtype=np.float64)
raw = mne.io.read_raw_fif(sys.argv[2], verbose="error")
d = raw.get_data().T
n = len(d)
start = [j for j in range(n) if np.array_equal(d[j], x[0])]
ok = len(start) == 1
if ok:
    idx = (start[0] + np.arange(len(x))) % n
    err = np.abs(x - d[idx]).max()
else:
    err = float("nan")
print(json.dumps({"n": len(x), "aligned": ok, "max_abs_error": float(err), "format": s["info"]["channel_format"][0], "labels_match": [c["label"][0] for c in s["info"]["desc"][0]["channels"][0]["channel"]] == raw.ch_names}))
"#;
    let path = common::repo().join("../shared/data/real-meg").join(file);
    let out = Command::new(common::python())
        .args(["-c", check, xdf.to_str().unwrap(), path.to_str().unwrap(), &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{file} recorded while decoding: {v}");
    assert!(v["n"].as_u64().unwrap() > 200 && v["aligned"] == true && v["labels_match"] == true, "{v}");
    assert_eq!(v["format"], "double64", "{v}");
    assert_eq!(v["max_abs_error"].as_f64().unwrap(), 0.0, "recorded values differ from the file's");
}

/// One HTTP/1.1 GET, the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn real_ctf_recording_played_by_mne_lsl_is_inspected_and_decoded() {
    // CTF labels carry the system serial (MLC11-2908); the model says MLC11-4408.
    real_recording(
        "ctf275_comp_raw.fif",
        |l| l.rsplit_once('-').map(|(head, _)| format!("{head}-4408")),
        &[("mag", "T"), ("ref_meg", "T"), ("stim", ""), ("misc", "")],
    );
}

#[test]
fn real_bti_recording_played_by_mne_lsl_is_inspected_and_decoded() {
    // 4D/BTi labels are 'MEG 001'; the model says 'MEG001'.
    real_recording("bti4d_248_raw.fif", |l| Some(l.replace(' ', "")), &[("mag", "T"), ("stim", "")]);
}

#[test]
fn the_fitted_clock_agrees_with_liblsl_dejitter() {
    // liblsl's own inlet post-processing (clocksync + dejitter) is the field's reference
    // for smoothing chunk-stamped timestamps. A source 1% fast, pushed in chunks stamped
    // at push time, read by two inlets: one raw (fitted by the service's SampleClock),
    // one dejittered by liblsl; a counter channel pairs their samples.
    common::init_lsl();
    let name = common::unique("dejitter");
    let sim = SimulatorConfig {
        name: name.clone(),
        source_id: name.clone(),
        layout: simulate::LayoutKind::Ctf272,
        counter_channel: true,
        true_rate: Some(1010.0),
        stamping: Stamping::Push,
        duration_s: Some(25.0),
        wait_for_consumer_s: 10.0,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let sim_thread = std::thread::spawn(move || simulate::run(&sim, &s2).unwrap());
    let info = meg_decoder::lsl::resolve_bypred(&format!("name='{name}'"), 10.0).unwrap().remove(0);
    let open = |dejitter: bool| {
        let mut inlet = meg_decoder::lsl::Inlet::open(&info, 60, false).unwrap();
        if dejitter {
            inlet.set_dejitter().unwrap();
        }
        inlet.open_stream(5.0).unwrap();
        inlet
    };
    let (mut raw, mut smooth) = (open(false), open(true));
    let c = 272;
    let mut clock = meg_decoder::dsp::SampleClock::new(1000.0);
    let mut first_counter: Option<f64> = None;
    let mut ours: HashMap<u64, f64> = HashMap::new();
    let mut theirs: HashMap<u64, f64> = HashMap::new();
    let (mut data, mut ts) = (vec![0.0f32; 512 * c], vec![0.0f64; 512]);
    let start = Instant::now();
    'pull: while start.elapsed() < Duration::from_secs(40) && !sim_thread.is_finished() {
        for (dejittered, inlet) in [(false, &mut raw), (true, &mut smooth)] {
            // The outlet goes away when the simulator ends.
            let Ok(n) = inlet.pull_chunk(&mut data, &mut ts, 0.0) else { break 'pull };
            for i in 0..n {
                let counter = f64::from(data[i * c]);
                if dejittered {
                    theirs.insert(counter as u64, ts[i]);
                } else {
                    let base = *first_counter.get_or_insert(counter);
                    assert_eq!(counter - base, clock.samples() as f64, "raw inlet lost a sample");
                    clock.push(ts[i]);
                    ours.insert(counter as u64, clock.at(counter - base));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sim_thread.join().unwrap();
    // From 10 s on (liblsl's regression needs a few seconds of history), the two clocks
    // agree sample by sample.
    let (mut worst, mut n) = (0.0f64, 0);
    for (k, t) in &ours {
        if *k >= 10_100 {
            if let Some(u) = theirs.get(k) {
                worst = worst.max((t - u).abs());
                n += 1;
            }
        }
    }
    eprintln!("fitted clock vs liblsl dejitter over {n} samples: worst difference {:.3} ms", worst * 1e3);
    assert!(n > 10_000, "{n} samples compared");
    assert!(worst < 0.002, "the fitted clock and liblsl's dejitter differ by {worst} s");
    assert!((clock.rate() - 1010.0).abs() < 1.0, "fitted rate {}", clock.rate());
}

#[test]
fn channel_names_units_and_types_as_real_systems_write_them() {
    use meg_decoder::ingest::ChannelInfoData;
    use meg_decoder::pipeline::{normalize_channel_name, unit_to_si, MappingError};
    let ch = |label: &str, kind: &str, unit: &str| ChannelInfoData {
        label: label.into(),
        kind: kind.into(),
        unit: unit.into(),
    };
    // CTF serials, spaces and case; MNE-LSL's power-of-ten unit codes and MNE's names.
    assert_eq!(normalize_channel_name("MLC11-2908"), "MLC11");
    assert_eq!(normalize_channel_name("MEG 0113"), "MEG0113");
    assert_eq!(normalize_channel_name("BG1-2908"), "BG1");
    assert_eq!(normalize_channel_name("EEG-1"), "EEG-1");
    for (unit, si) in [("0", 1.0), ("-15", 1e-15), ("fT", 1e-15), ("fT/cm", 1e-13), ("T/m", 1.0), ("uV", 1e-6)] {
        assert!((f64::from(unit_to_si(unit)) / si - 1.0).abs() < 1e-6, "{unit}");
    }
    let stream = [
        ch("MLC11-2908", "mag", "0"),
        ch("MLC12-2908", "mag", "-15"),
        ch("BG1-2908", "ref_meg", "0"),
        ch("UPPT001", "stim", "0"),
    ];
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let map = ChannelMap::new(&names(&["MLC12-4408", "MLC11"]), &stream, ChannelMatching::Normalized).unwrap();
    assert_eq!(map.stream_index, vec![1, 0]);
    assert_eq!(map.to_si, vec![1e-15, 1.0]);
    assert_eq!(map.renamed.len(), 2);
    let err = ChannelMap::new(&names(&["MLC11"]), &stream, ChannelMatching::Exact).unwrap_err();
    assert!(matches!(err, MappingError::MissingChannels { .. }), "{err}");
    // A reference or trigger channel is never taken for a brain sensor: by a normalized
    // name it is not a match; by its exact name it is an error that says why.
    let err = ChannelMap::new(&names(&["BG1"]), &stream, ChannelMatching::Normalized).unwrap_err();
    assert!(matches!(err, MappingError::MissingChannels { .. }), "{err}");
    let err = ChannelMap::new(&names(&["UPPT001"]), &stream, ChannelMatching::Normalized).unwrap_err().to_string();
    assert!(err.contains("UPPT001") && err.contains("stim") && err.contains("not a brain sensor"), "{err}");
    // Two sensors that only differ by serial: ambiguous, and said so.
    let two = [ch("MLC11-2908", "mag", "T"), ch("MLC11-4408", "mag", "T")];
    let err = ChannelMap::new(&names(&["MLC11"]), &two, ChannelMatching::Normalized).unwrap_err().to_string();
    assert!(err.contains("several") && err.contains("MLC11-2908") && err.contains("MLC11-4408"), "{err}");
    // Units nobody defined are not guessed.
    for unknown in ["FT", "Gauss", "1", "1e-15", "furlongs"] {
        assert_eq!(meg_decoder::pipeline::unit_factor(unknown), None, "{unknown}");
    }
    for (unit, si) in [("nanotesla", 1e-9), ("n/a", 1.0), ("", 1.0), ("pT", 1e-12)] {
        assert!((f64::from(meg_decoder::pipeline::unit_factor(unit).unwrap()) / si - 1.0).abs() < 1e-6, "{unit}");
    }
}
