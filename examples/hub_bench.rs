//! Harness: latency the hub and gRPC add between a decoding's publication and its arrival
//! at subscribers, with 1 and with 100 subscribers over TCP on loopback, alternated in the
//! same run. Decodings at 40 Hz (a 25 ms hop) with 768-d embeddings and top-5 hits.
//!
//!     cargo run --release --example hub_bench [-- --seconds 10 --rounds 2]

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use meg_decoder::model::Hit;
use meg_decoder::pipeline::{DecodeMode, Decoding, PipelineStats};
use meg_decoder::server::proto::{self, decoder_client::DecoderClient};
use meg_decoder::server::{serve, DecoderState, Hub, ServeOptions};

static EPOCH: OnceLock<Instant> = OnceLock::new();
fn now() -> f64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn arg(name: &str, default: f64) -> f64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn round(addr: std::net::SocketAddr, hub: Arc<Hub>, subscribers: usize, seconds: f64) -> Vec<f64> {
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut c = DecoderClient::connect(format!("http://{addr}")).await.unwrap();
        let mut st = c
            .subscribe(proto::SubscribeRequest {
                include_embedding: std::env::var_os("NO_EMBEDDING").is_none(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Ok(Some(d)) = st.message().await {
                if d.marker == "end" {
                    break;
                }
                lat.push((now() - d.decoded_at) * 1e3);
            }
            lat
        }));
    }
    while hub.subscribers().len() < subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = (seconds * 40.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    for i in 0..=n {
        tick.tick().await;
        let d = Decoding {
            sequence: i,
            mode: if i == n { DecodeMode::EventLocked } else { DecodeMode::Continuous },
            marker: (i == n).then(|| meg_decoder::pipeline::MarkerRef { text: "end".into(), timestamp: 0.0 }),
            onset: meg_decoder::lsl::local_clock().unwrap_or(0.0) - 1.0,
            on_screen_at: None,
            // Fresh on the LSL clock, which the server ages decodings by.
            window_start: meg_decoder::lsl::local_clock().unwrap_or(0.0) - 1.5,
            window_end: meg_decoder::lsl::local_clock().unwrap_or(0.0),
            decoded_at: now(),
            latency_s: 0.0,
            encoder_s: 0.0,
            embedding: vec![0.5; 768],
            top_k: (0..5).map(|k| Hit { image_id: format!("img_{k:04}"), index: k, score: 0.9 }).collect(),
            repaired: false,
            model: std::sync::Arc::from("test@000000000000"),
            stage: 0,
            stages: 0,
        };
        hub.publish(Arc::new(d));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn main() {
    let seconds = arg("--seconds", 10.0);
    let rounds = arg("--rounds", 2.0) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let state = Arc::new(DecoderState {
            hub: Hub::new(1024),
            streams: Vec::new(),
            rings: Vec::new(),
            model: Default::default(),
            pipeline: Arc::new(PipelineStats::default()),
            gallery: Default::default(),
            images_generated: Arc::new(AtomicU64::new(0)),
            recorder: None,
            failure: Default::default(),
            switcher: None,
            signal: None,
            buffer_s: 10.0,
            allow_load_model: false,
        });
        let opts = ServeOptions { listen: "127.0.0.1:0".parse().unwrap(), token: None, tls: None };
        let (addr, fut) = serve(state.clone(), opts, std::future::pending()).await.unwrap();
        tokio::spawn(fut);
        let (mut one, mut hundred) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            one.extend(round(addr, state.hub.clone(), 1, seconds).await);
            hundred.extend(round(addr, state.hub.clone(), 100, seconds).await);
            eprintln!("round {r} done");
        }
        let missed = state.hub.missed_total.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "added latency, publish -> subscriber (ms), {rounds} rounds of {seconds} s at 40 Hz, 768-d embeddings:"
        );
        println!(
            "  1 subscriber:    p50 {:.3}  p99 {:.3}  ({} messages)",
            pct(&mut one, 0.5),
            pct(&mut one, 0.99),
            one.len()
        );
        println!(
            "  100 subscribers: p50 {:.3}  p99 {:.3}  ({} messages)",
            pct(&mut hundred, 0.5),
            pct(&mut hundred, 0.99),
            hundred.len()
        );
        println!("  missed decodings: {missed} (goal: p99 added latency under 1 ms)");
    });
}
