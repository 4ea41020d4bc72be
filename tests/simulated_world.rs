//! The v2 ("calibrated") simulated world: spatially correlated brain noise, per-trial
//! latency and amplitude jitter, blinks and heartbeats on their sensors, held-out stimuli,
//! and the checks on the world's files. Each test writes its own small world into a temp
//! dir (a 40-image gallery, hand-made arrays), so nothing here depends on the numbers
//! `models/build_demo.py` calibrates `models/demo` with.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meg_decoder::model::npy;
use meg_decoder::simulate::{
    self, EvokedWorld, LayoutKind, Onset, SensorLayout, SignalSource, SimulatorConfig, StimulusSet,
};

const C: usize = 306;
const IMAGES: usize = 40;
const RATE: f64 = 1000.0;
/// Peak of the test world's evoked response (T) on channel 0.
const PEAK_T: f32 = 1e-12;
/// Latency of that peak after the onset (s).
const PEAK_S: f64 = 0.150;

fn ids() -> Vec<String> {
    (0..IMAGES).map(|i| format!("img_{i:03}")).collect()
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    std::fs::write(path, npy::to_bytes(shape, data)).unwrap();
}

/// A model directory with a 40-image gallery and a world of two latent dims, every image
/// driving both with 1: dim 0 a Gaussian bump peaking `PEAK_T` on channel 0 at `PEAK_S`
/// (sd 20 ms), dim 1 a box of 1e-12 T on channel 1 over the first 50 ms after the onset.
/// `json` adds keys to world.json; `arrays` and `lists` add files to world/.
fn model(
    root: &Path,
    name: &str,
    json: serde_json::Value,
    arrays: &[(&str, Vec<usize>, Vec<f32>)],
    lists: &[(&str, Vec<String>)],
) -> PathBuf {
    let dir = root.join(name);
    let (gallery, world) = (dir.join("gallery"), dir.join("world"));
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::create_dir_all(&world).unwrap();
    std::fs::write(gallery.join("ids.txt"), ids().join("\n") + "\n").unwrap();
    let emb: Vec<f32> = (0..IMAGES * 4).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0 + 0.01).collect();
    write_npy(&gallery.join("embeddings.npy"), &[IMAGES, 4], &emb);
    let mut meta = serde_json::json!({"layout": "neuromag306", "kernel_rate_hz": RATE, "description": "test world"});
    for (k, v) in json.as_object().unwrap() {
        meta[k] = v.clone();
    }
    std::fs::write(world.join("world.json"), meta.to_string()).unwrap();
    let mut patterns = vec![0.0f32; 2 * C];
    patterns[0] = PEAK_T;
    patterns[C + 1] = 1e-12;
    write_npy(&world.join("patterns.npy"), &[2, C], &patterns);
    let k = 500;
    let mut kernels = vec![0.0f32; 2 * k];
    for i in 0..k {
        kernels[i] = (-0.5 * ((i as f64 / RATE - PEAK_S) / 0.020).powi(2)).exp() as f32;
        kernels[k + i] = if i < 50 { 1.0 } else { 0.0 };
    }
    write_npy(&world.join("kernels.npy"), &[2, k], &kernels);
    write_npy(&world.join("features.npy"), &[IMAGES, 2], &vec![1.0; IMAGES * 2]);
    for (file, shape, data) in arrays {
        write_npy(&world.join(file), shape, data);
    }
    for (file, lines) in lists {
        std::fs::write(world.join(file), lines.join("\n") + "\n").unwrap();
    }
    dir
}

fn load(dir: &Path) -> Arc<EvokedWorld> {
    Arc::new(EvokedWorld::load(dir).unwrap())
}

/// Brain noise the way a forward model makes it: each of `s` sources is a smooth bump over
/// the head (sd 30 mm around a random point), so neighbouring sensors see the same
/// sources; 3x a channel's sensor noise scale, random sign.
fn smooth_noise_patterns(s: usize) -> Vec<f32> {
    let layout = SensorLayout::load(LayoutKind::Neuromag306);
    let mut out = Vec::with_capacity(s * C);
    let mut state = 12345u64;
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..s {
        let centre = &layout.sensors[(uniform() * C as f64) as usize % C];
        let (cx, cy) = (f64::from(centre.x), f64::from(centre.y));
        let sign = if uniform() < 0.5 { -1.0 } else { 1.0 };
        for (i, sensor) in layout.sensors.iter().enumerate() {
            let d2 = (f64::from(sensor.x) - cx).powi(2) + (f64::from(sensor.y) - cy).powi(2);
            let w = sign * (-0.5 * d2 / 30.0f64.powi(2)).exp() * 3.0 / (s as f64).sqrt();
            out.push(w as f32 * layout.noise_scale(i));
        }
    }
    out
}

