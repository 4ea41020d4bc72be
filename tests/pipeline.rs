//! The decoding pipeline with the real demo model through ONNX Runtime: chunking
//! invariance, decoding accuracy on simulated stimuli, the committed models' reference
//! outputs, and each bad input's error.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meg_decoder::ingest::Marker;
use meg_decoder::model::{npy, Encoder, EncoderOptions, Gallery, ModelDir, ModelError};
use meg_decoder::pipeline::{
    DecodeMode, DecoderCore, Decoding, NonFinitePolicy, PipelineConfig, PipelineError, SkipReason,
};
use meg_decoder::simulate::{self, EvokedWorld, LayoutKind, SimulatorConfig};

fn demo() -> PathBuf {
    common::repo().join("models/demo")
}

fn encoder() -> Encoder {
    Encoder::load(&demo().join("encoder.onnx"), &EncoderOptions::default()).unwrap()
}

fn brain_encoder() -> Encoder {
    Encoder::load(&common::repo().join("models/demo-brain/encoder.onnx"), &EncoderOptions::default()).unwrap()
}

fn gallery() -> Arc<Gallery> {
    Arc::new(Gallery::load(&demo().join("gallery")).unwrap())
}

fn sim_config(seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        world: Some(Arc::new(EvokedWorld::load(&demo()).unwrap())),
        seed,
        srate: 1000.0,
        // More trials per rendered second than THINGS-MEG's 1.5 s (the default).
        isi_s: 1.0,
        ..Default::default()
    }
}

/// Evoked gain of the accuracy probes below. The demo world is calibrated so that single
/// trials are hard (models/demo/REPORT.md: the ridge baseline's single-trial top-5 among
/// the 200 held-out images is 18 %, chance 2.5 %; among the service's whole gallery of
/// 1000 it is lower still), too hard for 40 trials to tell a working chain from a broken
/// one. At 8x the evoked gain the same model names about a quarter to a third of single
/// held-out trials in its top 5 among all 1000 images (chance 0.5 %), so a train/serve
/// mismatch (a filter, the resampler, the scaler, an offset of the window) shows as a
/// collapse to chance. A probe of the chain, not an accuracy figure.
const PROBE_GAIN: f32 = 8.0;

/// The demo world showing only its held-out images (never trained on) at [`PROBE_GAIN`].
fn probe_config(seed: u64) -> SimulatorConfig {
    SimulatorConfig { response_gain: PROBE_GAIN, stimuli: simulate::StimulusSet::HeldOut, ..sim_config(seed) }
}

/// Runs the core with `enc` over `rows` in chunks of `chunk` samples.
fn decode_with(
    enc: Encoder,
    cfg: &SimulatorConfig,
    rows: &[f32],
    ts: &[f64],
    markers: &[Marker],
    chunk: usize,
    pc: PipelineConfig,
) -> (Vec<Decoding>, DecoderCore) {
    let mut core = DecoderCore::new(enc, Some(gallery()), &simulate::stream_description(cfg), pc).unwrap();
    let out = feed(&mut core, rows, ts, markers, chunk).into_iter().map(|(d, _)| d).collect();
    (out, core)
}

/// Feeds `rows` to `core` in chunks of `chunk` samples, markers as their onset is
/// sampled (as from a live marker stream): each decoding with the number of samples fed
/// when it was emitted.
fn feed(core: &mut DecoderCore, rows: &[f32], ts: &[f64], markers: &[Marker], chunk: usize) -> Vec<(Decoding, usize)> {
    let c = 306;
    let seg = vec![0u32; ts.len()];
    let mut out = Vec::new();
    let mut next_marker = 0;
    for start in (0..ts.len()).step_by(chunk) {
        let end = (start + chunk).min(ts.len());
        while next_marker < markers.len() && markers[next_marker].timestamp <= ts[end - 1] {
            core.push_marker(markers[next_marker].clone());
            next_marker += 1;
        }
        core.push_samples(&rows[start * c..end * c], &ts[start..end], &seg[start..end], &|| 0.0, &mut |d| {
            out.push((d, end))
        });
    }
    out
}

