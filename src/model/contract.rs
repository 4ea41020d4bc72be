//! [`ModelContract`]: what an encoder needs fed, read from its ONNX `metadata_props`.
//!
//! The keys are documented in models/README.md and written by models/contract.py.
//! Everything the service does to a window before the encoder sees it comes from here, so
//! a lab's own exported model brings its own preprocessing.

use std::collections::HashMap;

/// How per-channel robust scaling is set up.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalerSpec {
    /// Center and scale per channel, fixed at training time.
    Fixed {
        center: Vec<f32>,
        scale: Vec<f32>,
    },
    /// Fit median / IQR on the first N seconds of the session.
    FitSeconds(f64),
    None,
}

/// How the model's training data was band-pass/notch filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterPhase {
    /// Forward-only IIR filters, exactly as the service runs them (models/contract.py's
    /// reference preprocessing): the filters' delay is part of what the model learnt.
    #[default]
    Causal,
    /// Forward-backward (zero-phase, MNE's offline default): the service, which must be
    /// causal, shifts its windows by the filters' group delay in the evoked band.
    ZeroPhase,
}

impl FilterPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterPhase::Causal => "causal",
            FilterPhase::ZeroPhase => "zero-phase",
        }
    }
}

/// What a window's embedding stands for (the contract's `target` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Trained on windows locked to an image onset at the decoded instant (the paper's
    /// epochs): "the image that appeared at the instant".
    #[default]
    Onset,
    /// Trained for continuous use, on every position of the window along a recording:
    /// "the image on screen at the instant".
    OnScreen,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Onset => "onset",
            Target::OnScreen => "on_screen",
        }
    }
}

/// How the stream is brought to the model's rate (the contract's `resampler` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResamplerProfile {
    /// Kaiser-windowed sinc, zero phase: 6 model periods of look-ahead (50 ms at 120 Hz).
    #[default]
    Sinc,
    /// Low latency: a causal Butterworth anti-alias low-pass (order
    /// [`CAUSAL_ANTIALIAS_ORDER`] at [`CAUSAL_ANTIALIAS_FRACTION`] of the model rate)
    /// among the filters, then linear interpolation (one input sample of look-ahead).
    Causal,
}

/// Order of the causal profile's anti-alias low-pass.
pub const CAUSAL_ANTIALIAS_ORDER: usize = 8;
/// Its cutoff as a fraction of the model's rate (0.4: 48 Hz at 120 Hz).
pub const CAUSAL_ANTIALIAS_FRACTION: f64 = 0.4;