/// Participation ratio tr(C)^2 / tr(C^2) of the channels' correlation matrix: the
/// effective number of independent dimensions (C for independent channels).
fn participation_ratio(rows: &[f32], c: usize) -> f64 {
    let n = rows.len() / c;
    let mut x: Vec<f64> = rows.iter().map(|&v| f64::from(v)).collect();
    for ch in 0..c {
        let mean = (0..n).map(|i| x[i * c + ch]).sum::<f64>() / n as f64;
        let sd = ((0..n).map(|i| (x[i * c + ch] - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        (0..n).for_each(|i| x[i * c + ch] = (x[i * c + ch] - mean) / sd);
    }
    let mut cov = vec![0.0f64; c * c];
    for row in x.chunks_exact(c) {
        for (a, &va) in row.iter().enumerate() {
            cov[a * c..(a + 1) * c].iter_mut().zip(row).for_each(|(o, &vb)| *o += va * vb);
        }
    }
    cov.iter_mut().for_each(|v| *v /= n as f64);
    let trace: f64 = (0..c).map(|i| cov[i * c + i]).sum();
    let trace2: f64 = cov.iter().map(|v| v * v).sum();
    trace * trace / trace2
}

/// Brain noise mixed through smooth patterns makes the sensors share a few dimensions;
/// the same sources each seen by one sensor span nearly all of them (each source is its
/// own pink process). The brain noise is isolated exactly: the world without
/// noise_patterns.npy renders the rest of the noise sample for sample (its own random
/// generator), so the difference is the brain noise alone. (The total noise is no test of
/// independence: the per-channel broadband noise of the v1 recipe carries less power
/// than the line noise and posterior alpha every channel shares, so even v1 noise spans
/// only a few dimensions; the test prints those figures too.)
#[test]
fn brain_noise_is_spatially_correlated_and_each_source_is_its_own_process() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = SensorLayout::load(LayoutKind::Neuromag306);
    let identity: Vec<f32> = (0..C * C).map(|i| if i / C == i % C { layout.noise_scale(i % C) } else { 0.0 }).collect();
    let keys = serde_json::json!({"sensor_pink": 1.0});
    let smooth = load(&model(
        tmp.path(),
        "smooth",
        keys.clone(),
        &[("noise_patterns.npy", vec![200, C], smooth_noise_patterns(200))],
        &[],
    ));
    let single = load(&model(tmp.path(), "single", keys.clone(), &[("noise_patterns.npy", vec![C, C], identity)], &[]));
    let none = load(&model(tmp.path(), "none", keys, &[], &[]));
    let v1 = load(&model(tmp.path(), "v1", serde_json::json!({}), &[], &[]));
    let render = |world: Option<Arc<EvokedWorld>>| {
        // Noise only: the responses are switched off.
        let cfg = SimulatorConfig { world, response_gain: 0.0, seed: 3, srate: RATE, ..Default::default() };
        simulate::render(&cfg, 20.0, 0.0).unwrap().0
    };
    let rest = render(Some(none));
    let brain_of = |w: &Arc<EvokedWorld>| {
        let total = render(Some(w.clone()));
        let brain: Vec<f32> = total.iter().zip(&rest).map(|(a, b)| a - b).collect();
        (participation_ratio(&brain, C), participation_ratio(&total, C))
    };
    let (smooth_pr, smooth_total) = brain_of(&smooth);
    let (single_pr, _) = brain_of(&single);
    let (v1_total, no_world) = (participation_ratio(&render(Some(v1)), C), participation_ratio(&render(None), C));
    eprintln!(
        "participation ratio over {C} channels: brain noise through 200 smooth patterns {smooth_pr:.1}, through one \
         sensor each {single_pr:.1}; total noise: v2 world {smooth_total:.1}, v1 world {v1_total:.1}, no world {no_world:.1}"
    );
    assert!(smooth_pr < C as f64 / 5.0, "brain noise spans {smooth_pr:.1} dimensions of {C}: not spatially correlated");
    assert!(single_pr > C as f64 / 2.0, "306 independent sources span only {single_pr:.1} dimensions of {C}");
    assert_eq!(v1_total, no_world, "a v1 world must not change the noise");
}

/// Peak latency (s, after the onset) and amplitude (relative to the world's) of each
/// trial's response on channel 0, noise-free.
fn trial_peaks(rows: &[f32], markers: &[meg_decoder::ingest::Marker], t0: f64) -> Vec<(f64, f64)> {
    markers
        .iter()
        .map(|m| {
            let o = ((m.timestamp - t0) * RATE).round() as usize;
            let x: Vec<f32> = (o - 100..o + 400).map(|i| rows[i * C]).collect();
            let k = (0..x.len()).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap();
            ((k as f64 - 100.0) / RATE - PEAK_S, f64::from(x[k] / PEAK_T))
        })
        .collect()
}

fn sd(v: &[f64]) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Each trial's response is delayed by latency_jitter_s * z (|z| <= 3) and scaled by a
/// log-normal factor of mean 1; the markers keep the nominal onset; without jitter every
/// trial is the same; the responses do not depend on how the stream is chunked, even
/// one that starts before its onset.
#[test]
fn trials_jitter_in_latency_and_amplitude_around_a_fixed_onset() {
    let tmp = tempfile::tempdir().unwrap();
    let jittered = load(&model(
        tmp.path(),
        "jitter",
        serde_json::json!({"latency_jitter_s": 0.025, "amplitude_jitter": 0.35}),
        &[],
        &[],
    ));
    let steady = load(&model(tmp.path(), "steady", serde_json::json!({}), &[], &[]));
    let cfg = |w: &Arc<EvokedWorld>| SimulatorConfig {
        world: Some(w.clone()),
        noise_level: 0.0,
        isi_s: 1.0,
        isi_jitter_s: 0.0,
        seed: 11,
        srate: RATE,
        ..Default::default()
    };
    let (rows, _, markers) = simulate::render(&cfg(&jittered), 61.0, 5.0).unwrap();
    let (steady_rows, _, steady_markers) = simulate::render(&cfg(&steady), 61.0, 5.0).unwrap();
    assert_eq!(markers.len(), 60);
    assert_eq!(markers, steady_markers, "the jitter is the brain's: onsets and stimuli stay as without it");

    let peaks = trial_peaks(&rows, &markers, 5.0);
    let latency: Vec<f64> = peaks.iter().map(|p| p.0).collect();
    let log_amp: Vec<f64> = peaks.iter().map(|p| p.1.ln()).collect();
    let worst = latency.iter().fold(0.0f64, |a, &l| a.max(l.abs()));
    eprintln!(
        "over {} trials: latency sd {:.1} ms (max {:.1} ms), log amplitude sd {:.3}",
        peaks.len(),
        1e3 * sd(&latency),
        1e3 * worst,
        sd(&log_amp)
    );
    assert!((0.018..0.033).contains(&sd(&latency)), "latency sd {} s, expected about 0.025", sd(&latency));
    assert!(worst <= 3.0 * 0.025 + 0.001, "a latency of {worst} s is beyond 3 sd");
    assert!((0.26..0.45).contains(&sd(&log_amp)), "log amplitude sd {}, expected about 0.35", sd(&log_amp));
    let mean_amp = peaks.iter().map(|p| p.1).sum::<f64>() / peaks.len() as f64;
    assert!((0.8..1.25).contains(&mean_amp), "mean amplitude {mean_amp}, expected about 1");

    for (i, (l, a)) in trial_peaks(&steady_rows, &steady_markers, 5.0).into_iter().enumerate() {
        assert!(l.abs() < 0.5e-3 && (a - 1.0).abs() < 1e-4, "trial {i} without jitter: latency {l} s, amplitude {a}");
    }

    // Live, the source runs chunk by chunk: the same samples, including the early box of
    // trials whose response starts before the onset's chunk.
    let mut src = SignalSource::new(&cfg(&jittered)).unwrap();
    let mut chunked = vec![0.0f32; rows.len()];
    let mut onsets: Vec<Onset> = Vec::new();
    for part in chunked.chunks_mut(7 * C) {
        src.next_chunk(part, part.len() / C, &mut onsets);
    }
    assert_eq!(onsets.len(), markers.len());
    let early = onsets.iter().filter(|o| rows[(o.sample as usize - 1) * C + 1] != 0.0).count();
    assert!(early > 10, "only {early} of 60 responses start before their onset");
    assert!(chunked == rows, "chunk by chunk differs from one pass");
}

/// `--stimuli held-out` shows only held_out.txt's images, each once per cycle;
/// `training` only the others minus validation.txt; both refuse a world without
/// held_out.txt.
#[test]
fn held_out_and_training_sessions_show_only_their_images() {
    let tmp = tempfile::tempdir().unwrap();
    let all = ids();
    let held: Vec<String> = all[..8].to_vec();
    let validation: Vec<String> = all[8..12].to_vec();
    let v2 = load(&model(
        tmp.path(),
        "v2",
        serde_json::json!({}),
        &[],
        &[("held_out.txt", held.clone()), ("validation.txt", validation.clone())],
    ));
    let shown = |set: StimulusSet| {
        let cfg = SimulatorConfig {
            world: Some(v2.clone()),
            stimuli: set,
            isi_s: 0.25,
            isi_jitter_s: 0.0,
            noise_level: 0.0,
            srate: 200.0,
            ..Default::default()
        };
        let (_, _, markers) = simulate::render(&cfg, 30.0, 0.0).unwrap();
        markers.into_iter().map(|m| m.text).collect::<Vec<String>>()
    };
    let h = shown(StimulusSet::HeldOut);
    assert!(h.len() > 100);
    assert!(h.iter().all(|id| held.contains(id)), "held-out session showed {h:?}");
    for cycle in h.chunks_exact(8) {
        let mut c = cycle.to_vec();
        c.sort();
        assert_eq!(c, held, "each held-out image once per cycle");
    }
    let t = shown(StimulusSet::Training);
    assert!(t.iter().all(|id| !held.contains(id) && !validation.contains(id)), "training session showed {t:?}");
    let mut distinct = t.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), IMAGES - 12);
    assert_eq!(shown(StimulusSet::All).len(), h.len());

    let v1 = load(&model(tmp.path(), "v1", serde_json::json!({}), &[], &[]));
    for set in [StimulusSet::HeldOut, StimulusSet::Training] {
        let cfg = SimulatorConfig { world: Some(v1.clone()), stimuli: set, ..Default::default() };
        let err = SignalSource::new(&cfg).err().expect("a v1 world has no held-out images").to_string();
        assert!(err.contains("held_out.txt") && err.contains("--stimuli all"), "{err}");
    }
    let err = SignalSource::new(&SimulatorConfig { stimuli: StimulusSet::HeldOut, ..Default::default() })
        .err()
        .expect("no world, no held-out images")
        .to_string();
    assert!(err.contains("--model"), "{err}");
}