/// Progressive decoding with models/demo's stages (`stages/s250`: -0.5..+0.25 s,
/// `stages/s500`: -0.5..+0.5 s; models/build_stages.py): every marker is decoded three
/// times, stage 1 first and as soon as its window is in (about 0.3 s of stream after the
/// onset: the window and the resampler's 50 ms look-ahead), the model's own window last;
/// all three carry the marker and say their stage; the stages decode the shown images
/// (at the probe gain) far above chance. A stage that does not share the model's
/// preprocessing is refused.
#[test]
fn progressive_stages_decode_each_marker_first_on_the_shortest_window() {
    let cfg = probe_config(14);
    let (rows, ts, markers) = simulate::render(&cfg, 42.0, 50.0).unwrap();
    let dir = ModelDir::open(&demo()).unwrap();
    let names: Vec<&str> = dir.stages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["s250", "s500"]);
    let load = || dir.load_companions(&EncoderOptions::default()).unwrap().stages;
    let pc = PipelineConfig { hop_s: None, ..Default::default() };
    let desc = simulate::stream_description(&cfg);
    let mut core =
        DecoderCore::new(encoder(), Some(gallery()), &desc, pc.clone()).unwrap().with_stages(load()).unwrap();
    let ends: Vec<f64> = core.stages().iter().map(|(_, e)| *e).collect();
    assert!((ends[0] - 0.25).abs() < 1e-9 && (ends[1] - 0.5).abs() < 1e-9, "{ends:?}");
    let out = feed(&mut core, &rows, &ts, &markers, 10);
    let mut by_marker: std::collections::BTreeMap<String, Vec<&(Decoding, usize)>> = Default::default();
    for o in &out {
        let m = o.0.marker.as_ref().expect("event-locked only");
        by_marker.entry(format!("{:.6} {}", m.timestamp, m.text)).or_default().push(o);
    }
    let complete: Vec<_> = by_marker.values().filter(|v| v.len() == 3).collect();
    assert!(complete.len() >= 35, "{} markers decoded at all 3 stages of {}", complete.len(), by_marker.len());
    for v in &complete {
        let stages: Vec<(u32, u32)> = v.iter().map(|(d, _)| (d.stage, d.stages)).collect();
        assert_eq!(stages, [(1, 3), (2, 3), (3, 3)], "stages in emission order");
        let onset = v[0].0.marker.as_ref().unwrap().timestamp;
        // Stage 1 is emitted once its window (to +0.25 s) and the resampler's look-ahead
        // are in: in the first 10-sample chunk after onset + 0.30 s, long before the model's window.
        let fed_at = |i: usize| ts[v[i].1 - 1] - onset;
        assert!(fed_at(0) > 0.25 && fed_at(0) < 0.32, "stage 1 emitted {:.3} s after the onset", fed_at(0));
        assert!(fed_at(1) > 0.5 && fed_at(1) < 0.57, "stage 2 emitted {:.3} s after the onset", fed_at(1));
        assert!(fed_at(2) > 1.0, "stage 3 emitted {:.3} s after the onset", fed_at(2));
        for (d, _) in v.iter() {
            assert_eq!(d.onset, onset);
            assert!((d.window_start - (onset - 0.5)).abs() < 0.005);
        }
        assert!(
            (v[0].0.window_end - (onset + 0.25)).abs() < 0.005 && (v[2].0.window_end - (onset + 1.0)).abs() < 0.005
        );
    }
    let hits = |stage: u32| {
        let s: Vec<&Decoding> = out.iter().map(|(d, _)| d).filter(|d| d.stage == stage).collect();
        let n = s
            .iter()
            .filter(|d| d.top_k.iter().take(5).any(|h| Some(&h.image_id) == d.marker.as_ref().map(|m| &m.text)))
            .count();
        n as f64 / s.len() as f64
    };
    eprintln!(
        "top-5 among 1000 at {PROBE_GAIN}x gain over {} markers: stage 1 {:.2}, stage 2 {:.2}, stage 3 {:.2} (chance 0.005)",
        complete.len(),
        hits(1),
        hits(2),
        hits(3)
    );
    assert!(hits(1) > 0.1 && hits(3) > 0.15, "stage 1 {}, stage 3 {}", hits(1), hits(3));

    // The proto says what the stage fields mean to a subscriber.
    let proto = std::fs::read_to_string(common::repo().join("proto/megdecoder/v1/decoder.proto")).unwrap();
    let doc_before = |field: &str| {
        let at = proto.find(field).unwrap_or_else(|| panic!("{field} not in the proto"));
        proto[..at].trim_end().lines().last().is_some_and(|l| l.trim_start().starts_with("//"))
    };
    assert!(doc_before("uint32 stage = 19;") && doc_before("uint32 stages = 20;"), "undocumented stage fields");
    assert!(proto.contains("replaces the earlier guess"));

    // Without event-locked decoding the stages decode nothing either.
    let continuous_only = PipelineConfig { hop_s: Some(0.5), event_locked: false, ..Default::default() };
    let mut core =
        DecoderCore::new(encoder(), Some(gallery()), &desc, continuous_only).unwrap().with_stages(load()).unwrap();
    let out = feed(&mut core, &rows[..306 * 20_000], &ts[..20_000], &markers, 100);
    assert!(
        !out.is_empty() && out.iter().all(|(d, _)| d.mode == DecodeMode::Continuous && d.stage == 0 && d.stages == 0)
    );

    // Another model with the same window as this one cannot be its stage: refused, with the reason.
    let brain = vec![("other".to_string(), brain_encoder())];
    let e = DecoderCore::new(encoder(), Some(gallery()), &desc, pc).unwrap().with_stages(brain).err().unwrap();
    assert!(e.to_string().contains("stage 'other'") && e.to_string().contains("shorter window"), "{e}");
}

