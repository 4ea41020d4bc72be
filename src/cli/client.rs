//! `meg-decoder client`: the console subscriber. One line per decoding for people, JSON
//! for machines, generated images saved to a folder, and a running top-1/top-5 hit rate
//! when markers name the true image.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use meg_decoder::server::proto::{self, decoder_client::DecoderClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Decoder address (http://host:port, or https:// with --tls-ca).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "MEG_DECODER_ADDR")]
    pub addr: String,
    /// Bearer token (if the server requires one).
    #[arg(long, env = "MEG_DECODER_TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for https://.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Save generated images here as <sequence>.png.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Include the embedding vector (JSON output).
    #[arg(long)]
    pub embedding: bool,
    /// At most this many continuous decodings per second (event-locked are always shown).
    #[arg(long, default_value_t = 4.0)]
    pub max_rate: f64,
    /// Only event-locked decodings.
    #[arg(long)]
    pub event_locked_only: bool,
    /// Stop after this many decodings.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the server's status and exit.
    #[arg(long)]
    pub status: bool,
    /// Never receive a decoding older than this many seconds (window end to send; the
    /// server's default is 2 s). Dropped ones are counted as missed.
    #[arg(long)]
    pub max_age: Option<f64>,
    /// Closed-loop mode: when behind, skip straight to the newest decoding.
    #[arg(long)]
    pub latest_only: bool,
}

/// Top-1/top-5 hits of event-locked decodings whose marker names an image.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HitRate {
    pub trials: u64,
    pub top1: u64,
    pub top5: u64,
}

impl HitRate {
    pub fn add(&mut self, d: &proto::Decoding) {
        if d.mode != proto::Mode::EventLocked as i32 || d.marker.is_empty() || d.top_k.is_empty() {
            return;
        }
        self.trials += 1;
        self.top1 += u64::from(d.top_k[0].image_id == d.marker);
        self.top5 += u64::from(d.top_k.iter().take(5).any(|h| h.image_id == d.marker));
    }
    pub fn line(&self) -> String {
        let pct = |n: u64| if self.trials == 0 { 0.0 } else { 100.0 * n as f64 / self.trials as f64 };
        format!("hit rate over {} stimuli: top-1 {:.1}%, top-5 {:.1}%", self.trials, pct(self.top1), pct(self.top5))
    }
}

async fn connect(a: &ClientArgs) -> anyhow::Result<Channel> {
    let mut ep = Channel::from_shared(a.addr.clone()).with_context(|| format!("bad address '{}'", a.addr))?;
    if let Some(ca) = &a.tls_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        ep =
            ep.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)).domain_name("localhost"))?;
    }
    ep.connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the decoder at {} (is `meg-decoder serve` running?)", a.addr))
}

fn with_token<T>(msg: T, token: &Option<String>) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().context("token has invalid characters")?);
    }
    Ok(r)
}

pub fn run(a: ClientArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: ClientArgs) -> anyhow::Result<()> {
    let mut client = DecoderClient::new(connect(&a).await?).max_decoding_message_size(64 << 20);
    if a.status {
        let s = client.get_status(with_token(proto::GetStatusRequest {}, &a.token)?).await?.into_inner();
        println!("{s:#?}");
        return Ok(());
    }
    if let Some(dir) = &a.images {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let req = proto::SubscribeRequest {
        include_embedding: a.embedding,
        include_images: a.images.is_some(),
        max_rate_hz: a.max_rate,
        continuous: !a.event_locked_only,
        event_locked: true,
        image_format: proto::ImageFormat::Png as i32,
        image_size: 0,
        top_k: 5,
        max_age_s: a.max_age.unwrap_or(0.0),
        latest_only: a.latest_only,
    };
    let mut stream = client.subscribe(with_token(req, &a.token)?).await?.into_inner();
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut hits = HitRate::default();
    let (mut n, mut missed, mut images) = (0u64, 0u64, 0u64);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let timeout = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
        let msg = tokio::select! {
            _ = &mut interrupted => break,
            _ = tokio::time::sleep(timeout) => break,
            m = stream.message() => m?,
        };
        let Some(d) = msg else { break };
        // On this machine's LSL clock, the clock of window_end when client and server share
        // a machine (end-to-end latency = received_at - window_end).
        let received_at = meg_decoder::lsl::local_clock().unwrap_or(f64::NAN);
        n += 1;
        missed += d.missed;
        hits.add(&d);
        if let (Some(dir), false) = (&a.images, d.image_png.is_empty()) {
            std::fs::write(dir.join(format!("{:06}.png", d.image_sequence)), &d.image_png)?;
            images += 1;
        }
        if a.json {
            let v = serde_json::json!({
                "sequence": d.sequence, "mode": if d.mode == proto::Mode::EventLocked as i32 { "event_locked" } else { "continuous" },
                "marker": d.marker, "onset": d.onset, "window_start": d.window_start, "window_end": d.window_end, "decoded_at": d.decoded_at,
                "latency_ms": d.latency_ms, "age_ms": d.age_ms, "received_at": received_at, "encoder_ms": d.encoder_ms, "missed": d.missed, "repaired": d.repaired,
                "top_k": d.top_k.iter().map(|h| serde_json::json!({"image_id": h.image_id, "score": h.score})).collect::<Vec<_>>(),
                "embedding": d.embedding, "image_sequence": d.image_sequence, "image_bytes": d.image_png.len(),
            });
            println!("{v}");
        } else {
            let top: Vec<String> = d.top_k.iter().map(|h| format!("{}:{:.2}", h.image_id, h.score)).collect();
            let marker = if d.marker.is_empty() {
                "continuous".to_string()
            } else {
                let ok = d.top_k.first().is_some_and(|h| h.image_id == d.marker);
                format!("shown {}{}", d.marker, if ok { " ✓" } else { "" })
            };
            println!(
                "#{:<6} t={:.3} {:<22} top5 [{}] latency {:.1} ms{}{}",
                d.sequence,
                d.window_end,
                marker,
                top.join(" "),
                d.latency_ms,
                if d.missed > 0 { format!(" (missed {})", d.missed) } else { String::new() },
                if d.mode == proto::Mode::EventLocked as i32 && hits.trials > 0 {
                    format!(" | {}", hits.line())
                } else {
                    String::new()
                }
            );
        }
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
    }
    let summary = format!(
        "{n} decodings in {:.1} s, {missed} missed, {images} images saved; {}",
        started.elapsed().as_secs_f64(),
        hits.line()
    );
    if a.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}
