//! End to end with every real part: `simulate` (LSL outlet) -> ingest -> pipeline with
//! the demo model in ONNX Runtime -> hub -> gRPC -> Rust and Python subscribers, with the
//! Prometheus endpoint scraped over HTTP during the run.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meg_decoder::config::Config;
use meg_decoder::simulate::{self, EvokedWorld, SimulatorConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics"))
}

#[test]
fn simulate_to_subscribers_continuous_and_event_locked_with_metrics() {
    common::init_lsl();
    let name = common::unique("e2e");
    let demo = common::repo().join("models/demo");
    let sim_cfg = SimulatorConfig {
        name: name.clone(),
        source_id: name.clone(),
        marker_stream: Some(format!("{name}-m")),
        world: Some(Arc::new(EvokedWorld::load(&demo).unwrap())),
        isi_s: 0.8,
        duration_s: Some(14.0),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let sim = std::thread::spawn(move || simulate::run(&sim_cfg, &stop2).unwrap());

    let mut cfg = Config::default();
    cfg.model.dir = demo;
    cfg.stream.name = name.clone();
    cfg.markers.name = format!("{name}-m");
    cfg.pipeline.hop_s = 0.05;
    // Decode 1 s after start (the band-pass's own settle period is 3.1 s) so the 8 s
    // client run sees mostly decodings.
    cfg.preprocessing.settle_s = Some(1.0);
    let port = free_port();
    cfg.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    cfg.metrics.listen = metrics.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(async move {
        meg_decoder::app::run(cfg, "test", async move {
            let _ = rx.await;
        })
        .await
    });
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The Rust console client, as a lab would run it, in JSON.
    let dir = tempfile::tempdir().unwrap();
    let client = common::bin()
        .args(["client", "--addr", &format!("http://127.0.0.1:{port}"), "--json", "--max-rate", "0", "--duration", "8"])
        .args(["--images", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The Python client package's console entry point at the same time.
    let py = std::process::Command::new(common::python())
        .args(["-m", "meg_decoder_client", "--addr", &format!("127.0.0.1:{port}"), "--count", "20", "--json"])
        .args(["--embedding", "--max-rate", "0"])
        .output()
        .expect("python client (make venv)");
    assert!(py.status.success(), "python client: {}", String::from_utf8_lossy(&py.stderr));
    let py_lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&py.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(py_lines.len(), 20);
    assert!(py_lines.windows(2).all(|w| w[1]["sequence"].as_u64() > w[0]["sequence"].as_u64()));
    assert!(py_lines.iter().all(|d| d["embedding_dim"] == 32 && d["top_k"].as_array().unwrap().len() == 5));
    // The grpcio client sees the stage fields as the proto defines them, and on_screen_at on
    // the continuous decodings of models/demo's encoder for continuous use (None, from
    // on_screen_at 0, on event-locked ones).
    for d in &py_lines {
        let (stage, stages) = (d["stage"].as_u64().unwrap(), d["stages"].as_u64().unwrap());
        let locked = d["mode"] == "event_locked";
        assert!(if locked { stages == 3 && (1..=3).contains(&stage) } else { (stage, stages) == (0, 0) }, "{d}");
        assert_eq!(d["on_screen_at"].is_null(), locked, "{d}");
    }

    let out = client.wait_with_output().unwrap();
    let page = scrape(&metrics);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cont: Vec<_> = lines.iter().filter(|d| d["mode"] == "continuous").collect();
    let locked: Vec<_> = lines.iter().filter(|d| d["mode"] == "event_locked").collect();
    assert!(cont.len() > 100, "{} continuous decodings in 8 s at a 50 ms hop", cont.len());
    assert!(locked.len() >= 5, "{} event-locked decodings", locked.len());
    assert!(lines.windows(2).all(|w| w[1]["sequence"].as_u64() > w[0]["sequence"].as_u64()));
    for d in &locked {
        // models/demo decodes progressively: -0.5..+0.25 s, -0.5..+0.5 s, then the model's
        // -0.5..+1.0 s around the onset (181 samples at 120 Hz span 1.5 s), on the stream's
        // fitted clock, which follows LSL's clock-offset updates: within a millisecond.
        assert!(d["marker"].as_str().unwrap().starts_with("img_"));
        let span = match (d["stage"].as_u64().unwrap(), d["stages"].as_u64().unwrap()) {
            (1, 3) => 0.75,
            (2, 3) => 1.0,
            (3, 3) => 1.5,
            other => panic!("stage {other:?}: models/demo has 3 stages"),
        };
        assert!((d["window_end"].as_f64().unwrap() - d["window_start"].as_f64().unwrap() - span).abs() < 1e-3, "{d}");
        assert!(d["latency_ms"].as_f64().unwrap() < 500.0);
    }
    // Each marker's stages arrive in order, stage 1 first (the lines are in arrival order).
    let in_order = locked
        .iter()
        .filter(|f| f["stage"] == 3)
        .filter(|f| {
            let seen: Vec<u64> = locked
                .iter()
                .filter(|d| d["marker"] == f["marker"] && d["onset"] == f["onset"])
                .map(|d| d["stage"].as_u64().unwrap())
                .collect();
            seen == [1, 2, 3]
        })
        .count();
    assert!(in_order >= 3, "{in_order} markers with stages 1, 2, 3 in order");
    // Continuous decodings come from models/demo's encoder for continuous use: its window
    // (61 samples at 120 Hz: 0.5 s), the image on screen at its start (window_start_s 0), no onset.
    for d in &cont {
        let (start, end) = (d["window_start"].as_f64().unwrap(), d["window_end"].as_f64().unwrap());
        assert!((end - start - 0.5).abs() < 1e-3 && d["onset"] == 0.0, "{d}");
        assert!((d["on_screen_at"].as_f64().unwrap() - start).abs() < 1e-9, "{d}");
    }
    // Continuous windows end at the newest sample: latency is the resampler's ~50 ms plus little.
    let mut lat: Vec<f64> = cont.iter().map(|d| d["latency_ms"].as_f64().unwrap()).collect();
    lat.sort_by(f64::total_cmp);
    assert!(lat[lat.len() / 2] < 200.0, "median latency {} ms", lat[lat.len() / 2]);
    assert!(std::fs::read_dir(dir.path()).unwrap().count() > 0, "no generated images saved");

    // Metrics match the run.
    let decoded = metric(&page, "megdecoder_windows_decoded_total");
    assert!(decoded >= lines.len() as f64, "metrics say {decoded} decoded, the client got {}", lines.len());
    assert!(metric(&page, &format!("megdecoder_samples_total{{stream=\"{name}\"}}")) > 5000.0);
    assert_eq!(metric(&page, &format!("megdecoder_gaps_total{{stream=\"{name}\"}}")), 0.0);
    assert!(metric(&page, "megdecoder_latency_seconds_count") >= decoded);
    assert!(metric(&page, "megdecoder_images_generated_total") > 0.0);
    assert!(metric(&page, "megdecoder_encoder_seconds_bucket{le=\"+Inf\"}") >= decoded);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tx.send(());
    rt.block_on(server).unwrap().unwrap();
    sim.join().unwrap();
}
