//! The int8 encoders (models/quantize.py) against their fp32 sources, both run here by
//! ONNX Runtime on the fixtures committed with them: the paper-size model on simulated
//! and real-recording (CTF) windows, the trained demo brain module on held-out trials of
//! the demo world. Speed is measured by `inspect-model --bench`, not here.

mod common;

use std::path::Path;

use meg_decoder::model::{npy, Encoder, EncoderOptions, Gallery};

fn encoder(dir: &str) -> Encoder {
    Encoder::load(&common::repo().join(dir).join("encoder.onnx"), &EncoderOptions::default()).unwrap()
}

fn fixture(dir: &str, name: &str) -> npy::NpyF32 {
    npy::read(&common::repo().join(dir).join(name)).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Embeddings of every fixture window, one at a time, by the fp32 and int8 encoders.
fn both(fp32: &str, int8: &str, subjects: Option<&[f32]>) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, npy::NpyF32) {
    let (mut a, mut b) = (encoder(fp32), encoder(int8));
    assert_eq!(a.contract().channel_names, b.contract().channel_names, "the int8 model keeps the contract");
    assert_eq!(a.contract().sample_rate, b.contract().sample_rate);
    let input = fixture(int8, "check_input.npy");
    let (len, dim) = (a.window_len(), a.contract().embedding_dim);
    let n = input.data.len() / len;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let w = &input.data[i * len..(i + 1) * len];
        let s = subjects.map_or(0, |s| s[i] as i64);
        let (mut ea, mut eb) = (vec![0.0; dim], vec![0.0; dim]);
        a.encode(w, s, &mut ea).unwrap();
        b.encode(w, s, &mut eb).unwrap();
        x.push(ea);
        y.push(eb);
    }
    (x, y, input)
}

#[test]
fn paper_int8_embeddings_point_where_fp32_ones_do() {
    let subjects = fixture("models/paper-int8", "check_subject.npy");
    let (fp32, int8, _) = both("models/paper", "models/paper-int8", Some(&subjects.data));
    // The fixture's fp32 outputs came from Python's onnxruntime: the same numbers here.
    let want = fixture("models/paper-int8", "check_output_fp32.npy");
    let dim = fp32[0].len();
    for (i, e) in fp32.iter().enumerate() {
        let c = cosine(e, &want.data[i * dim..(i + 1) * dim]);
        assert!(c > 0.9999, "window {i}: fp32 here vs the fixture, cosine {c}");
    }
    let cos: Vec<f64> = fp32.iter().zip(&int8).map(|(a, b)| cosine(a, b)).collect();
    let worst = cos.iter().copied().fold(1.0, f64::min);
    eprintln!("paper int8 vs fp32 over {} windows (8 simulated, 8 real CTF): worst cosine {worst:.4}", cos.len());
    assert!(worst >= 0.99, "cosines {cos:?}");
}

#[test]
fn demo_brain_int8_retrieves_the_shown_image_as_fp32_does() {
    let labels = fixture("models/demo-brain-int8", "check_labels.npy");
    let (fp32, int8, _) = both("models/demo-brain", "models/demo-brain-int8", None);
    let gallery = Gallery::load(Path::new(&common::repo().join("models/demo-brain/gallery"))).unwrap();
    let mut scores = vec![0.0; gallery.len()];
    let (mut same_top1, mut hits) = (0, [0usize; 2]);
    for (i, (a, b)) in fp32.iter().zip(&int8).enumerate() {
        assert!(cosine(a, b) >= 0.99, "trial {i}: cosine {}", cosine(a, b));
        let shown = labels.data[i] as usize;
        let ta = gallery.top_k(a, 5, &mut scores);
        let tb = gallery.top_k(b, 5, &mut scores);
        let hit = |t: &[meg_decoder::model::Hit]| t.iter().any(|h| h.index == shown);
        assert_eq!(hit(&ta), hit(&tb), "trial {i}: the shown image in fp32's top-5 but not int8's, or back");
        hits[0] += usize::from(hit(&ta));
        hits[1] += usize::from(hit(&tb));
        same_top1 += usize::from(ta[0].index == tb[0].index);
    }
    eprintln!(
        "demo-brain over {} held-out trials: top-5 hits fp32 {} int8 {}; same top-1 {same_top1}",
        fp32.len(),
        hits[0],
        hits[1]
    );
    // Near ties swap: trial 15's fp32 top-1 and top-2 differ by 0.0003 in cosine.
    assert!(same_top1 + 2 >= fp32.len(), "top-1 differs in {} trials", fp32.len() - same_top1);
}

#[test]
fn an_int8_window_does_not_depend_on_the_windows_batched_with_it() {
    // Activations are quantised per window (models/quantize.py wraps the graph in a Scan
    // over the batch): batching never changes a decoding.
    let mut enc = encoder("models/paper-int8");
    let input = fixture("models/paper-int8", "check_input.npy");
    let (len, dim) = (enc.window_len(), enc.contract().embedding_dim);
    let n = 8;
    let mut batched = vec![0.0; n * dim];
    enc.encode_batch(&input.data[..n * len], n, 0, &mut batched).unwrap();
    for i in 0..n {
        let mut one = vec![0.0; dim];
        enc.encode(&input.data[i * len..(i + 1) * len], 0, &mut one).unwrap();
        let c = cosine(&one, &batched[i * dim..(i + 1) * dim]);
        assert!(c > 0.99999, "window {i}: alone vs in a batch of {n}, cosine {c}");
    }
}