/// Continuous decoding with models/demo's encoder for continuous use
/// (`continuous/encoder.onnx`, models/build_continuous.py: trained on every position of a
/// short window, labelled with the image on screen): every continuous decoding comes from
/// it, on its window, and says which instant's on-screen image it stands for
/// (`on_screen_at`, onset 0); event-locked decodings keep the model's window and onset.
/// At the probe gain its guesses name the image on screen far above chance while the window
/// holds the response to that image's onset. Without it, continuous decodings come from the
/// onset-locked model and carry their implied onset instead. An encoder locked to onsets is
/// refused as the continuous one.
#[test]
fn continuous_decodings_come_from_the_encoder_trained_for_continuous_use() {
    let cfg = probe_config(15);
    let (rows, ts, markers) = simulate::render(&cfg, 120.0, 70.0).unwrap();
    let dir = ModelDir::open(&demo()).unwrap();
    let companions = dir.load_companions(&EncoderOptions::default()).unwrap();
    let cont = companions.continuous.as_ref().expect("models/demo ships continuous/encoder.onnx").contract().clone();
    assert_eq!(cont.target, meg_decoder::model::Target::OnScreen);
    let pc = PipelineConfig { hop_s: Some(0.025), ..Default::default() };
    let desc = simulate::stream_description(&cfg);
    let mut core = DecoderCore::new(encoder(), Some(gallery()), &desc, pc.clone())
        .unwrap()
        .with_continuous(companions.continuous)
        .unwrap();
    let out: Vec<Decoding> = feed(&mut core, &rows, &ts, &markers, 10).into_iter().map(|(d, _)| d).collect();
    let (continuous, locked): (Vec<&Decoding>, Vec<&Decoding>) =
        out.iter().partition(|d| d.mode == DecodeMode::Continuous);
    assert!(continuous.len() > 4000 && locked.len() > 90, "{} continuous, {} locked", continuous.len(), locked.len());
    let span = |d: &Decoding| d.window_end - d.window_start;
    for d in &continuous {
        let at = d.on_screen_at.expect("a continuous decoding by the continuous encoder says on_screen_at");
        assert!((at - (d.window_start - cont.window_start_s)).abs() < 1e-9 && d.onset == 0.0);
        assert!((span(d) - (cont.window_samples as f64 - 1.0) / 120.0).abs() < 0.003, "window {:.3} s", span(d));
    }
    for d in &locked {
        assert!(d.on_screen_at.is_none() && d.onset == d.marker.as_ref().unwrap().timestamp);
        assert!((span(d) - 1.5).abs() < 0.003, "event-locked window {:.3} s", span(d));
    }
    // The image on screen at an instant: the last marker at or before it.
    let on_screen = |t: f64| markers.iter().rev().find(|m| m.timestamp <= t).map(|m| m.text.as_str());
    let rate = |v: &[&Decoding], instant: &dyn Fn(&Decoding) -> f64| {
        let scored: Vec<bool> = v
            .iter()
            .filter_map(|d| on_screen(instant(d)).map(|img| d.top_k.iter().take(5).any(|h| h.image_id == img)))
            .collect();
        scored.iter().filter(|&&h| h).count() as f64 / scored.len() as f64
    };
    let trained = rate(&continuous, &|d| d.on_screen_at.unwrap());
    // Right after an onset its window holds the response to the image on screen.
    let early: Vec<&Decoding> = continuous
        .iter()
        .copied()
        .filter(|d| {
            let t = d.on_screen_at.unwrap();
            markers.iter().rev().find(|m| m.timestamp <= t).is_some_and(|m| t - m.timestamp < 0.1)
        })
        .collect();
    let early_rate = rate(&early, &|d| d.on_screen_at.unwrap());
    // The same stream through the onset-locked model alone, every hop.
    let (plain, _) =
        decode_with(encoder(), &cfg, &rows, &ts, &markers, 10, PipelineConfig { event_locked: false, ..pc.clone() });
    let plain: Vec<&Decoding> = plain.iter().collect();
    assert!(plain.iter().all(|d| d.on_screen_at.is_none() && (d.onset - (d.window_start + 0.5)).abs() < 1e-9));
    let onset_locked = rate(&plain, &|d| d.onset);
    eprintln!(
        "image on screen in the top 5 among 1000 at {PROBE_GAIN}x gain: continuous encoder {trained:.3} ({} windows; \
         {early_rate:.3} of {} in the first 100 ms after an onset), onset-locked model every hop {onset_locked:.3} \
         (chance 0.005)",
        continuous.len(),
        early.len()
    );
    // A broken chain (a window off by a few samples, another scaler or baseline) falls to
    // chance; models/demo/REPORT.md has the accuracy at the world's own gain.
    assert!(early.len() > 300 && early_rate > 0.025, "{early_rate:.3} of {} early windows", early.len());
    assert!(trained > 0.01, "continuous encoder {trained:.3} over the whole stream");

    // The continuous encoder is part of the model's name: decodings say which made them.
    assert!(out.iter().all(|d| d.model == *core.model_id()) && core.model_id().starts_with("demo-linear-v2@"));
    let plain_core = DecoderCore::new(encoder(), Some(gallery()), &desc, pc.clone()).unwrap();
    assert_ne!(core.model_id(), plain_core.model_id());
    let full = DecoderCore::new(encoder(), Some(gallery()), &desc, pc.clone())
        .unwrap()
        .with_companions(dir.load_companions(&EncoderOptions::default()).unwrap())
        .unwrap();
    assert_eq!(full.model_digest(), dir.digest().unwrap(), "the digest SIGHUP compares");
    assert!(![plain_core.model_id(), core.model_id()].contains(&full.model_id()));
    // With continuous decoding off it is not used (nor checked against the buffer).
    let off = PipelineConfig { hop_s: None, ..pc.clone() };
    let enc = Encoder::load(dir.continuous.as_ref().unwrap(), &EncoderOptions::default()).unwrap();
    let core_off =
        DecoderCore::new(encoder(), Some(gallery()), &desc, off).unwrap().with_continuous(Some(enc)).unwrap();
    assert!(core_off.continuous_contract().is_none() && core_off.model_id() == plain_core.model_id());
    // Nor when the lab asks for the onset-locked encoder (serve --no-continuous-encoder).
    let onset_locked = PipelineConfig { continuous_encoder: false, ..pc.clone() };
    let enc = Encoder::load(dir.continuous.as_ref().unwrap(), &EncoderOptions::default()).unwrap();
    let core_ol =
        DecoderCore::new(encoder(), Some(gallery()), &desc, onset_locked).unwrap().with_continuous(Some(enc)).unwrap();
    assert!(core_ol.continuous_contract().is_none() && core_ol.model_id() == plain_core.model_id());

    // An encoder locked to onsets is not a continuous one, and an encoder for continuous
    // use is not a model's own: refused, with the reason.
    let e = DecoderCore::new(encoder(), Some(gallery()), &desc, PipelineConfig::default())
        .unwrap()
        .with_continuous(Some(encoder()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("target = on_screen"), "{e}");
    let enc = Encoder::load(dir.continuous.as_ref().unwrap(), &EncoderOptions::default()).unwrap();
    let e = DecoderCore::new(enc, Some(gallery()), &desc, PipelineConfig::default()).err().unwrap();
    assert!(e.to_string().contains("continuous/encoder.onnx next to"), "{e}");
}

/// The committed generator (models/build_generator.py, a convolutional decoder) draws the
/// image an embedding stands for: from each held-out image's own embedding (never trained
/// on) a 64x64 picture whose pixels correlate with the image's (models/demo/REPORT.md: 0.9
/// on average; the linear generator it replaced: 0.6; a grey blob: 0).
#[test]
fn the_generator_draws_the_image_an_embedding_stands_for() {
    let g = gallery();
    let held: Vec<String> =
        std::fs::read_to_string(demo().join("world/held_out.txt")).unwrap().lines().map(String::from).collect();
    let mut generator =
        meg_decoder::model::Generator::load(&demo().join("generator.onnx"), 32, &EncoderOptions::default()).unwrap();
    let mut corr = Vec::new();
    for id in held.iter().take(40) {
        let i = g.ids.iter().position(|x| x == id).unwrap();
        let img = generator.generate(&g.embeddings[i * g.dim..(i + 1) * g.dim]).unwrap();
        assert_eq!((img.width, img.height), (64, 64));
        let file = std::fs::File::open(demo().join(format!("gallery/images/{id}.png"))).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
        let mut shown = vec![0u8; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut shown).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (64, 64, png::ColorType::Rgb));
        let (a, b): (Vec<f64>, Vec<f64>) =
            img.rgb.iter().zip(&shown[..info.buffer_size()]).map(|(&x, &y)| (f64::from(x), f64::from(y))).unzip();
        let (ma, mb) = (a.iter().sum::<f64>() / a.len() as f64, b.iter().sum::<f64>() / b.len() as f64);
        let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let (va, vb): (f64, f64) = (a.iter().map(|x| (x - ma).powi(2)).sum(), b.iter().map(|y| (y - mb).powi(2)).sum());
        corr.push(cov / (va * vb).sqrt());
    }
    corr.sort_by(f64::total_cmp);
    eprintln!("pixel correlation, generated vs shown, 40 held-out images: median {:.3}, min {:.3}", corr[20], corr[0]);
    assert!(corr[20] > 0.75, "median pixel correlation {}", corr[20]);
}

