//! From the stream's samples to the model's: pick and reorder channels by name, convert
//! units to SI, repair NaN/Inf (hold the last finite value, so filter state stays
//! finite), causal band-pass and notch filters started at steady state, and resampling to
//! the model's rate. Every output is stamped from a running fit of the input timestamps
//! ([`SampleClock`]), so windows stay where the markers say however far the source's true
//! rate is from its nominal one. Per input sample: no allocation.

use crate::dsp::{
    butter_bandpass, butter_highpass, butter_lowpass, evoked_delay_s, notch, settle_time_s, Biquad, Kernel, Resampler,
    SampleClock, SosFilter,
};
use crate::model::{FilterPhase, ModelContract, ResamplerProfile, CAUSAL_ANTIALIAS_FRACTION, CAUSAL_ANTIALIAS_ORDER};

/// Why the stream cannot feed this model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("the stream lacks {} of the model's {total} channels: {}{}. Check the stream's channel labels (`meg-decoder inspect-stream --channels`) or use a model trained on this system", missing.len(), missing.iter().take(12).cloned().collect::<Vec<_>>().join(", "), if missing.len() > 12 { ", ..." } else { "" })]
    MissingChannels { missing: Vec<String>, total: usize },
    #[error("the model needs {model} Hz but the stream runs at {stream} Hz; a stream cannot be upsampled into information it lacks: use a model trained at or below {stream} Hz")]
    RateTooHigh { model: f64, stream: f64 },
    #[error("model channel '{model}' matches stream channel '{label}' of type '{kind}', which is not a brain sensor; the model must be trained on MEG channels (check the stream's channel types with `meg-decoder inspect-stream --channels`)")]
    NotABrainChannel { model: String, label: String, kind: String },
    #[error("model channel names match several stream channels once normalized: {names}; rename the stream's channels or use a model with the exact labels (stream.channel_matching = \"exact\")")]
    Ambiguous { names: String },
    #[error("the stream's nominal rate {stream} Hz is not a sampling rate meg-decoder can use (0 < rate <= 100 kHz); check the source's announced rate")]
    RateUnusable { stream: f64 },
    #[error("band edge {edge} Hz is not below the stream's Nyquist frequency ({nyquist} Hz)")]
    BandAboveNyquist { edge: f64, nyquist: f64 },
}

/// How model channel names are matched to the stream's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMatching {
    /// Labels must equal the model's names.
    Exact,
    /// Exact names first; otherwise names equal after [`normalize_channel_name`]
    /// (spaces removed, upper case, CTF serial suffix stripped: `MEG 0113` = `MEG0113`,
    /// `MLC11-2908` = `MLC11-4408` = `MLC11`).
    #[default]
    Normalized,
}

/// The form two channel names are compared in under [`ChannelMatching::Normalized`].
pub fn normalize_channel_name(name: &str) -> String {
    let mut n: String = name.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase();
    // CTF appends the system's serial number: MLC11-2908.
    if let Some((head, tail)) = n.rsplit_once('-') {
        if tail.len() == 4 && tail.bytes().all(|b| b.is_ascii_digit()) && !head.is_empty() {
            n.truncate(head.len());
        }
    }
    n
}

/// Channel types that are never brain sensors, whatever their name (MNE's and LSL's
/// spellings, lower case).
pub const NON_BRAIN_TYPES: [&str; 15] = [
    "stim",
    "trigger",
    "misc",
    "ref_meg",
    "refmeg",
    "eog",
    "ecg",
    "emg",
    "resp",
    "syst",
    "chpi",
    "exci",
    "ias",
    "bio",
    "photodiode",
];

/// Whether a stream channel of this type may feed a model channel.
pub fn is_brain_type(kind: &str) -> bool {
    let k = kind.trim().to_ascii_lowercase();
    !NON_BRAIN_TYPES.contains(&k.as_str())
}

/// Where each model channel comes from in the stream, and its unit conversion to SI.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMap {
    pub stream_index: Vec<usize>,
    pub to_si: Vec<f32>,
    /// Model channels matched to a differently spelt label: (model name, stream label).
    pub renamed: Vec<(String, String)>,
}

/// The SI base unit of an MNE/LSL channel type (`mag` -> T), if it has one.
pub fn si_unit_of_type(kind: &str) -> Option<&'static str> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "mag" | "meg" | "ref_meg" | "refmeg" | "magnetometer" => Some("T"),
        "grad" | "gradiometer" => Some("T/m"),
        "eeg" | "eog" | "ecg" | "emg" | "seeg" | "ecog" => Some("V"),
        _ => None,
    }
}

