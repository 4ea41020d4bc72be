//! `meg-decoder client`: the console subscriber. One line per decoding for people, JSON
//! for machines, generated images saved to a folder, and a running top-1/top-5 hit rate
//! when markers name the true image (with `--held-out`, apart for held-out and training
//! images).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
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
    /// A world's held_out.txt (e.g. models/demo/world/held_out.txt): report the hit rate
    /// of held-out and training images apart (a validation.txt beside it, if any, names a
    /// third group). JSON lines get "held_out": true/false.
    #[arg(long, value_name = "FILE")]
    pub held_out: Option<PathBuf>,
}

/// Top-1/top-5 hits of event-locked decodings whose marker names an image: the final
/// stage's (the model's own window) when the model decodes progressively.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HitRate {
    pub trials: u64,
    pub top1: u64,
    pub top5: u64,
}

impl HitRate {
    pub fn add(&mut self, d: &proto::Decoding) {
        if d.stage == d.stages {
            self.add_any_stage(d);
        }
    }
    fn add_any_stage(&mut self, d: &proto::Decoding) {
        if d.mode != proto::Mode::EventLocked as i32 || d.marker.is_empty() || d.top_k.is_empty() {
            return;
        }
        self.trials += 1;
        self.top1 += u64::from(d.top_k[0].image_id == d.marker);
        self.top5 += u64::from(d.top_k.iter().take(5).any(|h| h.image_id == d.marker));
    }
    pub fn line(&self) -> String {
        format!("hit rate over {} stimuli: {}", self.trials, self.rates())
    }
    fn rates(&self) -> String {
        let pct = |n: u64| if self.trials == 0 { 0.0 } else { 100.0 * n as f64 / self.trials as f64 };
        format!("top-1 {:.1}%, top-5 {:.1}%", pct(self.top1), pct(self.top5))
    }
}

/// Hit rates over all stimuli, or, given the held-out ids, per group (held-out, training,
/// validation).
#[derive(Debug, Default)]
pub struct HitRates {
    all: HitRate,
    groups: Option<Groups>,
    /// Progressive decoding: the hits of each stage (index stage - 1), when there are
    /// several.
    per_stage: Vec<HitRate>,
}

#[derive(Debug)]
struct Groups {
    held_out_ids: HashSet<String>,
    validation_ids: HashSet<String>,
    held_out: HitRate,
    training: HitRate,
    validation: HitRate,
}

/// Non-empty trimmed lines of `path`.
fn read_ids(path: &Path) -> anyhow::Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

impl HitRates {
    /// Per-group rates from a world's `held_out.txt` (and the `validation.txt` beside it).
    pub fn with_held_out(path: &Path) -> anyhow::Result<Self> {
        let held_out_ids = read_ids(path)?;
        anyhow::ensure!(
            !held_out_ids.is_empty(),
            "--held-out {} lists no image ids (expected a world's held_out.txt: one gallery id per line)",
            path.display()
        );
        let validation = path.with_file_name("validation.txt");
        let validation_ids = if validation.is_file() { read_ids(&validation)? } else { HashSet::new() };
        let groups = Groups {
            held_out_ids,
            validation_ids,
            held_out: HitRate::default(),
            training: HitRate::default(),
            validation: HitRate::default(),
        };
        Ok(Self { all: HitRate::default(), groups: Some(groups), per_stage: Vec::new() })
    }

    /// Counts `d`; with groups, says whether its image is held out.
    pub fn add(&mut self, d: &proto::Decoding) -> Option<bool> {
        self.all.add(d);
        if d.stages > 1 && (1..=d.stages).contains(&d.stage) {
            if self.per_stage.len() < d.stages as usize {
                self.per_stage.resize(d.stages as usize, HitRate::default());
            }
            self.per_stage[d.stage as usize - 1].add_any_stage(d);
        }
        let g = self.groups.as_mut()?;
        let held = g.held_out_ids.contains(&d.marker);
        if held {
            g.held_out.add(d);
        } else if g.validation_ids.contains(&d.marker) {
            g.validation.add(d);
        } else {
            g.training.add(d);
        }
        Some(held)
    }

    pub fn trials(&self) -> u64 {
        self.all.trials
    }

    pub fn line(&self) -> String {
        let mut s = self.groups_line();
        if self.per_stage.len() > 1 {
            let stages: Vec<String> =
                self.per_stage.iter().enumerate().map(|(i, h)| format!("stage {} {}", i + 1, h.rates())).collect();
            s += &format!(" ({})", stages.join("; "));
        }
        s
    }

