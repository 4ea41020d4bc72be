//! Streaming DSP against scipy reference vectors (tools/make_dsp_reference.py):
//! max abs error under 1e-4 of the signal RMS, whatever the chunking.

use meg_decoder::dsp::{butter_bandpass, butter_highpass, butter_lowpass, notch, Biquad, Resampler, SosFilter};
use meg_decoder::model::npy;

fn load(name: &str) -> (usize, usize, Vec<f32>) {
    let a = npy::read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/dsp/{name}.npy")))
        .unwrap();
    (a.shape[0], a.shape[1], a.data)
}

/// `[channels, n]` -> sample-major rows.
fn to_rows(c: usize, n: usize, d: &[f32]) -> Vec<f32> {
    (0..n).flat_map(|t| (0..c).map(move |ch| d[ch * n + t])).collect()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

fn filter_in_chunks(sos: Vec<Biquad>, c: usize, rows: &[f32], chunk: usize) -> Vec<f32> {
    let mut f = SosFilter::new(sos, c);
    let mut out = rows.to_vec();
    for piece in out.chunks_mut(chunk * c) {
        f.process(piece);
    }
    out
}

fn assert_close(got_rows: &[f32], want: &[f32], c: usize, n: usize, what: &str) {
    let want_rows = to_rows(c, n, want);
    let scale = rms(&want_rows).max(1e-30);
    let err = got_rows.iter().zip(&want_rows).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()).fold(0.0, f64::max);
    assert!(err / scale < 1e-4, "{what}: max error {:.3e} of rms {scale:.3e} ({:.2e} relative)", err, err / scale);
}

fn our_design(name: &str) -> Vec<Biquad> {
    let fs = 1000.0;
    match name {
        "bandpass" => butter_bandpass(4, 0.1, 40.0, fs),
        "highpass" => butter_highpass(3, 0.5, fs),
        "lowpass" => butter_lowpass(5, 30.0, fs),
        "notch" => vec![notch(50.0, 30.0, fs)],
        _ => unreachable!(),
    }
}

fn scipy_sos(name: &str) -> Vec<Biquad> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/dsp/sos_{name}.npy"));
    let (shape, d) = npy::read_f64(&path).unwrap();
    (0..shape[0])
        .map(|r| Biquad { b: [d[r * 6], d[r * 6 + 1], d[r * 6 + 2]], a: [d[r * 6 + 3], d[r * 6 + 4], d[r * 6 + 5]] })
        .collect()
}

#[test]
fn sos_filters_match_scipy_sosfilt_in_any_chunking() {
    for input in ["random", "meg"] {
        let (c, n, x) = load(&format!("input_{input}"));
        let rows = to_rows(c, n, &x);
        for design in ["bandpass", "highpass", "lowpass", "notch"] {
            let (_, _, want) = load(&format!("sosfilt_{design}_{input}"));
            // Our own design (same parameters as scipy's butter/iirnotch) ...
            let whole = filter_in_chunks(our_design(design), c, &rows, n);
            assert_close(&whole, &want, c, n, &format!("{design}/{input} (our design)"));
            // ... and scipy's exact SOS.
            let theirs = filter_in_chunks(scipy_sos(design), c, &rows, n);
            assert_close(&theirs, &want, c, n, &format!("{design}/{input} (scipy sos)"));
            for chunk in [1, 7, 250] {
                assert_eq!(
                    filter_in_chunks(our_design(design), c, &rows, chunk),
                    whole,
                    "{design}: chunk {chunk} differs"
                );
            }
        }
    }
}

fn resample(c: usize, rows: &[f32], fin: f64, fout: f64, chunk: usize) -> Vec<Vec<f32>> {
    let mut r = Resampler::new(c, fin, fout);
    let mut out = Vec::new();
    for piece in rows.chunks(chunk * c) {
        for row in piece.chunks_exact(c) {
            r.push_row(row, |k, y| {
                assert_eq!(k as usize, out.len());
                out.push(y.to_vec());
            });
        }
    }
    out
}

#[test]
fn resampler_matches_scipy_resample_poly() {
    for (fin, fout) in [(1000.0, 120.0), (600.0, 120.0), (1200.0, 120.0)] {
        for input in ["random", "meg"] {
            let (c, n, x) = load(&format!("input_{input}"));
            let (_, m, want) = load(&format!("resample_{}_{input}", fin as u32));
            let rows = to_rows(c, n, &x);
            let got = resample(c, &rows, fin, fout, 250);
            assert!(got.len() > m - 10 && got.len() <= m, "{fin}: {} outputs vs scipy's {m}", got.len());
            let got_rows: Vec<f32> = got.iter().flatten().copied().collect();
            let want_rows: Vec<f32> = to_rows(c, m, &want)[..got_rows.len()].to_vec();
            let scale = rms(&want_rows);
            let err =
                got_rows.iter().zip(&want_rows).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()).fold(0.0, f64::max);
            let worst = got_rows
                .iter()
                .zip(&want_rows)
                .enumerate()
                .max_by(|a, b| (a.1 .0 - a.1 .1).abs().total_cmp(&(b.1 .0 - b.1 .1).abs()))
                .unwrap();
            assert!(
                err / scale < 1e-4,
                "{fin}->{fout} {input}: {:.2e} relative; worst at {} of {}: {:?}",
                err / scale,
                worst.0,
                got_rows.len(),
                worst.1
            );
            for chunk in [1, 7] {
                assert_eq!(resample(c, &rows, fin, fout, chunk), got, "chunk {chunk} differs");
            }
        }
    }
}

#[test]
fn resampler_handles_non_rational_megin_rate() {
    let (c, n, x) = load("input_meg600");
    let (_, m, want) = load("resample_600.614_meg600");
    let got = resample(c, &to_rows(c, n, &x), 600.614, 120.0, 13);
    assert_eq!(got.len(), m);
    let got_rows: Vec<f32> = got.iter().flatten().copied().collect();
    assert_close(&got_rows, &want, c, m, "600.614 -> 120");
}