/// Live and behind (every window is old by `now`): of the continuous windows a chunk
/// completes together, only the newest is decoded and the others count as `behind`;
/// event-locked windows are all decoded; offline (`keep_up = false`) decodes everything.
#[test]
fn behind_the_stream_only_the_newest_continuous_window_is_decoded_and_event_locked_ones_all_are() {
    let cfg = sim_config(5);
    let (rows, ts, markers) = simulate::render(&cfg, 11.0, 100.0).unwrap();
    let run = |keep_up: bool| {
        let pc = PipelineConfig { hop_s: Some(0.1), keep_up, ..Default::default() };
        let mut core = DecoderCore::new(encoder(), Some(gallery()), &simulate::stream_description(&cfg), pc).unwrap();
        let seg = vec![0u32; ts.len()];
        let (mut out, mut next_marker) = (Vec::new(), 0);
        for start in (0..ts.len()).step_by(250) {
            let end = (start + 250).min(ts.len());
            while next_marker < markers.len() && markers[next_marker].timestamp <= ts[end - 1] {
                core.push_marker(markers[next_marker].clone());
                next_marker += 1;
            }
            // An hour after the data: every waiting window is older than max_lag_s.
            let late = ts[end - 1] + 3600.0;
            core.push_samples(&rows[start * 306..end * 306], &ts[start..end], &seg[start..end], &|| late, &mut |d| {
                out.push(d)
            });
        }
        (out, core.stats().skipped(SkipReason::Behind))
    };
    let (all, none_behind) = run(false);
    let (kept, behind) = run(true);
    let count = |v: &[Decoding], m: DecodeMode| v.iter().filter(|d| d.mode == m).count();
    assert_eq!(none_behind, 0);
    assert!(behind > 10, "only {behind} windows skipped as behind");
    assert_eq!(count(&kept, DecodeMode::Continuous) + behind as usize, count(&all, DecodeMode::Continuous));
    assert_eq!(count(&kept, DecodeMode::EventLocked), count(&all, DecodeMode::EventLocked));
    assert!(count(&kept, DecodeMode::EventLocked) >= 6);
    // What is decoded is decoded the same way.
    for d in &kept {
        let twin = all.iter().find(|a| a.mode == d.mode && (a.window_start - d.window_start).abs() < 1e-9).unwrap();
        assert_eq!(d.embedding, twin.embedding);
    }
}