    fn groups_line(&self) -> String {
        let Some(g) = &self.groups else { return self.all.line() };
        let mut s = format!(
            "hit rate over {} held-out stimuli: {}; over {} training stimuli: {}",
            g.held_out.trials,
            g.held_out.rates(),
            g.training.trials,
            g.training.rates()
        );
        if g.validation.trials > 0 {
            s += &format!("; over {} validation stimuli: {}", g.validation.trials, g.validation.rates());
        }
        s
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
    let mut hits = match &a.held_out {
        Some(path) => HitRates::with_held_out(path)?,
        None => HitRates::default(),
    };
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
        let held_out = hits.add(&d);
        if let (Some(dir), false) = (&a.images, d.image_png.is_empty()) {
            std::fs::write(dir.join(format!("{:06}.png", d.image_sequence)), &d.image_png)?;
            images += 1;
        }
        if a.json {
            let mut v = serde_json::json!({
                "sequence": d.sequence, "mode": if d.mode == proto::Mode::EventLocked as i32 { "event_locked" } else { "continuous" },
                "marker": d.marker, "onset": d.onset, "on_screen_at": (d.on_screen_at != 0.0).then_some(d.on_screen_at), "window_start": d.window_start, "window_end": d.window_end, "decoded_at": d.decoded_at,
                "latency_ms": d.latency_ms, "age_ms": d.age_ms, "stage": d.stage, "stages": d.stages, "received_at": received_at, "encoder_ms": d.encoder_ms, "missed": d.missed, "repaired": d.repaired,
                "top_k": d.top_k.iter().map(|h| serde_json::json!({"image_id": h.image_id, "score": h.score})).collect::<Vec<_>>(),
                "embedding": d.embedding, "image_sequence": d.image_sequence, "image_bytes": d.image_png.len(),
            });
            if let (Some(h), false) = (held_out, d.marker.is_empty()) {
                v["held_out"] = h.into();
            }
            println!("{v}");
        } else {
            let top: Vec<String> = d.top_k.iter().map(|h| format!("{}:{:.2}", h.image_id, h.score)).collect();
            let marker = if d.marker.is_empty() && d.on_screen_at != 0.0 {
                // A model trained for continuous use: the image on screen that long ago.
                format!("on screen at {:+.2} s", d.on_screen_at - d.window_end)
            } else if d.marker.is_empty() {
                "continuous".to_string()
            } else {
                let ok = d.top_k.first().is_some_and(|h| h.image_id == d.marker);
                let stage = if d.stages > 1 { format!(" [stage {}/{}]", d.stage, d.stages) } else { String::new() };
                format!("shown {}{}{stage}", d.marker, if ok { " ✓" } else { "" })
            };
            println!(
                "#{:<6} t={:.3} {:<22} top5 [{}] latency {:.1} ms{}{}",
                d.sequence,
                d.window_end,
                marker,
                top.join(" "),
                d.latency_ms,
                if d.missed > 0 { format!(" (missed {})", d.missed) } else { String::new() },
                if d.mode == proto::Mode::EventLocked as i32 && hits.trials() > 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(shown: &str, top1: &str) -> proto::Decoding {
        let hit = |id: &str| proto::Hit { image_id: id.into(), ..Default::default() };
        proto::Decoding {
            mode: proto::Mode::EventLocked as i32,
            marker: shown.into(),
            top_k: vec![hit(top1), hit("img_9"), hit("img_8")],
            ..Default::default()
        }
    }

    #[test]
    fn hit_rates_are_split_into_held_out_training_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("held_out.txt"), "img_1\nimg_2\n").unwrap();
        std::fs::write(dir.path().join("validation.txt"), "img_3\n").unwrap();
        let mut rates = HitRates::with_held_out(&dir.path().join("held_out.txt")).unwrap();
        assert_eq!(rates.add(&locked("img_1", "img_1")), Some(true));
        assert_eq!(rates.add(&locked("img_2", "img_5")), Some(true));
        assert_eq!(rates.add(&locked("img_5", "img_5")), Some(false));
        assert_eq!(
            rates.line(),
            "hit rate over 2 held-out stimuli: top-1 50.0%, top-5 50.0%; over 1 training stimuli: top-1 100.0%, top-5 100.0%"
        );
        rates.add(&locked("img_3", "img_9"));
        assert!(rates.line().ends_with("; over 1 validation stimuli: top-1 0.0%, top-5 0.0%"), "{}", rates.line());
        assert_eq!(rates.trials(), 4);

        // Without --held-out the line is as it always was.
        let mut plain = HitRates::default();
        assert_eq!(plain.add(&locked("img_1", "img_1")), None);
        assert_eq!(plain.line(), "hit rate over 1 stimuli: top-1 100.0%, top-5 100.0%");
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n").unwrap();
        assert!(HitRates::with_held_out(&empty).unwrap_err().to_string().contains("lists no image ids"));
    }
}