/// SI factor of a unit string as LSL sources write it: names (`T`, `fT`, `T/m`, `fT/cm`,
/// `V`, `uV`, `microvolts`...), mne-lsl's power-of-ten codes (`"0"` = the SI unit,
/// `"-15"` = femto, as FIFF's unit multipliers), or a unit-less marker (`""`, `n/a`).
/// None for anything else (the service then warns and takes the values as SI).
pub fn unit_factor(unit: &str) -> Option<f32> {
    let u = unit.trim();
    if let Ok(p) = u.parse::<i32>() {
        return [-15, -12, -9, -6, -3, -2, -1, 0, 3, 6, 9, 12, 15].contains(&p).then(|| 10f64.powi(p) as f32);
    }
    let named = match u.to_ascii_lowercase().as_str() {
        "" | "n/a" | "na" | "none" | "unitless" | "au" | "a.u." | "samples" => Some(1.0),
        "tesla" | "teslas" | "volt" | "volts" => Some(1.0),
        "femtotesla" | "femtoteslas" => Some(1e-15),
        "picotesla" | "picoteslas" => Some(1e-12),
        "nanotesla" | "nanoteslas" => Some(1e-9),
        "microvolt" | "microvolts" => Some(1e-6),
        "millivolt" | "millivolts" => Some(1e-3),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let prefix = |s: &str| -> Option<f64> {
        Some(match s {
            "" => 1.0,
            "f" => 1e-15,
            "p" => 1e-12,
            "n" => 1e-9,
            "u" | "µ" | "μ" => 1e-6,
            "m" => 1e-3,
            "c" => 1e-2,
            _ => return None,
        })
    };
    let (num, den) = u.split_once('/').unwrap_or((u, ""));
    let n = num.strip_suffix('T').or_else(|| num.strip_suffix('V')).and_then(prefix)?;
    let d = if den.is_empty() { 1.0 } else { den.strip_suffix('m').and_then(prefix)? };
    Some((n / d) as f32)
}

/// [`unit_factor`], with unknown units taken as SI.
pub fn unit_to_si(unit: &str) -> f32 {
    unit_factor(unit).unwrap_or(1.0)
}

impl ChannelMap {
    /// Maps `model_names` onto the stream's channels (label, type, unit).
    pub fn new(
        model_names: &[String],
        channels: &[crate::ingest::ChannelInfoData],
        matching: ChannelMatching,
    ) -> Result<Self, MappingError> {
        let mut stream_index = Vec::with_capacity(model_names.len());
        let mut missing = Vec::new();
        let mut renamed = Vec::new();
        let mut ambiguous = Vec::new();
        let normalized: Vec<String> = channels.iter().map(|c| normalize_channel_name(&c.label)).collect();
        for name in model_names {
            let exact = channels.iter().position(|c| &c.label == name);
            let found = exact.or_else(|| {
                if matching == ChannelMatching::Exact {
                    return None;
                }
                let key = normalize_channel_name(name);
                let hits: Vec<usize> =
                    (0..channels.len()).filter(|&i| normalized[i] == key && is_brain_type(&channels[i].kind)).collect();
                if hits.len() > 1 {
                    ambiguous.push(format!(
                        "{name} ({})",
                        hits.iter().take(3).map(|&i| format!("'{}'", channels[i].label)).collect::<Vec<_>>().join(", ")
                    ));
                }
                (hits.len() == 1).then(|| hits[0])
            });
            match found {
                Some(i) => {
                    let c = &channels[i];
                    if !is_brain_type(&c.kind) {
                        return Err(MappingError::NotABrainChannel {
                            model: name.clone(),
                            label: c.label.clone(),
                            kind: c.kind.clone(),
                        });
                    }
                    if exact.is_none() {
                        renamed.push((name.clone(), c.label.clone()));
                    }
                    stream_index.push(i);
                }
                None => missing.push(name.clone()),
            }
        }
        if !ambiguous.is_empty() {
            return Err(MappingError::Ambiguous {
                names: ambiguous.into_iter().take(5).collect::<Vec<_>>().join("; "),
            });
        }
        if !missing.is_empty() {
            return Err(MappingError::MissingChannels { missing, total: model_names.len() });
        }
        let unknown: Vec<String> = stream_index
            .iter()
            .filter(|&&i| unit_factor(&channels[i].unit).is_none())
            .map(|&i| format!("{} '{}'", channels[i].label, channels[i].unit.chars().take(16).collect::<String>()))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(
                "{} model channel(s) have units meg-decoder does not know, taken as SI: {}{}; fix the source's <unit> (T, fT, T/m, fT/cm, or a power-of-ten code)",
                unknown.len(),
                unknown.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if unknown.len() > 5 { ", ..." } else { "" }
            );
        }
        let to_si = stream_index.iter().map(|&i| unit_to_si(&channels[i].unit)).collect();
        Ok(Self { stream_index, to_si, renamed })
    }
}