/// The CLI: `--isi` defaults to the world's isi_s, and `--stimuli held-out` on a v1 world
/// stops with the reason.
#[test]
fn the_simulate_cli_takes_the_worlds_onset_asynchrony_and_refuses_held_out_without_a_list() {
    let tmp = tempfile::tempdir().unwrap();
    let held: Vec<String> = ids()[..5].to_vec();
    let v2 = model(
        tmp.path(),
        "v2",
        serde_json::json!({"isi_s": 0.7, "isi_jitter_s": 0.05}),
        &[],
        &[("held_out.txt", held)],
    );
    let v1 = model(tmp.path(), "v1", serde_json::json!({}), &[], &[]);
    let name = common::unique("simworld");
    let out = common::bin()
        .env("MEG_DECODER_LOG", "info")
        .args(["simulate", "--name", &name, "--source-id", &name, "--duration", "0.2", "--stimuli", "held-out"])
        .arg("--model")
        .arg(&v2)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("stimuli: held-out, onsets every 0.7 +- 0.05 s"), "{log}");
    let out = common::bin()
        .args(["simulate", "--name", &name, "--duration", "0.2", "--stimuli", "training", "--isi", "2"])
        .arg("--model")
        .arg(&v1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("held_out.txt"), "{err}");
}

/// Blinks land on the blink pattern's (frontal) channels and heartbeats on the cardiac
/// pattern's (left lateral) ones, at their rates, and nothing else changes.
#[test]
fn blinks_and_heartbeats_appear_on_their_sensors() {
    let layout = SensorLayout::load(LayoutKind::Neuromag306);
    let frontal: Vec<f32> = layout.sensors.iter().map(|s| if s.y > 50.0 { 1e-11 } else { 0.0 }).collect();
    let lateral: Vec<f32> = layout.sensors.iter().map(|s| if s.x < -60.0 { 2e-12 } else { 0.0 }).collect();
    let tmp = tempfile::tempdir().unwrap();
    let keys = serde_json::json!({"blink_rate_hz": 0.5, "blink_duration_s": 0.25, "heart_rate_hz": 1.2, "heart_rate_jitter": 0.05});
    let with = load(&model(
        tmp.path(),
        "artefacts",
        keys,
        &[("blink_pattern.npy", vec![C], frontal.clone()), ("cardiac_pattern.npy", vec![C], lateral.clone())],
        &[],
    ));
    let without = load(&model(tmp.path(), "plain", serde_json::json!({}), &[], &[]));
    let render = |w: &Arc<EvokedWorld>| {
        let cfg =
            SimulatorConfig { world: Some(w.clone()), response_gain: 0.0, seed: 5, srate: RATE, ..Default::default() };
        simulate::render(&cfg, 40.0, 0.0).unwrap().0
    };
    let (a, b) = (render(&with), render(&without));
    let diff = |ch: usize| -> Vec<f32> { (0..a.len() / C).map(|i| a[i * C + ch] - b[i * C + ch]).collect() };
    let quiet = (0..C).find(|&c| frontal[c] == 0.0 && lateral[c] == 0.0).unwrap();
    assert!(diff(quiet).iter().all(|&d| d.abs() < 1e-18), "a channel outside both patterns changed");

    // Events: runs of samples above half the pattern's peak.
    let events = |x: &[f32], level: f32| x.windows(2).filter(|w| w[0] < level && w[1] >= level).count();
    let f = (0..C).find(|&c| frontal[c] > 0.0 && lateral[c] == 0.0).unwrap();
    let blink = diff(f);
    let peak = blink.iter().fold(0.0f32, |m, &v| m.max(v));
    let blinks = events(&blink, 0.5 * frontal[f]);
    assert!((peak / frontal[f] - 1.0).abs() < 0.1, "blink peak {peak} against the pattern's {}", frontal[f]);
    let l = (0..C).find(|&c| lateral[c] > 0.0 && frontal[c] == 0.0).unwrap();
    let heart = diff(l);
    let beats = events(&heart, 0.5 * lateral[l]);
    eprintln!("40 s: {blinks} blinks on {}, {beats} heartbeats on {}", layout.sensors[f].name, layout.sensors[l].name);
    // 0.5 Hz with at least 0.5 s between blinks: about 17 in 40 s; heartbeats 48.
    assert!((8..=30).contains(&blinks), "{blinks} blinks in 40 s at 0.5 Hz");
    assert!((44..=52).contains(&beats), "{beats} heartbeats in 40 s at 1.2 Hz");
    // They are noise: noise level 0 leaves nothing.
    let cfg = SimulatorConfig { world: Some(with), response_gain: 0.0, noise_level: 0.0, ..Default::default() };
    assert!(simulate::render(&cfg, 5.0, 0.0).unwrap().0.iter().all(|&v| v == 0.0));
}