/// A source that re-stamps its data (a clock reset: here the times step back 0.5 s, as
/// MNE-LSL's player does at some loops) starts a new segment; the signal copy says where,
/// and on either side the times stay on the model's grid.
#[test]
fn the_signal_copy_lists_where_segments_start() {
    let cfg = sim_config(9);
    let (rows, mut ts, _) = simulate::render(&cfg, 6.0, 100.0).unwrap();
    let half = ts.len() / 2;
    ts[half..].iter_mut().for_each(|t| *t -= 0.5);
    let seg: Vec<u32> = (0..ts.len()).map(|i| u32::from(i >= half)).collect();
    let pc = PipelineConfig { hop_s: Some(0.1), ..Default::default() };
    let mut core = DecoderCore::new(encoder(), Some(gallery()), &simulate::stream_description(&cfg), pc).unwrap();
    for start in (0..ts.len()).step_by(100) {
        let end = (start + 100).min(ts.len());
        core.push_samples(&rows[start * 306..end * 306], &ts[start..end], &seg[start..end], &|| 0.0, &mut |_| {});
    }
    let mut snap = meg_decoder::pipeline::SignalSnapshot::default();
    core.copy_signal(100_000, &mut snap);
    let period = 1.0 / snap.sample_rate;
    assert_eq!(snap.segment_starts.len(), 1, "{:?}", snap.segment_starts);
    let b = snap.segment_starts[0] as usize;
    assert!(snap.times[b] < snap.times[b - 1], "no step back at the segment start");
    for (i, w) in snap.times.windows(2).enumerate() {
        if i + 1 != b {
            assert!(((w[1] - w[0]) / period - 1.0).abs() < 1e-6, "step {i}: {}", (w[1] - w[0]) / period);
        }
    }
    // Asking for less than the whole buffer counts from the newest sample.
    core.copy_signal(10, &mut snap);
    assert!(snap.segment_starts.is_empty() && snap.times.len() == 10);
}