impl ResamplerProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            ResamplerProfile::Sinc => "sinc",
            ResamplerProfile::Causal => "causal",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelContract {
    pub name: String,
    pub description: String,
    pub sample_rate: f64,
    pub window_samples: usize,
    /// Window start relative to the decoded instant (e.g. -0.5 s: onset at +0.5 s).
    pub window_start_s: f64,
    pub channel_names: Vec<String>,
    pub highpass_hz: Option<f64>,
    pub lowpass_hz: Option<f64>,
    pub filter_order: usize,
    pub notch_hz: Vec<f64>,
    pub notch_q: f64,
    /// How the training data was filtered (`causal` or `zero-phase`).
    pub filter_phase: FilterPhase,
    /// Band (Hz) whose group delay is compensated for `zero-phase` models.
    pub evoked_band_hz: (f64, f64),
    /// How the stream is resampled to the model's rate (`sinc` or `causal`).
    pub resampler: ResamplerProfile,
    /// Seconds after a (re)start of the filters before windows are decoded (None: the
    /// filters' own settling time).
    pub settle_s: Option<f64>,
    /// Baseline interval relative to the decoded instant.
    pub baseline_s: (f64, f64),
    pub scaler: ScalerSpec,
    pub clamp: Option<f32>,
    pub embedding_space: String,
    pub embedding_dim: usize,
    pub subjects: usize,
    /// What the embedding stands for: the image appearing at the decoded instant, or the
    /// image on screen then.
    pub target: Target,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ContractError {
    #[error("model metadata lacks '{0}' (see models/README.md for the contract; models/contract.py writes it)")]
    Missing(&'static str),
    #[error("model metadata '{key}' = '{value}' is invalid: {why}")]
    Invalid { key: &'static str, value: String, why: String },
}

fn get<'a>(m: &'a HashMap<String, String>, key: &'static str) -> Result<&'a str, ContractError> {
    m.get(key).map(String::as_str).ok_or(ContractError::Missing(key))
}

fn parse<T: std::str::FromStr>(m: &HashMap<String, String>, key: &'static str) -> Result<T, ContractError> {
    let v = get(m, key)?;
    v.trim().parse().map_err(|_| ContractError::Invalid { key, value: v.into(), why: "not a number".into() })
}

fn json<T: serde::de::DeserializeOwned>(m: &HashMap<String, String>, key: &'static str) -> Result<T, ContractError> {
    let v = get(m, key)?;
    serde_json::from_str(v).map_err(|e| ContractError::Invalid {
        key,
        value: v.chars().take(80).collect(),
        why: e.to_string(),
    })
}

fn opt<T: std::str::FromStr>(m: &HashMap<String, String>, key: &'static str) -> Result<Option<T>, ContractError> {
    match m.get(key).map(|s| s.trim()) {
        None | Some("") | Some("none") | Some("None") => Ok(None),
        Some(_) => parse(m, key).map(Some),
    }
}

impl ModelContract {
    pub fn from_metadata(m: &HashMap<String, String>) -> Result<Self, ContractError> {
        let version = get(m, "meg_decoder.contract")?;
        if version != "1" {
            return Err(ContractError::Invalid {
                key: "meg_decoder.contract",
                value: version.into(),
                why: "this meg-decoder reads contract version 1".into(),
            });
        }
        let channel_names: Vec<String> = json(m, "channel_names")?;
        let n = channel_names.len();
        let scaler = match get(m, "scaler")? {
            "fixed" => {
                let center: Vec<f32> = json(m, "scaler_center")?;
                let scale: Vec<f32> = json(m, "scaler_scale")?;
                if center.len() != n || scale.len() != n {
                    return Err(ContractError::Invalid {
                        key: "scaler_center",
                        value: format!("{} / {} values", center.len(), scale.len()),
                        why: format!("need one center and one scale per channel ({n})"),
                    });
                }
                if scale.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
                    return Err(ContractError::Invalid {
                        key: "scaler_scale",
                        value: "…".into(),
                        why: "scales must be positive".into(),
                    });
                }
                ScalerSpec::Fixed { center, scale }
            }
            "none" => ScalerSpec::None,
            s if s.starts_with("fit:") => ScalerSpec::FitSeconds(s[4..].parse().map_err(|_| {
                ContractError::Invalid { key: "scaler", value: s.into(), why: "expected fit:<seconds>".into() }
            })?),
            other => {
                return Err(ContractError::Invalid {
                    key: "scaler",
                    value: other.into(),
                    why: "expected 'fixed', 'none' or 'fit:<seconds>'".into(),
                })
            }
        };
        let baseline: Vec<f64> = json(m, "baseline_s")?;
        if baseline.len() != 2 {
            return Err(ContractError::Invalid {
                key: "baseline_s",
                value: format!("{baseline:?}"),
                why: "need [start, end]".into(),
            });
        }
        let filter_phase = match m.get("filter_phase").map(|s| s.trim()) {
            None | Some("") | Some("causal") => FilterPhase::Causal,
            Some("zero-phase") => FilterPhase::ZeroPhase,
            Some(other) => {
                return Err(ContractError::Invalid {
                    key: "filter_phase",
                    value: other.chars().take(40).collect(),
                    why: "expected 'causal' or 'zero-phase'".into(),
                })
            }
        };
        let resampler = match m.get("resampler").map(|s| s.trim()) {
            None | Some("") | Some("sinc") => ResamplerProfile::Sinc,
            Some("causal") if filter_phase == FilterPhase::Causal => ResamplerProfile::Causal,
            Some("causal") => {
                return Err(ContractError::Invalid {
                    key: "resampler",
                    value: "causal".into(),
                    why: "the causal (low-latency) resampler needs filter_phase 'causal': a zero-phase model's windows are already moved back by the filters' delay".into(),
                })
            }
            Some(other) => {
                return Err(ContractError::Invalid {
                    key: "resampler",
                    value: other.chars().take(40).collect(),
                    why: "expected 'sinc' (the default) or 'causal'".into(),
                })
            }
        };
        let evoked_band_hz = if m.contains_key("evoked_band_hz") {
            let v: Vec<f64> = json(m, "evoked_band_hz")?;
            match v[..] {
                [lo, hi] if lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi => (lo, hi),
                _ => {
                    return Err(ContractError::Invalid {
                        key: "evoked_band_hz",
                        value: format!("{v:?}"),
                        why: "need [low, high] in Hz with 0 <= low < high".into(),
                    })
                }
            }
        } else {
            (1.0, 30.0)
        };
        let target =
            match m.get("target").map(|s| s.trim()) {
                None | Some("") | Some("onset") => Target::Onset,
                Some("on_screen") => Target::OnScreen,
                Some(other) => return Err(ContractError::Invalid {
                    key: "target",
                    value: other.chars().take(40).collect(),
                    why:
                        "expected 'onset' (the default: windows locked to an image onset) or 'on_screen' (a model for \
                          continuous use: the image on screen at the decoded instant)"
                            .into(),
                }),
            };
        let settle_s: Option<f64> = opt(m, "settle_s")?;
        if let Some(s) = settle_s.filter(|s| !(0.0..=600.0).contains(s)) {
            return Err(ContractError::Invalid {
                key: "settle_s",
                value: s.to_string(),
                why: "need 0..600 seconds".into(),
            });
        }
        let c = Self {
            name: get(m, "name")?.to_string(),
            description: m.get("description").cloned().unwrap_or_default(),
            sample_rate: parse(m, "sample_rate_hz")?,
            window_samples: parse(m, "window_samples")?,
            window_start_s: parse(m, "window_start_s")?,
            channel_names,
            highpass_hz: opt(m, "highpass_hz")?,
            lowpass_hz: opt(m, "lowpass_hz")?,
            filter_order: opt(m, "filter_order")?.unwrap_or(4),
            notch_hz: if m.contains_key("notch_hz") { json(m, "notch_hz")? } else { Vec::new() },
            notch_q: opt(m, "notch_q")?.unwrap_or(30.0),
            filter_phase,
            evoked_band_hz,
            resampler,
            settle_s,
            baseline_s: (baseline[0], baseline[1]),
            scaler,
            clamp: opt(m, "clamp")?,
            embedding_space: get(m, "embedding_space")?.to_string(),
            embedding_dim: parse(m, "embedding_dim")?,
            subjects: opt(m, "subjects")?.unwrap_or(1),
            target,
        };
        for (key, v) in [("highpass_hz", c.highpass_hz), ("lowpass_hz", c.lowpass_hz)] {
            if let Some(f) = v.filter(|f| !f.is_finite() || *f <= 0.0) {
                return Err(ContractError::Invalid {
                    key,
                    value: f.to_string(),
                    why: "need a positive frequency".into(),
                });
            }
        }
        if let (Some(lo), Some(hi)) = (c.highpass_hz, c.lowpass_hz) {
            if lo >= hi {
                return Err(ContractError::Invalid {
                    key: "highpass_hz",
                    value: format!("{lo} (lowpass_hz {hi})"),
                    why: "the high-pass edge must be below the low-pass edge".into(),
                });
            }
        }
        if (c.highpass_hz.is_some() || c.lowpass_hz.is_some()) && !(1..=10).contains(&c.filter_order) {
            return Err(ContractError::Invalid {
                key: "filter_order",
                value: c.filter_order.to_string(),
                why: "need a Butterworth order of 1..10".into(),
            });
        }
        if let Some(f) = c.notch_hz.iter().find(|f| !f.is_finite() || **f <= 0.0) {
            return Err(ContractError::Invalid {
                key: "notch_hz",
                value: f.to_string(),
                why: "need positive frequencies".into(),
            });
        }
        if !(c.sample_rate.is_finite() && c.sample_rate <= 1e5)
            || c.window_samples > 1_000_000
            || c.embedding_dim > 1_000_000
        {
            return Err(ContractError::Invalid {
                key: "sample_rate_hz",
                value: format!("{} Hz, {} samples, dim {}", c.sample_rate, c.window_samples, c.embedding_dim),
                why: "rate at most 100 kHz, window and embedding at most 1e6".into(),
            });
        }
        if c.sample_rate <= 0.0 || c.window_samples == 0 || n == 0 || c.embedding_dim == 0 {
            return Err(ContractError::Invalid {
                key: "sample_rate_hz",
                value: format!(
                    "{} Hz, {} samples, {n} channels, dim {}",
                    c.sample_rate, c.window_samples, c.embedding_dim
                ),
                why: "rate, window, channels and embedding dim must all be positive".into(),
            });
        }
        Ok(c)
    }

    /// Window length in seconds.
    pub fn window_s(&self) -> f64 {
        self.window_samples as f64 / self.sample_rate
    }

    /// Baseline interval as sample indices into the window.
    pub fn baseline_samples(&self) -> (usize, usize) {
        let idx = |t: f64| {
            (((t - self.window_start_s) * self.sample_rate).round().max(0.0) as usize).min(self.window_samples)
        };
        (idx(self.baseline_s.0), idx(self.baseline_s.1))
    }

    /// A one-paragraph human summary.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} channels at {} Hz, window {} samples ({:+.3}..{:+.3} s{}), band {}-{} Hz{} ({} filters, {} resampler), baseline {:+.2}..{:+.2} s, scaler {}, clamp {}, embedding {} (dim {})",
            self.name,
            self.channel_names.len(),
            self.sample_rate,
            self.window_samples,
            self.window_start_s,
            self.window_start_s + (self.window_samples as f64 - 1.0) / self.sample_rate,
            match self.target {
                Target::Onset => "",
                Target::OnScreen => " around the instant whose on-screen image it decodes",
            },
            self.highpass_hz.map_or("DC".into(), |v| v.to_string()),
            self.lowpass_hz.map_or("Nyquist".into(), |v| v.to_string()),
            if self.notch_hz.is_empty() { String::new() } else { format!(", notch {:?} Hz", self.notch_hz) },
            self.filter_phase.as_str(),
            self.resampler.as_str(),
            self.baseline_s.0,
            self.baseline_s.1,
            match &self.scaler {
                ScalerSpec::Fixed { .. } => "fixed".to_string(),
                ScalerSpec::FitSeconds(s) => format!("fit on first {s} s"),
                ScalerSpec::None => "none".into(),
            },
            self.clamp.map_or("none".into(), |v| v.to_string()),
            self.embedding_space,
            self.embedding_dim
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let base = [
            ("meg_decoder.contract", "1"),
            ("name", "m"),
            ("sample_rate_hz", "120"),
            ("window_samples", "60"),
            ("window_start_s", "-0.1"),
            ("channel_names", r#"["A1"]"#),
            ("baseline_s", "[-0.1, 0.0]"),
            ("scaler", "none"),
            ("clamp", "20"),
            ("embedding_space", "x"),
            ("embedding_dim", "3"),
        ];
        base.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_resampler_profile_is_read_and_checked() {
        assert_eq!(ModelContract::from_metadata(&meta(&[])).unwrap().resampler, ResamplerProfile::Sinc);
        let c = ModelContract::from_metadata(&meta(&[("resampler", "causal")])).unwrap();
        assert_eq!(c.resampler, ResamplerProfile::Causal);
        assert!(c.summary().contains("causal resampler"), "{}", c.summary());
        let err = ModelContract::from_metadata(&meta(&[("resampler", "cubic")])).unwrap_err().to_string();
        assert!(err.contains("'resampler'") && err.contains("'sinc'") && err.contains("'causal'"), "{err}");
        let err = ModelContract::from_metadata(&meta(&[("resampler", "causal"), ("filter_phase", "zero-phase")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("filter_phase 'causal'"), "{err}");
    }

    #[test]
    fn the_target_is_read_and_checked() {
        assert_eq!(ModelContract::from_metadata(&meta(&[])).unwrap().target, Target::Onset);
        let c = ModelContract::from_metadata(&meta(&[("target", "on_screen")])).unwrap();
        assert_eq!(c.target, Target::OnScreen);
        assert!(c.summary().contains("on-screen image"), "{}", c.summary());
        let err = ModelContract::from_metadata(&meta(&[("target", "offset")])).unwrap_err().to_string();
        assert!(err.contains("'target'") && err.contains("'onset'") && err.contains("'on_screen'"), "{err}");
    }
}
