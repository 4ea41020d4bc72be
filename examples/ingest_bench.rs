//! Harness: ingest of 306 ch x 5000 Hz float32 over LSL (loopback) for 60 s. Reports
//! lost samples and the CPU time of the acquisition thread per second of data (from
//! /proc/self/task/<tid>/stat), next to the outlet's.
//!
//!     cargo run --release --example ingest_bench [-- --seconds 60 --rate 5000]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meg_decoder::ingest::{AcquisitionConfig, MegAcquisition, StreamQuery};
use meg_decoder::lsl::{self, ChannelFormat, Outlet, StreamInfo};

fn arg(name: &str, default: f64) -> f64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn stat_cpu(path: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
}

/// CPU seconds (user + system) of the threads whose names start with `prefix`.
fn thread_cpu(prefix: &str) -> Option<f64> {
    let mut total = None;
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(prefix) {
            *total.get_or_insert(0.0) += stat_cpu(&e.path().join("stat"))?;
        }
    }
    total
}

fn main() {
    let seconds = arg("--seconds", 60.0);
    let rate = arg("--rate", 5000.0);
    let channels = 306;
    let cfg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lsl_api.loopback.cfg")).unwrap();
    lsl::set_config_content(
        &cfg.replace("SessionID = meg-decoder-test", &format!("SessionID = bench-{}", std::process::id())),
    )
    .unwrap();
    let name = format!("bench{}", std::process::id() % 10000);
    let chunk = (rate / 100.0) as usize; // 10 ms chunks, like acquisition systems
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, name2) = (stop.clone(), name.clone());
    let pushed = std::thread::Builder::new()
        .name("outlet".into())
        .spawn(move || {
            let info = StreamInfo::new(&name2, "MEG", channels, rate, ChannelFormat::Float32, &name2).unwrap();
            let mut outlet = Outlet::create(&info, chunk).unwrap();
            outlet.wait_for_consumers(10.0);
            let mut data: Vec<f32> = (0..chunk * channels).map(|i| ((i * 7919) % 1000) as f32 * 1e-15).collect();
            let mut ts = vec![0.0; chunk];
            let t0 = lsl::local_clock().unwrap();
            let mut n: u64 = 0;
            let total = (seconds * rate) as u64;
            while n < total && !stop2.load(Ordering::Relaxed) {
                for i in 0..chunk {
                    data[i * channels] = (n + i as u64) as f32;
                    ts[i] = t0 + (n + i as u64) as f64 / rate;
                }
                let due = t0 + (n + chunk as u64) as f64 / rate;
                let wait = due - lsl::local_clock().unwrap();
                if wait > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                outlet.push_chunk(&data, &ts).unwrap();
                n += chunk as u64;
            }
            std::thread::sleep(Duration::from_millis(500));
            n
        })
        .unwrap();
    let mut acfg = AcquisitionConfig::new(StreamQuery::by_name(&name));
    acfg.ring_seconds = 10.0;
    let acq = MegAcquisition::start(acfg).unwrap();
    let prefix = format!("lsl-{}", &name[..name.len().min(11)]);
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, proc0) = (thread_cpu(&prefix).unwrap_or(0.0), stat_cpu("/proc/self/stat".as_ref()).unwrap_or(0.0));
    let started = Instant::now();
    while !pushed.is_finished() && started.elapsed().as_secs_f64() < seconds - 0.5 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, proc1) = (thread_cpu(&prefix).unwrap_or(0.0), stat_cpu("/proc/self/stat".as_ref()).unwrap_or(0.0));
    let sent = pushed.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let s = acq.stats.snapshot();
    // The counter channel of what the ring still holds is contiguous.
    let (start, end) = (acq.ring.oldest(), acq.ring.head());
    let mut data = vec![0f32; (end - start) as usize * channels];
    let mut ts = vec![0f64; (end - start) as usize];
    acq.ring.read(start, &mut data, &mut ts).unwrap();
    let contiguous =
        data.chunks_exact(channels).map(|r| r[0]).collect::<Vec<_>>().windows(2).all(|w| w[1] == w[0] + 1.0);
    println!(
        "ingest {channels} ch x {rate} Hz float32 for {seconds} s ({:.1} MB/s)",
        rate * channels as f64 * 4.0 / 1e6
    );
    println!(
        "samples sent {sent}, received {}, lost {}, gaps {}, last {:.0} s contiguous: {contiguous}",
        s.samples,
        sent as i64 - s.samples as i64,
        s.gaps,
        (end - start) as f64 / rate
    );
    println!(
        "acquisition thread CPU: {:.2}% of one core ({:.3} s CPU over {wall:.1} s)",
        100.0 * (cpu1 - cpu0) / wall,
        cpu1 - cpu0
    );
    println!(
        "whole process (outlet and inlet sides of liblsl, both threads): {:.2}% of one core",
        100.0 * (proc1 - proc0) / wall
    );
}
