//! [`App`]: the running service, assembled from a [`Config`] along the data's path:
//!
//! ```text
//! MegAcquisition ─▶ RingBuffer ─┬─▶ LivePipeline (DecoderCore) ─┬─▶ Hub ──▶ gRPC subscribers
//! MarkerAcquisition ─(markers)──┤         ▲                     ├─▶ ImageWorker ─▶ Hub (images)
//!                               │   ModelSwitcher (LoadModel, SIGHUP)
//!                               └─▶ Recorder ◀──(markers, decodings, switches)┘
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;

use crate::config::Config;
use crate::ingest::{AcquisitionConfig, MarkerAcquisition, MegAcquisition, StreamQuery};
use crate::model::EncoderOptions;
use crate::pipeline::{DecoderCore, ImageWorker, LivePipeline, PipelineConfig};
use crate::record::{Recorder, RecorderSources, RecordingLabels};
use crate::server::{DecoderState, Hub, StreamHandle};
use crate::swap::{model_info, LoadedModel, ModelSwitcher};

/// Everything that runs, kept alive together.
pub struct App {
    pub state: Arc<DecoderState>,
    pub pipeline: LivePipeline,
    pub recorder: Option<Arc<Recorder>>,
    pub switcher: Arc<ModelSwitcher>,
    acquisition: MegAcquisition,
    markers: Option<MarkerAcquisition>,
}

impl App {
    /// Connects the streams, loads the model, starts every thread. Fails early and
    /// clearly on any bad input.
    pub fn start(cfg: &Config, origin: &str) -> anyhow::Result<Self> {
        cfg.validate(origin)?;
        let opts = EncoderOptions {
            intra_threads: cfg.model.intra_threads,
            execution_provider: cfg.model.execution_provider,
            warmup_runs: 3,
        };
        let LoadedModel { encoder, gallery, generator, companions, .. } = LoadedModel::load(&cfg.model.dir, &opts)?;
        let contract = encoder.contract().clone();
        tracing::info!("model {}", contract.summary());

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
            continuous_encoder: cfg.pipeline.continuous_encoder,
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
            keep_up: cfg.pipeline.keep_up,
            max_lag_s: cfg.pipeline.max_lag_s,
        };
        let mut core = DecoderCore::new(encoder, gallery.clone(), &acquisition.description, pc.clone())?
            .with_companions(companions)?;
        for (name, end) in core.stages() {
            tracing::info!(
                "progressive stage '{name}': event-locked decoding of the window ending {end:+.3} s after the onset"
            );
        }
        if let Some(c) = core.continuous_contract() {
            tracing::info!("continuous decodings by the encoder trained for continuous use: {}", c.summary());
        }
        core.set_markers_expected(markers.is_some());
        tracing::info!("preprocessing: {}", core.preprocessing_summary());
        let hub = Hub::new(cfg.server.hub_capacity);
        let (to_recorder_d, recorder_decodings) = crossbeam_channel::bounded(4096);
        let (to_recorder_n, recorder_notes) = crossbeam_channel::bounded(64);
        let metadata = Arc::new(RwLock::new(serde_json::json!({
                "model": {"name": contract.name, "sha256": core.encoder().sha256(), "id": core.model_id().as_ref(),
                          "dir": cfg.model.dir},
                "pipeline": pc,
                "stream": {"name": acquisition.description.name, "source_id": acquisition.description.source_id},
        })));
        let recorder = if recording {
            let sources = RecorderSources {
                meg: acquisition.description.clone(),
                ring: acquisition.ring.clone(),
                meg_stats: acquisition.stats.clone(),
                markers: markers.as_ref().map(|m| (m.description.clone(), recorder_markers)),
                decodings: recorder_decodings,
                notes: Some(recorder_notes),
                metadata: metadata.clone(),
            };
            Some(Recorder::start(cfg.recording.dir.clone(), sources)?)
        } else {
            None
        };
        let model_info = model_info(&core, generator.is_some());
        let sha = core.model_digest().to_string();
        // Always running (idle without a generator), so a model swapped in can bring one.
        let images = {
            let hub = hub.clone();
            ImageWorker::start(generator, vec![Box::new(move |img| hub.publish_image(img.clone()))])
        };
        let images_generated = images.generated.clone();
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
        let (to_pipeline_models, switches) = crossbeam_channel::bounded(1);
        let signal = crate::pipeline::SignalTap::new();
        let pc_buffer_s = pc.buffer_s;
        let inputs = crate::pipeline::PipelineInputs {
            ring: acquisition.ring.clone(),
            start,
            markers: pipeline_markers,
            switches,
            signal: signal.clone(),
        };
        let pipeline = LivePipeline::start(core, inputs, sinks, Some(images));
        let model = Arc::new(RwLock::new(model_info));
        let gallery = Arc::new(RwLock::new(gallery));
        let model_root = if cfg.server.model_root.as_os_str().is_empty() {
            cfg.model.dir.canonicalize()?.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
        } else {
            cfg.server.model_root.clone()
        };
        let switcher = Arc::new(ModelSwitcher {
            stream: acquisition.description.clone(),
            config: pc,
            opts,
            ring: acquisition.ring.clone(),
            seg_offset: pipeline.seg_offset.clone(),
            to_pipeline: to_pipeline_models,
            model_root,
            busy: Mutex::new(()),
            current: Arc::new(RwLock::new((cfg.model.dir.canonicalize()?, sha))),
            model: model.clone(),
            gallery: gallery.clone(),
            metadata: recording.then_some(metadata),
            notes: recording.then_some(to_recorder_n),
            switches: Default::default(),
            markers_expected: markers.is_some(),
        });
        let mut streams =
            vec![StreamHandle { description: acquisition.description.clone(), stats: acquisition.stats.clone() }];
        if let Some(m) = &markers {
            streams.push(StreamHandle { description: m.description.clone(), stats: m.stats.clone() });
        }
        let state = Arc::new(DecoderState {
            hub,
            streams,
            rings: vec![(acquisition.description.name.clone(), acquisition.ring.clone())],
            model,
            pipeline: pipeline.stats.clone(),
            gallery,
            images_generated,
            recorder: recorder.clone().map(|r| r as Arc<dyn crate::record::RecorderControl>),
            failure: Default::default(),
            switcher: Some(switcher.clone()),
            signal: Some(signal),
            buffer_s: pc_buffer_s,
            allow_load_model: cfg.server.allow_load_model
                || !cfg.server.token_file.as_os_str().is_empty()
                || std::env::var("MEG_DECODER_TOKEN").is_ok_and(|t| !t.is_empty()),
        });
        Ok(Self { state, pipeline, recorder, switcher, acquisition, markers })
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

/// Re-reads the configuration (the file and the command line, as at start).
pub type Reload = Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// Runs the whole service until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    origin: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_reload(cfg, origin, shutdown, None).await
}