#[test]
fn same_decodings_whatever_the_chunking() {
    let cfg = sim_config(3);
    // The first ~3.1 s are the band-pass's settle period (not decoded).
    let (rows, ts, markers) = simulate::render(&cfg, 11.0, 100.0).unwrap();
    let pc = PipelineConfig { hop_s: Some(0.1), ..Default::default() };
    // Chunks of 250 samples complete several windows at once (encoded as one batch);
    // chunks of 1 and 7 never do: the decodings must not differ.
    let (reference, _) = decode_with(encoder(), &cfg, &rows, &ts, &markers, 250, pc.clone());
    assert!(reference.iter().filter(|d| d.mode == DecodeMode::Continuous).count() > 50);
    assert!(reference.iter().filter(|d| d.mode == DecodeMode::EventLocked).count() >= 6);
    // What each decoding takes as the onset: the marker's time when locked to one; for a
    // continuous one, where an onset would sit for this window (the demo's window starts
    // 0.5 s before its onset), 1.0 s before the window's end.
    for d in &reference {
        match &d.marker {
            Some(m) => assert_eq!(d.onset, m.timestamp),
            None => {
                assert!((d.onset - (d.window_start + 0.5)).abs() < 1e-9, "{} vs {}", d.onset, d.window_start);
                assert!((d.window_end - d.onset - 1.0).abs() < 0.01);
            }
        }
    }
    for chunk in [1, 7] {
        let (got, _) = decode_with(encoder(), &cfg, &rows, &ts, &markers, chunk, pc.clone());
        assert_eq!(got.len(), reference.len(), "chunk {chunk}: number of decodings");
        // Event-locked decodings are emitted when complete; compare by window.
        let key = |d: &Decoding| (d.mode == DecodeMode::EventLocked, (d.window_start * 1e6).round() as i64);
        let mut a: Vec<&Decoding> = got.iter().collect();
        let mut b: Vec<&Decoding> = reference.iter().collect();
        a.sort_by_key(|d| key(d));
        b.sort_by_key(|d| key(d));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.mode, y.mode);
            assert_eq!(x.marker, y.marker);
            assert!((x.window_start - y.window_start).abs() < 1e-9);
            let err = x.embedding.iter().zip(&y.embedding).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-5, "chunk {chunk}: embedding differs by {err}");
        }
    }
    // With the encoder for continuous use, a 250-sample chunk holds windows of both
    // encoders, each encoder's run encoded as one batch in completion order: the same
    // decodings as 7 samples at a time.
    let with_continuous = |chunk: usize| {
        let companions = ModelDir::open(&demo()).unwrap().load_companions(&EncoderOptions::default()).unwrap();
        let mut core = DecoderCore::new(encoder(), Some(gallery()), &simulate::stream_description(&cfg), pc.clone())
            .unwrap()
            .with_continuous(companions.continuous)
            .unwrap();
        let mut out: Vec<Decoding> = feed(&mut core, &rows, &ts, &markers, chunk).into_iter().map(|(d, _)| d).collect();
        out.sort_by_key(|d| (d.mode == DecodeMode::EventLocked, (d.window_start * 1e6).round() as i64));
        out
    };
    let (a, b) = (with_continuous(250), with_continuous(7));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().filter(|d| d.on_screen_at.is_some()).count() > 50 && a.iter().any(|d| d.marker.is_some()));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.mode, &x.marker, x.on_screen_at, x.onset), (y.mode, &y.marker, y.on_screen_at, y.onset));
        assert!((x.window_start - y.window_start).abs() < 1e-9);
        let err = x.embedding.iter().zip(&y.embedding).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-5, "continuous encoder: embedding differs by {err}");
    }
}

#[test]
fn event_locked_decodings_retrieve_the_shown_images() {
    let cfg = probe_config(11);
    let (rows, ts, markers) = simulate::render(&cfg, 42.0, 50.0).unwrap();
    let pc = PipelineConfig { hop_s: None, ..Default::default() };
    let (out, core) = decode_with(encoder(), &cfg, &rows, &ts, &markers, 100, pc);
    let (top1, top5, n) = hit_rates(&out);
    assert!(n >= 35, "only {n} event-locked decodings");
    eprintln!("offline, held-out images at {PROBE_GAIN}x gain: top-1 {top1:.2}, top-5 {top5:.2} over {n} stimuli among 1000 gallery images (chance 0.001 / 0.005)");
    assert!(top5 > 0.15, "top-5 {top5}");
    // The window is -0.5..+1.0 s around the onset.
    let d = out.iter().find(|d| d.mode == DecodeMode::EventLocked).unwrap();
    let onset = d.marker.as_ref().unwrap().timestamp;
    assert!((d.window_start - (onset - 0.5)).abs() < 0.005, "{} vs {}", d.window_start, onset - 0.5);
    assert!((d.window_end - (onset + 1.0)).abs() < 0.005);
    // Only the stimuli whose windows start inside the filters' settle period are skipped.
    let settling = core.stats().skipped(SkipReason::Settling);
    assert!((1..=4).contains(&settling), "{settling} skipped while settling");
    assert_eq!(core.stats().skipped_total(), settling);
}

/// The low-latency profile end to end: models/demo-lowlat was trained on
/// `contract.preprocess` with the causal anti-alias and linear interpolation; fed by the
/// service's own chain it retrieves the shown images as well as the sinc-profile model
/// on the same stimuli (a train/serve mismatch would collapse it to chance, 0.5 %).
#[test]
fn the_low_latency_model_decodes_as_well_as_the_sinc_one() {
    let cfg = probe_config(12);
    let (rows, ts, markers) = simulate::render(&cfg, 42.0, 50.0).unwrap();
    let pc = || PipelineConfig { hop_s: None, ..Default::default() };
    let lowlat =
        Encoder::load(&common::repo().join("models/demo-lowlat/encoder.onnx"), &EncoderOptions::default()).unwrap();
    let (sinc_out, sinc_core) = decode_with(encoder(), &cfg, &rows, &ts, &markers, 100, pc());
    let (low_out, low_core) = decode_with(lowlat, &cfg, &rows, &ts, &markers, 100, pc());
    let (_, sinc5, n) = hit_rates(&sinc_out);
    let (_, low5, m) = hit_rates(&low_out);
    eprintln!("top-5 over {n} stimuli: sinc profile {sinc5:.2}, causal profile {low5:.2}");
    assert!(m >= 35 && low5 > 0.15, "low-latency top-5 {low5} over {m}");
    assert!(low5 >= sinc5 - 0.15, "low-latency top-5 {low5} vs sinc {sinc5}");
    assert!(low_core.preprocessing_latency_s() < 0.002 && sinc_core.preprocessing_latency_s() > 0.045);
}