/// A v2 world's files must agree with each other, the gallery and the layout; each
/// mistake is named.
#[test]
fn a_v2_worlds_files_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |name: &str,
               json: serde_json::Value,
               arrays: &[(&str, Vec<usize>, Vec<f32>)],
               lists: &[(&str, Vec<String>)]| {
        EvokedWorld::load(&model(tmp.path(), name, json, arrays, lists)).expect_err(name).to_string()
    };
    let e = err("shape", serde_json::json!({}), &[("noise_patterns.npy", vec![3, 300], vec![0.0; 900])], &[]);
    assert!(e.contains("[sources, 306]"), "{e}");
    let e = err(
        "count",
        serde_json::json!({"brain_noise_sources": 4}),
        &[("noise_patterns.npy", vec![3, C], vec![0.0; 3 * C])],
        &[],
    );
    assert!(e.contains("brain_noise_sources is 4") && e.contains("3 rows"), "{e}");
    let e = err("blink", serde_json::json!({}), &[("blink_pattern.npy", vec![C], vec![0.0; C])], &[]);
    assert!(e.contains("blink_rate_hz"), "{e}");
    let e = err("heart", serde_json::json!({"heart_rate_hz": 1.0}), &[], &[]);
    assert!(e.contains("cardiac_pattern.npy"), "{e}");
    let e = err(
        "cshape",
        serde_json::json!({"heart_rate_hz": 1.0}),
        &[("cardiac_pattern.npy", vec![2, C], vec![0.0; 2 * C])],
        &[],
    );
    assert!(e.contains("expected [306]"), "{e}");
    let e = err("unknown", serde_json::json!({}), &[], &[("held_out.txt", vec!["img_001".into(), "cat_7".into()])]);
    assert!(e.contains("'cat_7' is not in the gallery") && e.contains("held_out.txt:2"), "{e}");
    let e = err(
        "overlap",
        serde_json::json!({}),
        &[],
        &[("held_out.txt", vec!["img_001".into()]), ("validation.txt", vec!["img_001".into()])],
    );
    assert!(e.contains("share 1 ids"), "{e}");
    let e = err("range", serde_json::json!({"latency_jitter_s": -0.01}), &[], &[]);
    assert!(e.contains("latency_jitter_s"), "{e}");
    // Negligible values (as float32 copies of float64 forward models carry) become 0:
    // subnormal arithmetic per sample would cost ~100x.
    let mut tiny = vec![1e-12f32; 2 * C];
    (tiny[0], tiny[1], tiny[2]) = (1e-40, 1e-25, -3e-39);
    let mut tiny_kernels = vec![1.0f32; 2 * 500];
    tiny_kernels[7] = 1e-41;
    let w = load(&model(
        tmp.path(),
        "tiny",
        serde_json::json!({}),
        &[("noise_patterns.npy", vec![2, C], tiny.clone()), ("kernels.npy", vec![2, 500], tiny_kernels)],
        &[],
    ));
    assert_eq!(&w.noise.source_patterns[..4], &[0.0, 0.0, 0.0, 1e-12]);
    assert_eq!(w.noise.source_patterns[3..], tiny[3..]);
    assert!(w.kernels[7] == 0.0 && w.kernels[8] == 1.0);
    // Absent keys are v1 behaviour.
    let w = load(&model(tmp.path(), "v1", serde_json::json!({}), &[], &[]));
    assert_eq!((w.isi_s, w.isi_jitter_s, w.latency_jitter_s, w.amplitude_jitter), (1.5, 0.2, 0.0, 0.0));
    assert_eq!(w.noise, simulate::NoiseModel::default());
    assert!(w.held_out.is_none() && w.validation.is_empty());
}