/// The filters the contract asks for, designed for the stream's rate.
pub fn design_filters(c: &ModelContract, fs: f64) -> Result<Vec<Biquad>, MappingError> {
    let nyquist = fs / 2.0;
    for edge in c.highpass_hz.iter().chain(c.lowpass_hz.iter()).chain(c.notch_hz.iter()) {
        if *edge >= nyquist {
            return Err(MappingError::BandAboveNyquist { edge: *edge, nyquist });
        }
    }
    let n = c.filter_order;
    let mut sos = match (c.highpass_hz, c.lowpass_hz) {
        (Some(lo), Some(hi)) => butter_bandpass(n, lo, hi, fs),
        (Some(lo), None) => butter_highpass(n, lo, fs),
        (None, Some(hi)) => butter_lowpass(n, hi, fs),
        (None, None) => Vec::new(),
    };
    sos.extend(c.notch_hz.iter().map(|&f| notch(f, c.notch_q, fs)));
    sos.extend(antialias_filters(c, fs));
    Ok(sos)
}

/// The causal resampler profile's anti-alias low-pass (none for the sinc profile, whose
/// kernel filters, or when the stream already runs at the model's rate).
pub fn antialias_filters(c: &ModelContract, fs: f64) -> Vec<Biquad> {
    if c.resampler != ResamplerProfile::Causal || c.sample_rate >= fs * 0.999 {
        return Vec::new();
    }
    butter_lowpass(CAUSAL_ANTIALIAS_ORDER, CAUSAL_ANTIALIAS_FRACTION * c.sample_rate, fs)
}

/// The resampling the contract asks for at this stream rate, in words: profile,
/// look-ahead and (causal profile) the anti-alias filter's delay, which the model learnt.
pub fn resampling_summary(c: &ModelContract, fs: f64) -> String {
    let look_ahead_ms = resampling_kernel(c, fs).half_width / fs * 1e3;
    match c.resampler {
        ResamplerProfile::Sinc => {
            format!("Kaiser-sinc resampling to {} Hz (zero phase, {look_ahead_ms:.1} ms look-ahead)", c.sample_rate)
        }
        ResamplerProfile::Causal => {
            let aa = antialias_filters(c, fs);
            if aa.is_empty() {
                return format!(
                    "causal profile, stream at the model's rate ({} Hz): no anti-alias filter, linear interpolation ({look_ahead_ms:.1} ms look-ahead)",
                    c.sample_rate
                );
            }
            let (lo, hi) = c.evoked_band_hz;
            let aa_delay = evoked_delay_s(&aa, lo, hi.min(0.45 * fs), fs);
            format!(
                "causal resampling to {} Hz: order-{CAUSAL_ANTIALIAS_ORDER} Butterworth anti-alias at {} Hz (group delay {:.1} ms on {lo}-{hi} Hz, learnt by the model) and linear interpolation ({look_ahead_ms:.1} ms look-ahead)",
                c.sample_rate,
                CAUSAL_ANTIALIAS_FRACTION * c.sample_rate,
                aa_delay * 1e3
            )
        }
    }
}

/// The resampling kernel the contract asks for.
fn resampling_kernel(c: &ModelContract, fs: f64) -> Kernel {
    match c.resampler {
        ResamplerProfile::Sinc => Kernel::new(fs, c.sample_rate),
        ResamplerProfile::Causal => Kernel::linear(),
    }
}

/// Stream rows in, model-rate rows out.
pub struct Preprocessor {
    map: ChannelMap,
    fin: f64,
    fout: f64,
    filter: SosFilter,
    resampler: Resampler,
    /// Fit of the input timestamps (per segment): the clock every output is stamped with.
    clock: SampleClock,
    /// Seconds subtracted from output times (zero-phase models: the filters' delay).
    delay_s: f64,
    /// Input samples after a (re)start before outputs count as settled.
    settle_inputs: f64,
    settle_s: f64,
    row: Vec<f32>,
    last_finite: Vec<f32>,
    /// Input index (since reset) of the newest repaired sample.
    last_bad: Option<u64>,
    inputs: u64,
    pub repaired_samples: u64,
}

/// One model-rate output sample.
pub struct ModelSample<'a> {
    pub row: &'a [f32],
    /// Local LSL time of the sample (from the fitted input clock, filter delay
    /// compensated for zero-phase models).
    pub timestamp: f64,
    /// A repaired (NaN/Inf) input contributed to it.
    pub repaired: bool,
    /// The filters had settled (steady-state start plus the settle period) when it was made.
    pub settled: bool,
}