fn hit_rates(out: &[Decoding]) -> (f64, f64, usize) {
    let locked: Vec<&Decoding> = out.iter().filter(|d| d.mode == DecodeMode::EventLocked).collect();
    let hit = |k: usize| {
        locked
            .iter()
            .filter(|d| d.top_k.iter().take(k).any(|h| Some(&h.image_id) == d.marker.as_ref().map(|m| &m.text)))
            .count() as f64
            / locked.len() as f64
    };
    (hit(1), hit(5), locked.len())
}

#[test]
fn brain_module_decodes_better_than_the_linear_baseline() {
    let cfg = probe_config(13);
    let (rows, ts, markers) = simulate::render(&cfg, 42.0, 50.0).unwrap();
    let pc = PipelineConfig { hop_s: None, ..Default::default() };
    let (brain, _) = decode_with(brain_encoder(), &cfg, &rows, &ts, &markers, 100, pc.clone());
    let (linear, _) = decode_with(encoder(), &cfg, &rows, &ts, &markers, 100, pc);
    let ((b1, b5, n), (l1, l5, _)) = (hit_rates(&brain), hit_rates(&linear));
    eprintln!("over {n} held-out stimuli at {PROBE_GAIN}x gain among 1000 images: brain module top-1 {b1:.2} top-5 {b5:.2}; linear top-1 {l1:.2} top-5 {l5:.2}");
    assert!(n >= 30);
    assert!(b5 > 0.25 && b1 > l1 && b5 > l5, "brain module top-1 {b1} top-5 {b5}, linear top-1 {l1} top-5 {l5}");
}

#[test]
fn committed_models_reproduce_reference_outputs() {
    // The brain module exported from PyTorch: ONNX Runtime here agrees with PyTorch there.
    {
        let dir = "models/demo-brain";
        let root = common::repo().join(dir);
        let mut enc = Encoder::load(&root.join("encoder.onnx"), &EncoderOptions::default()).unwrap();
        let input = npy::read(&root.join("reference_input.npy")).unwrap();
        let want = npy::read(&root.join("reference_output.npy")).unwrap();
        let mut got = vec![0.0; want.data.len()];
        enc.encode(&input.data, 0, &mut got).unwrap();
        let err = got.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-3, "{dir}: output differs from PyTorch's by {err}");
    }
    let dir = ModelDir::open(&demo()).unwrap();
    let mut enc = encoder();
    let input = npy::read(&demo().join("reference_input.npy")).unwrap();
    let want = npy::read(&demo().join("reference_output.npy")).unwrap();
    let mut got = vec![0.0; want.data.len()];
    enc.encode(&input.data, 0, &mut got).unwrap();
    let err = got.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-4, "encoder output differs from the reference by {err}");
    let c = enc.contract();
    assert_eq!((c.sample_rate, c.window_samples, c.channel_names.len(), c.embedding_dim), (120.0, 181, 306, 32));
    let mut generator =
        meg_decoder::model::Generator::load(dir.generator.as_ref().unwrap(), 32, &EncoderOptions::default()).unwrap();
    let png = generator.generate_png(&got).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let paper = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/paper/encoder.onnx");
    let p = Encoder::load(&paper, &EncoderOptions { warmup_runs: 1, ..Default::default() }).unwrap();
    assert_eq!(
        (p.contract().window_samples, p.contract().channel_names.len(), p.contract().embedding_dim),
        (181, 272, 768)
    );
}

#[test]
fn nan_windows_are_skipped_or_repaired_by_policy() {
    let cfg = sim_config(5);
    let (mut rows, ts, markers) = simulate::render(&cfg, 5.0, 10.0).unwrap();
    for v in &mut rows[3000 * 306..3000 * 306 + 500] {
        *v = f32::NAN;
    }
    let pc = PipelineConfig { hop_s: Some(0.1), settle_s: Some(0.5), ..Default::default() };
    let (skip, core) = decode_with(encoder(), &cfg, &rows, &ts, &markers, 50, pc.clone());
    assert!(core.stats().skipped(SkipReason::NonFinite) > 5);
    assert!(skip.iter().all(|d| !d.repaired && d.embedding.iter().all(|v| v.is_finite())));
    let (repair, core) = decode_with(
        encoder(),
        &cfg,
        &rows,
        &ts,
        &markers,
        50,
        PipelineConfig { non_finite: NonFinitePolicy::Repair, ..pc },
    );
    assert_eq!(core.stats().skipped(SkipReason::NonFinite), 0);
    assert!(repair.iter().filter(|d| d.repaired).count() > 5);
    assert!(repair.iter().all(|d| d.embedding.iter().all(|v| v.is_finite())));
}

