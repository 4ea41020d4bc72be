//! Criterion micro-benchmarks of the per-sample and per-window steps.
//! `cargo bench --bench pipeline` (the end-to-end harnesses live in examples/).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use meg_decoder::dsp::{butter_bandpass, Resampler, SosFilter};
use meg_decoder::ingest::RingBuffer;
use meg_decoder::model::{Encoder, EncoderOptions, Gallery};

fn gallery(n: usize, dim: usize) -> Gallery {
    let mut x = 1u64;
    let emb = (0..n * dim)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Gallery::from_parts((0..n).map(|i| format!("img_{i}")).collect(), dim, emb, None)
}

fn bench(c: &mut Criterion) {
    let channels = 306;
    let mut g = c.benchmark_group("per_sample_306ch");
    let mut f = SosFilter::new(butter_bandpass(4, 0.1, 40.0, 1000.0), channels);
    let mut row = vec![1e-12f32; channels];
    g.bench_function("sos_bandpass_row", |b| b.iter(|| f.process_row(std::hint::black_box(&mut row))));
    let mut r = Resampler::new(channels, 1000.0, 120.0);
    g.bench_function("resample_1000_to_120_row", |b| {
        b.iter(|| r.push_row(std::hint::black_box(&row), |_, y| _ = std::hint::black_box(y)))
    });
    let (mut w, ring) = RingBuffer::new(channels, 50_000);
    let chunk = vec![0.5f32; channels * 10];
    let ts = vec![0.0f64; 10];
    g.bench_function("ring_push_10_samples", |b| b.iter(|| w.push(std::hint::black_box(&chunk), &ts, 0)));
    let mut out = vec![0f32; channels * 10];
    let mut ots = vec![0f64; 10];
    g.bench_function("ring_read_10_samples", |b| b.iter(|| ring.read(ring.head() - 10, &mut out, &mut ots).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("per_window");
    for (n, dim) in [(240, 32), (20_000, 768), (20_000, 1536)] {
        let gal = gallery(n, dim);
        let q = vec![0.1f32; dim];
        let mut scores = vec![0f32; n];
        g.bench_function(format!("top5_{n}x{dim}"), |b| b.iter(|| gal.top_k(std::hint::black_box(&q), 5, &mut scores)));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, dir) in [("demo_linear", "models/demo"), ("paper_brain_module", "models/paper")] {
        let mut enc = Encoder::load(&root.join(dir).join("encoder.onnx"), &EncoderOptions::default()).unwrap();
        let x = vec![0.1f32; enc.window_len()];
        let mut e = vec![0f32; enc.contract().embedding_dim];
        g.bench_function(format!("encoder_{name}"), |b| b.iter(|| enc.encode(&x, 0, &mut e).unwrap()));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