/// [`run`], and on SIGHUP re-reads the configuration with `reload`: a changed model
/// directory (or a changed encoder file in the same one) is switched in live; other
/// changed settings are logged as needing a restart.
pub async fn run_with_reload(
    cfg: Config,
    origin: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let app = tokio::task::block_in_place(|| App::start(&cfg, origin))?;
    let hangup = reload.map(|reload| {
        let (switcher, started) = (app.switcher.clone(), cfg.clone());
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                tracing::warn!("no SIGHUP handler: the model cannot be reloaded by signal");
                return;
            };
            while hup.recv().await.is_some() {
                let (reload, switcher, started) = (reload.clone(), switcher.clone(), started.clone());
                let _ = tokio::task::spawn_blocking(move || reload_on_hangup(&reload, &switcher, &started)).await;
            }
        })
    });
    let token = if cfg.server.token_file.as_os_str().is_empty() {
        std::env::var("MEG_DECODER_TOKEN").ok().filter(|t| !t.is_empty())
    } else {
        Some(crate::server::BearerAuth::from_file(&cfg.server.token_file).map_err(anyhow::Error::msg)?)
    };
    let tls = (!cfg.server.tls_cert.as_os_str().is_empty())
        .then(|| crate::server::TlsFiles { cert: cfg.server.tls_cert.clone(), key: cfg.server.tls_key.clone() });
    let http = match cfg.http_server() {
        None => None,
        Some((listen, viewer)) => {
            let opts = crate::server::HttpOptions {
                listen: listen.parse().with_context(|| format!("http.listen '{listen}'"))?,
                viewer,
                token: token.clone(),
                tls: tls.clone(),
                max_connections: cfg.http.max_connections,
                header_timeout: std::time::Duration::from_secs_f64(cfg.http.header_timeout_s),
            };
            let (addr, task) = crate::server::serve_http(app.state.clone(), opts)
                .await
                .with_context(|| format!("HTTP server on {listen}"))?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            if viewer {
                tracing::info!("viewer on {scheme}://{addr}/ (metrics: {scheme}://{addr}/metrics)");
            } else {
                tracing::info!("metrics on {scheme}://{addr}/metrics");
            }
            Some(task)
        }
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
    if let Some(h) = http {
        h.abort();
    }
    monitor.abort();
    if let Some(h) = hangup {
        h.abort();
    }
    tokio::task::block_in_place(|| app.shutdown());
    if let Some(t) = since {
        tracing::info!("shutdown complete {:.2} s after the signal", t.elapsed().as_secs_f64());
    }
    if let Some(why) = fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!("{why}; stopped so that the supervisor (systemd, Kubernetes) restarts the service (server.on_thread_failure = \"degraded\" keeps it running unhealthy instead)");
    }
    res.map_err(Into::into)
}

/// SIGHUP: re-reads the configuration and switches to its model if that changed. Errors
/// are logged; the running model goes on.
fn reload_on_hangup(reload: &Reload, switcher: &ModelSwitcher, started: &Config) {
    let cfg = match reload() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: the configuration could not be re-read ({e:#}); the running model goes on");
            return;
        }
    };
    let mut same = cfg.clone();
    same.model.dir = started.model.dir.clone();
    if same != *started {
        tracing::warn!("SIGHUP: settings other than model.dir changed; they take effect at the next restart");
    }
    let dir = match cfg.model.dir.canonicalize() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("SIGHUP: model.dir {}: {e}; the running model goes on", cfg.model.dir.display());
            return;
        }
    };
    // The model as its files are now: encoder, stages and continuous encoder.
    let digest = crate::model::ModelDir::open(&dir).and_then(|m| m.digest()).unwrap_or_default();
    if dir == switcher.current_dir() && digest == switcher.current_digest() {
        tracing::info!("SIGHUP: model {} unchanged", dir.display());
        return;
    }
    tracing::info!("SIGHUP: loading model {}", dir.display());
    match switcher.switch_to(&dir) {
        Ok(r) => tracing::info!("SIGHUP: now decoding with {} (from decoding #{})", r.model.id, r.done.first_sequence),
        Err(e) => tracing::error!("SIGHUP: {e}; the running model goes on"),
    }
}

/// The model directory shipped with the project: the brain module trained on the demo world.
pub fn bundled_model() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo-brain"))
}