#[test]
fn bad_inputs_give_errors_that_name_the_fix() {
    // A CTF stream for a Neuromag model: the missing channels are listed.
    let ctf = SimulatorConfig { layout: LayoutKind::Ctf272, ..Default::default() };
    let err = DecoderCore::new(encoder(), None, &simulate::stream_description(&ctf), PipelineConfig::default())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, PipelineError::Mapping(_)) && msg.contains("306") && msg.contains("MEG0113"), "{msg}");
    // A stream slower than the model.
    let slow = SimulatorConfig { srate: 100.0, ..Default::default() };
    let msg = DecoderCore::new(encoder(), None, &simulate::stream_description(&slow), PipelineConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("120 Hz") && msg.contains("100 Hz"), "{msg}");
    // A window longer than the buffer.
    let pc = PipelineConfig { buffer_s: 1.0, ..Default::default() };
    let msg = DecoderCore::new(encoder(), None, &simulate::stream_description(&SimulatorConfig::default()), pc)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("buffer"), "{msg}");
    // A gallery of another embedding space.
    let g = Arc::new(Gallery::from_parts(vec!["a".into()], 8, vec![1.0; 8], None));
    let msg = DecoderCore::new(
        encoder(),
        Some(g),
        &simulate::stream_description(&SimulatorConfig::default()),
        PipelineConfig::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(msg.contains("dimension 8") && msg.contains("32"), "{msg}");
    // A corrupt ONNX file.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("encoder.onnx");
    let mut bytes = std::fs::read(demo().join("encoder.onnx")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&bad, &bytes).unwrap();
    let err = Encoder::load(&bad, &EncoderOptions::default()).err().unwrap();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    // An ONNX model without the contract (the generator).
    let err = Encoder::load(&demo().join("generator.onnx"), &EncoderOptions::default()).err().unwrap();
    assert!(err.to_string().contains("meg_decoder.contract") && err.to_string().contains("models/README.md"), "{err}");
    // A missing model directory.
    let err = ModelDir::open(Path::new("/nonexistent/model")).err().unwrap();
    assert!(err.to_string().contains("encoder.onnx"), "{err}");
}

#[test]
fn inspect_model_checks_a_model_and_benches_it_per_thread_count_and_batch() {
    let run = |extra: &[&str]| {
        common::bin()
            .current_dir(common::repo())
            .args(["inspect-model", "models/demo-brain", "--bench", "--runs", "3"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--max-threads", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("dummy window OK"), "{text}");
    // One row per thread count, four (per run, per window, p90) cells each.
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip_while(|l| !l.contains("threads"))
        .skip(1)
        .map(|l| {
            l.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '/')
                .filter_map(|w| w.parse::<f64>().ok())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (t, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 1 + 4 * 3, "{text}");
        assert_eq!(row[0], (t + 1) as f64);
        for (i, b) in [1.0, 2.0, 4.0, 8.0].iter().enumerate() {
            let (per_run, per_window, p90) = (row[1 + 3 * i], row[2 + 3 * i], row[3 + 3 * i]);
            assert!(per_run > 0.0 && p90 >= per_run, "{text}");
            assert!((per_run / b - per_window).abs() < 0.01, "{text}");
        }
    }
    let bad = run(&["--max-threads", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--max-threads"));

    // What a model directory carries beside its encoder is checked as serve checks it.
    let inspect = |dir: &Path| common::bin().args(["inspect-model"]).arg(dir).output().unwrap();
    let out = inspect(&demo());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in ["stage      s250: ", "stage      s500: ", "continuous demo-linear-v2-continuous: "] {
        assert!(text.lines().any(|l| l.starts_with(line) && l.ends_with(" ms)")), "{line} in {text}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    std::fs::create_dir_all(model.join("continuous")).unwrap();
    std::os::unix::fs::symlink(demo().join("encoder.onnx"), model.join("encoder.onnx")).unwrap();
    let err = |dir: &Path| {
        let out = inspect(dir);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // An empty continuous/ is not silently skipped.
    let e = err(&model);
    assert!(e.contains("continuous/encoder.onnx") && e.contains("remove the folder"), "{e}");
    // An encoder locked to onsets is not one for continuous use.
    std::os::unix::fs::symlink(demo().join("encoder.onnx"), model.join("continuous/encoder.onnx")).unwrap();
    let e = err(&model);
    assert!(e.contains("target = on_screen"), "{e}");
    // Nor is a stage folder without its encoder.
    std::fs::remove_dir_all(model.join("continuous")).unwrap();
    std::fs::create_dir_all(model.join("stages/s100")).unwrap();
    let e = err(&model);
    assert!(e.contains("stages/s100/encoder.onnx") && e.contains("progressive stage"), "{e}");
}