/// The committed demo world (what `make demo` and the bundled models' training use) is
/// the calibrated one: its background brain activity goes through 200 smooth fields, so
/// its spatial covariance (sources are independent with equal variance: P^T P) spans few
/// dimensions of the 306; trials jitter in latency and amplitude; stimuli come every
/// 1.5 +- 0.2 s; held-out and validation images are listed apart.
#[test]
fn the_committed_demo_world_is_the_calibrated_one() {
    let dir = common::repo().join("models/demo");
    let p = npy::read(&dir.join("world/noise_patterns.npy")).unwrap();
    let (s, c) = (p.shape[0], p.shape[1]);
    assert!(s >= 100 && c == C, "noise_patterns.npy has shape {:?}", p.shape);
    let mut cov = vec![0.0f64; c * c];
    for src in p.data.chunks_exact(c) {
        for (a, &va) in src.iter().enumerate() {
            cov[a * c..(a + 1) * c].iter_mut().zip(src).for_each(|(o, &vb)| *o += f64::from(va) * f64::from(vb));
        }
    }
    let d: Vec<f64> = (0..c).map(|i| cov[i * c + i].sqrt()).collect();
    let corr: Vec<f64> = (0..c * c).map(|k| cov[k] / (d[k / c] * d[k % c])).collect();
    let trace2: f64 = corr.iter().map(|v| v * v).sum();
    let pr = (c * c) as f64 / trace2;
    eprintln!("committed world: brain noise over {s} sources spans {pr:.1} effective dimensions of {c}");
    assert!(pr < c as f64 / 5.0, "the committed world's brain noise spans {pr:.1} of {c} dimensions: nearly flat");
    let w = EvokedWorld::load(&dir).unwrap();
    assert!(w.latency_jitter_s >= 0.01 && w.amplitude_jitter >= 0.1, "no trial-to-trial jitter");
    assert!(
        (w.isi_s - 1.5).abs() < 1e-9 && (w.isi_jitter_s - 0.2).abs() < 1e-9,
        "SOA {} +- {}",
        w.isi_s,
        w.isi_jitter_s
    );
    let held_out = w.held_out.as_ref().expect("held_out.txt");
    assert_eq!((held_out.len(), w.validation.len(), w.stimuli.len()), (200, 100, 1000));
}
