//! [`App`]: the running service, assembled from a [`Config`] along the data's path:
//!
//! ```text
//! MegAcquisition ─▶ RingBuffer ─┬─▶ LivePipeline (DecoderCore) ─┬─▶ Hub ──▶ gRPC subscribers
//! MarkerAcquisition ─(markers)──┤                               ├─▶ ImageWorker ─▶ Hub (images)
//!                               └─▶ Recorder ◀──(markers, decodings)┘
//! ```

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::ingest::{AcquisitionConfig, MarkerAcquisition, MegAcquisition, StreamQuery};
use crate::model::{Encoder, EncoderOptions, Gallery, Generator, ModelDir};
use crate::pipeline::{DecoderCore, ImageWorker, LivePipeline, PipelineConfig};
use crate::record::{Recorder, RecorderSources, RecordingLabels};
use crate::server::{DecoderState, Hub, ModelInfo, StreamHandle};

/// Everything that runs, kept alive together.
pub struct App {
    pub state: Arc<DecoderState>,
    pub pipeline: LivePipeline,
    pub recorder: Option<Arc<Recorder>>,
    acquisition: MegAcquisition,
    markers: Option<MarkerAcquisition>,
}

impl App {
    /// Connects the streams, loads the model, starts every thread. Fails early and
    /// clearly on any bad input.
    pub fn start(cfg: &Config, origin: &str) -> anyhow::Result<Self> {
        cfg.validate(origin)?;
        let model = ModelDir::open(&cfg.model.dir)?;
        let opts = EncoderOptions {
            intra_threads: cfg.model.intra_threads,
            execution_provider: cfg.model.execution_provider,
            warmup_runs: 3,
        };
        let encoder = Encoder::load(&model.encoder, &opts)?;
        let contract = encoder.contract().clone();
        tracing::info!("model {}", contract.summary());
        let gallery = match &model.gallery {
            Some(dir) => Some(Arc::new(Gallery::load(dir)?)),
            None => None,
        };
        let generator = match &model.generator {
            Some(p) => Some(Generator::load(p, contract.embedding_dim, &opts)?),
            None => None,
        };

        let mut acq_cfg =
            AcquisitionConfig::new(StreamQuery::from_config(&cfg.stream.name, &cfg.stream.kind, &cfg.stream.source_id));
        acq_cfg.resolve_timeout_s = cfg.stream.resolve_timeout_s;
        acq_cfg.ring_seconds = cfg.stream.ring_seconds;
        acq_cfg.expected_channels = (cfg.stream.channels > 0).then_some(cfg.stream.channels);
        let acquisition = MegAcquisition::start(acq_cfg).context("connecting to the MEG stream")?;
        tracing::info!(
            "MEG stream: {} channels at {} Hz ('{}')",
            acquisition.description.channel_count,
            acquisition.description.nominal_srate,
            acquisition.description.name
        );
        let start = acquisition.ring.head();

        let (to_pipeline, pipeline_markers) = crossbeam_channel::unbounded();
        let (to_recorder_m, recorder_markers) = crossbeam_channel::bounded(4096);
        let recording = !cfg.recording.dir.as_os_str().is_empty();
        let markers = if cfg.markers.enabled {
            let q = StreamQuery::from_config(&cfg.markers.name, &cfg.markers.kind, "");
            let mut sinks = vec![to_pipeline];
            if recording {
                sinks.push(to_recorder_m);
            }
            match MarkerAcquisition::start(&q, cfg.markers.resolve_timeout_s, sinks) {
                Ok(m) => {
                    tracing::info!("marker stream '{}'", m.description.name);
                    Some(m)
                }
                Err(e) => {
                    tracing::warn!("no marker stream ({e}); decoding continuously only");
                    None
                }
            }
        } else {
            None
        };

        let pc = PipelineConfig {
            hop_s: cfg.pipeline.continuous.then_some(cfg.pipeline.hop_s),
            event_locked: cfg.pipeline.event_locked,
            top_k: cfg.pipeline.top_k,
            non_finite: cfg.pipeline.non_finite,
            buffer_s: cfg.pipeline.buffer_s,
            subject: cfg.model.subject,
            notch_override: cfg.preprocessing.notch_hz.clone(),
            max_batch: cfg.pipeline.max_batch,
            channel_matching: cfg.stream.channel_matching,
            events: cfg.events.clone(),
            settle_s: cfg.preprocessing.settle_s,
        };
        let mut core = DecoderCore::new(encoder, gallery.clone(), &acquisition.description, pc.clone())?;
        core.set_markers_expected(markers.is_some());
        tracing::info!("preprocessing: {}", core.preprocessing_summary());
        let hub = Hub::new(cfg.server.hub_capacity);
        let (to_recorder_d, recorder_decodings) = crossbeam_channel::bounded(4096);
        let recorder = if recording {
            let metadata = serde_json::json!({
                "model": {"name": contract.name, "sha256": core.encoder().sha256(), "dir": cfg.model.dir},
                "pipeline": pc,
                "stream": {"name": acquisition.description.name, "source_id": acquisition.description.source_id},
            });
            let sources = RecorderSources {
                meg: acquisition.description.clone(),
                ring: acquisition.ring.clone(),
                meg_stats: acquisition.stats.clone(),
                markers: markers.as_ref().map(|m| (m.description.clone(), recorder_markers)),
                decodings: recorder_decodings,
                metadata,
            };
            Some(Recorder::start(cfg.recording.dir.clone(), sources)?)
        } else {
            None
        };
        let model_info = ModelInfo {
            name: contract.name.clone(),
            contract: format!("{} | {}", contract.summary(), core.preprocessing_summary()),
            sha256: core.encoder().sha256().to_string(),
            embedding_space: contract.embedding_space.clone(),
            embedding_dim: contract.embedding_dim,
            generator: generator.is_some(),
        };
        let images = generator.map(|g| {
            let hub = hub.clone();
            ImageWorker::start(g, vec![Box::new(move |img| hub.publish_image(img.clone()))])
        });
        let images_generated = images.as_ref().map_or_else(Default::default, |w| w.generated.clone());
        let mut sinks: Vec<crate::pipeline::DecodingSink> = Vec::new();
        let h = hub.clone();
        sinks.push(Box::new(move |d| h.publish(d.clone())));
        if recording {
            sinks.push(Box::new(move |d| {
                let _ = to_recorder_d.try_send(d.clone());
            }));
        }
        if let (Some(r), true) = (&recorder, cfg.recording.on_start) {
            let labels = RecordingLabels {
                subject: cfg.recording.subject.clone(),
                session: cfg.recording.session.clone(),
                task: cfg.recording.task.clone(),
                run: None,
            };
            r.start_from(labels, Some(start))?;
        }
        let pipeline = LivePipeline::start(core, acquisition.ring.clone(), pipeline_markers, sinks, images, start);
        let mut streams =
            vec![StreamHandle { description: acquisition.description.clone(), stats: acquisition.stats.clone() }];
        if let Some(m) = &markers {
            streams.push(StreamHandle { description: m.description.clone(), stats: m.stats.clone() });
        }
        let state = Arc::new(DecoderState {
            hub,
            streams,
            rings: vec![(acquisition.description.name.clone(), acquisition.ring.clone())],
            model: model_info,
            pipeline: pipeline.stats.clone(),
            gallery,
            images_generated,
            recorder: recorder.clone().map(|r| r as Arc<dyn crate::record::RecorderControl>),
            failure: Default::default(),
        });
        Ok(Self { state, pipeline, recorder, acquisition, markers })
    }