/// Longest settle period a filter design may ask for by default (seconds).
const MAX_DEFAULT_SETTLE_S: f64 = 10.0;
/// Energy fraction of the filters' impulse response that defines the default settle
/// period: after it, what the filters missed before the start is under ~3% RMS.
const SETTLE_ENERGY: f64 = 1e-3;

impl Preprocessor {
    pub fn new(contract: &ModelContract, map: ChannelMap, stream_rate: f64) -> Result<Self, MappingError> {
        if !(stream_rate.is_finite() && stream_rate > 0.0 && stream_rate <= 100_000.0) {
            return Err(MappingError::RateUnusable { stream: stream_rate });
        }
        if contract.sample_rate > stream_rate * 1.0001 {
            return Err(MappingError::RateTooHigh { model: contract.sample_rate, stream: stream_rate });
        }
        let c = map.stream_index.len();
        let sos = design_filters(contract, stream_rate)?;
        let delay_s = match contract.filter_phase {
            FilterPhase::Causal => 0.0,
            FilterPhase::ZeroPhase => {
                let (lo, hi) = contract.evoked_band_hz;
                evoked_delay_s(&sos, lo, hi.min(0.45 * stream_rate), stream_rate)
            }
        };
        let settle_s =
            contract.settle_s.unwrap_or_else(|| settle_time_s(&sos, stream_rate, SETTLE_ENERGY, MAX_DEFAULT_SETTLE_S));
        let resampler =
            Resampler::with_kernel(c, stream_rate, contract.sample_rate, resampling_kernel(contract, stream_rate));
        Ok(Self {
            settle_inputs: settle_s * stream_rate + resampler.kernel().half_width,
            settle_s,
            filter: SosFilter::new(sos, c),
            resampler,
            clock: SampleClock::new(stream_rate),
            delay_s,
            map,
            fin: stream_rate,
            fout: contract.sample_rate,
            row: vec![0.0; c],
            last_finite: vec![0.0; c],
            last_bad: None,
            inputs: 0,
            repaired_samples: 0,
        })
    }

    /// Seconds of delay the resampler adds (its kernel's half-width).
    pub fn latency_s(&self) -> f64 {
        self.resampler.latency_s(self.fin)
    }

    /// The stream's nominal rate this preprocessor was designed for (Hz).
    pub fn stream_rate(&self) -> f64 {
        self.fin
    }

    /// Seconds by which output times are moved back to undo the causal filters' group
    /// delay (zero-phase models; 0 for causal ones).
    pub fn delay_compensation_s(&self) -> f64 {
        self.delay_s
    }

    /// Seconds after a (re)start before outputs are settled.
    pub fn settle_s(&self) -> f64 {
        self.settle_s
    }

    /// The fitted input clock of the current segment.
    pub fn clock(&self) -> &SampleClock {
        &self.clock
    }

    /// Input samples pushed since the last reset.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Starts a new segment (after a gap): filters, resampler and clock fit forget the
    /// past; the next sample starts them at steady state.
    pub fn reset(&mut self) {
        self.filter.reset();
        self.resampler.reset();
        self.clock.reset();
        self.last_bad = None;
        self.inputs = 0;
    }

    /// Feeds one stream row (all stream channels) with its timestamp; calls `emit` for
    /// each model-rate sample it completes.
    #[inline]
    pub fn push(&mut self, stream_row: &[f32], timestamp: f64, mut emit: impl FnMut(ModelSample<'_>)) {
        self.clock.push(timestamp);
        let mut bad = false;
        for (((o, &i), &k), last) in
            self.row.iter_mut().zip(&self.map.stream_index).zip(&self.map.to_si).zip(self.last_finite.iter_mut())
        {
            let v = stream_row[i];
            if v.is_finite() {
                *o = v * k;
                *last = *o;
            } else {
                *o = *last;
                bad = true;
            }
        }
        if bad {
            self.last_bad = Some(self.inputs);
            self.repaired_samples += 1;
        }
        if self.inputs == 0 {
            // Start at steady state: a DC offset passes as if it had always been there.
            self.filter.init_steady(&self.row);
        }
        self.filter.process_row(&mut self.row);
        if self.inputs == 0 {
            self.resampler.prime(&self.row);
        }
        let (fin, fout, delay, settle) = (self.fin, self.fout, self.delay_s, self.settle_inputs);
        let half = self.resampler.kernel().half_width;
        let last_bad = self.last_bad;
        let clock = &self.clock;
        self.resampler.push_row(&self.row, |k, out| {
            // Output k sits at input position k * fin / fout (see Resampler::position).
            let pos = k as f64 * fin / fout;
            let repaired = last_bad.is_some_and(|b| b as f64 > pos - half);
            emit(ModelSample { row: out, timestamp: clock.at(pos) - delay, repaired, settled: pos >= settle });
        });
        self.inputs += 1;
    }
}
