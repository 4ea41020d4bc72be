//! Harness: XDF writer throughput at 306 ch x 5000 Hz float32 (60 s of data written as
//! fast as possible in the recorder's 50 ms chunks), MB/s and CPU seconds, then read back.
//!
//!     cargo run --release --example xdf_bench [-- --seconds 60]

use std::time::Instant;

use meg_decoder::record::xdf::{info_xml, XdfWriter};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let seconds: f64 =
        a.iter().position(|x| x == "--seconds").and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(60.0);
    let (c, rate) = (306usize, 5000.0);
    let chunk = (rate * 0.05) as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.xdf");
    let data: Vec<f32> = (0..chunk * c).map(|i| i as f32 * 1e-15).collect();
    let mut ts = vec![0.0; chunk];
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    let mut w = XdfWriter::create(std::fs::File::create(&path).unwrap(), "").unwrap();
    w.stream_header(1, &info_xml("MEG", "MEG", c, rate, "float32", "bench", "")).unwrap();
    let chunks = (seconds * rate) as usize / chunk;
    for k in 0..chunks {
        for (i, t) in ts.iter_mut().enumerate() {
            *t = (k * chunk + i) as f64 / rate;
        }
        w.samples_f32(1, &ts, &data, c).unwrap();
        if k % 100 == 0 {
            w.clock_offset(1, k as f64, 0.0).unwrap();
        }
        if k % 200 == 0 {
            w.boundary().unwrap();
        }
    }
    w.stream_footer(1, 0.0, ts[chunk - 1], (chunks * chunk) as u64, &[]).unwrap();
    w.sync().unwrap();
    let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let mb = w.bytes_written as f64 / 1e6;
    println!(
        "wrote {seconds} s of {c} ch x {rate} Hz ({mb:.0} MB) in {wall:.2} s: {:.0} MB/s, {cpu:.2} s CPU",
        mb / wall
    );
    println!(
        "real-time need: {:.1} MB/s -> the writer uses {:.2}% of one core at real time",
        mb / seconds,
        100.0 * cpu / seconds
    );
    let t = Instant::now();
    let f = meg_decoder::record::read_xdf(&path).unwrap();
    println!("read back {} samples in {:.2} s", f.streams[0].timestamps.len(), t.elapsed().as_secs_f64());
}