    /// The failure slots of every long-lived thread (acquisition, markers, pipeline,
    /// generator, recorder).
    pub fn failures(&self) -> Vec<crate::worker::Failure> {
        let mut v = vec![self.acquisition.failure()];
        v.extend(self.markers.as_ref().map(MarkerAcquisition::failure));
        v.extend(self.pipeline.failures());
        v.extend(self.recorder.as_ref().map(|r| r.failure()));
        v
    }

    /// Stops the threads in order: inputs first, then the pipeline, then the recorder.
    pub fn shutdown(mut self) {
        self.acquisition.stop();
        if let Some(m) = self.markers.as_mut() {
            m.stop();
        }
        self.pipeline.stop();
        if let Some(r) = &self.recorder {
            use crate::record::RecorderControl;
            let st = r.stop();
            if !st.path.is_empty() {
                tracing::info!("recording closed: {} ({} bytes)", st.path, st.bytes_written);
            }
        }
    }
}

/// Runs the whole service until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    origin: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = tokio::task::block_in_place(|| App::start(&cfg, origin))?;
    let token = if cfg.server.token_file.as_os_str().is_empty() {
        std::env::var("MEG_DECODER_TOKEN").ok().filter(|t| !t.is_empty())
    } else {
        Some(crate::server::BearerAuth::from_file(&cfg.server.token_file).map_err(anyhow::Error::msg)?)
    };
    let tls = (!cfg.server.tls_cert.as_os_str().is_empty())
        .then(|| crate::server::TlsFiles { cert: cfg.server.tls_cert.clone(), key: cfg.server.tls_key.clone() });
    let metrics = if cfg.metrics.listen.is_empty() {
        None
    } else {
        let (addr, task) = crate::server::serve_metrics(cfg.metrics.listen.parse()?, app.state.clone())
            .await
            .with_context(|| format!("metrics endpoint on {}", cfg.metrics.listen))?;
        tracing::info!("metrics on http://{addr}/metrics");
        Some(task)
    };
    let opts = crate::server::ServeOptions { listen: cfg.server.listen, token, tls };
    // On the signal: end every subscriber stream first (with a final status), then let
    // tonic finish; whatever a client does, stop waiting after the shutdown timeout.
    let hub = app.state.hub.clone();
    let (fired_tx, mut fired) = tokio::sync::watch::channel(None::<std::time::Instant>);
    // A thread that dies makes the service unhealthy at once (health, GetStatus) and, unless
    // configured to keep serving degraded, stops it with an error (exit status 1).
    let slots = app.failures();
    let state = app.state.clone();
    let exit_on_failure = cfg.server.on_thread_failure == crate::config::OnThreadFailure::Exit;
    let died = async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Some(why) = slots.iter().find_map(|f| f.get()) {
                state.failure.set(why.clone());
                tracing::error!("the service is failing: {why}");
                if exit_on_failure {
                    return why;
                }
                std::future::pending::<()>().await;
            }
        }
    };
    let (died_tx, died_rx) = tokio::sync::oneshot::channel::<String>();
    let monitor = tokio::spawn(async move {
        let _ = died_tx.send(died.await);
    });
    let fatal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let fatal2 = fatal.clone();
    let signal = async move {
        tokio::select! {
            _ = shutdown => {}
            why = died_rx => {
                if let Ok(why) = why {
                    *fatal2.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                }
            }
        }
        let n = hub.close();
        tracing::info!("shutdown requested: ending {n} subscriber stream(s)");
        let _ = fired_tx.send(Some(std::time::Instant::now()));
    };
    let (addr, server) = crate::server::serve(app.state.clone(), opts, signal).await?;
    tracing::info!("gRPC on {addr} (megdecoder.v1.Decoder, health, reflection)");
    let limit = std::time::Duration::from_secs_f64(cfg.server.shutdown_timeout_s);
    let res = tokio::select! {
        r = server => r,
        _ = async {
            let _ = fired.wait_for(Option::is_some).await;
            tokio::time::sleep(limit).await;
        } => {
            tracing::warn!("gRPC connections still open {:.1} s after the shutdown signal; closing them", limit.as_secs_f64());
            Ok(())
        }
    };
    let since = *fired.borrow();
    tracing::info!("shutting down: stopping threads, closing the recording");
    if let Some(m) = metrics {
        m.abort();
    }
    monitor.abort();
    tokio::task::block_in_place(|| app.shutdown());
    if let Some(t) = since {
        tracing::info!("shutdown complete {:.2} s after the signal", t.elapsed().as_secs_f64());
    }
    if let Some(why) = fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!("{why}; stopped so that the supervisor (systemd, Kubernetes) restarts the service (server.on_thread_failure = \"degraded\" keeps it running unhealthy instead)");
    }
    res.map_err(Into::into)
}

/// The model directory shipped with the project: the brain module trained on the demo world.
pub fn bundled_model() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo-brain"))
}
