//! Load generator: many gRPC subscribers in a process of their own against a running
//! `serve`, in rounds of growing size, measuring what the fan-out costs: the delay from
//! a decoding's `decoded_at` to its arrival here (both on this machine's LSL clock), the
//! server's CPU and memory (from /proc), and the decodings subscribers missed.
//!
//!     make build
//!     LSLAPICFG=$PWD/deploy/lsl_api.loopback.cfg ./target/release/meg-decoder simulate --model models/demo --name fan &
//!     LSLAPICFG=$PWD/deploy/lsl_api.loopback.cfg ./target/release/meg-decoder serve --model models/demo-brain \
//!         --stream-name fan --no-markers --listen 127.0.0.1:50099 &
//!     cargo run --release --example fanout_load -- --addr 127.0.0.1:50099 --server-pid $! \
//!         --subscribers 1,100,1000 --seconds 20
//!
//! Each subscriber has its own TCP connection and asks for every decoding with its
//! embedding (the heaviest common case). Rounds run one after the other, the server
//! staying up, so their figures compare side by side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meg_decoder::server::proto::{self, decoder_client::DecoderClient};

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).cloned()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// user + system CPU seconds of `pid`.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// Resident memory of `pid` in MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Round {
    subscribers: usize,
    connected: usize,
    received: u64,
    missed: u64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu_pct: f64,
    server_rss_mb: f64,
}

async fn round(addr: &str, pid: Option<u32>, subscribers: usize, seconds: f64) -> Round {
    let delays = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (received, missed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut connected = 0;
    for _ in 0..subscribers {
        let Ok(mut c) = DecoderClient::connect(format!("http://{addr}")).await else { continue };
        let req = proto::SubscribeRequest { include_embedding: true, ..Default::default() };
        let Ok(resp) = c.subscribe(req).await else { continue };
        connected += 1;
        let mut stream = resp.into_inner();
        let (delays, received, missed) = (delays.clone(), received.clone(), missed.clone());
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Ok(Some(d)) = stream.message().await {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if measuring.load(Ordering::Relaxed) {
                    let now = meg_decoder::lsl::local_clock().unwrap_or(0.0);
                    mine.push((now - d.decoded_at) * 1e3);
                    received.fetch_add(1, Ordering::Relaxed);
                    missed.fetch_add(d.missed, Ordering::Relaxed);
                }
            }
            delays.lock().unwrap().extend(mine);
        }));
    }
    // Connections settled, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu0 = pid.map(cpu_s);
    let t0 = Instant::now();
    let mut rss: f64 = 0.0;
    while t0.elapsed().as_secs_f64() < seconds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(p) = pid {
            rss = rss.max(rss_mb(p));
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let server_cpu_pct = match (pid, cpu0) {
        (Some(p), Some(c0)) => 100.0 * (cpu_s(p) - c0) / elapsed,
        _ => f64::NAN,
    };
    // Each task ends at its next decoding and hands over its delays.
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), t).await.is_err() {
            abort.abort();
        }
    }
    let mut all = std::mem::take(&mut *delays.lock().unwrap());
    Round {
        subscribers,
        connected,
        received: received.load(Ordering::Relaxed),
        missed: missed.load(Ordering::Relaxed),
        p50_ms: pct(&mut all, 0.5),
        p99_ms: pct(&mut all, 0.99),
        server_cpu_pct,
        server_rss_mb: rss,
    }
}

fn main() {
    let addr = arg("--addr").unwrap_or_else(|| "127.0.0.1:50051".into());
    let pid = arg("--server-pid").and_then(|p| p.parse().ok());
    let seconds: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let sizes: Vec<usize> = arg("--subscribers")
        .unwrap_or_else(|| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("subscribers  connected  received  missed  delay p50 ms  delay p99 ms  server CPU %  server RSS MB");
    let mut rounds = Vec::new();
    for n in sizes {
        let r = rt.block_on(round(&addr, pid, n, seconds));
        println!(
            "{:>11}  {:>9}  {:>8}  {:>6}  {:>12.2}  {:>12.2}  {:>12.1}  {:>13.1}",
            r.subscribers, r.connected, r.received, r.missed, r.p50_ms, r.p99_ms, r.server_cpu_pct, r.server_rss_mb
        );
        rounds.push(r);
        std::thread::sleep(Duration::from_secs(2));
    }
    if let Some(base) = rounds.first() {
        for r in &rounds[1..] {
            println!(
                "{} subscribers add {:.2} ms p50 and {:.2} ms p99 to 1 subscriber's delay",
                r.subscribers,
                r.p50_ms - base.p50_ms,
                r.p99_ms - base.p99_ms
            );
        }
    }
}
