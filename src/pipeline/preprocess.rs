//! From the stream's samples to the model's: pick and reorder channels by name, convert
//! units to SI, repair NaN/Inf (hold the last finite value, so filter state stays
//! finite), causal band-pass and notch filters, and resampling to the model's rate.
//! Per input sample: no allocation.

use crate::dsp::{butter_bandpass, butter_highpass, butter_lowpass, notch, Biquad, Resampler, SosFilter};
use crate::model::ModelContract;

/// Why the stream cannot feed this model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("the stream lacks {} of the model's {total} channels: {}{}. Check the stream's channel labels (`meg-decoder inspect-stream --channels`) or use a model trained on this system", missing.len(), missing.iter().take(12).cloned().collect::<Vec<_>>().join(", "), if missing.len() > 12 { ", ..." } else { "" })]
    MissingChannels { missing: Vec<String>, total: usize },
    #[error("the model needs {model} Hz but the stream runs at {stream} Hz; a stream cannot be upsampled into information it lacks: use a model trained at or below {stream} Hz")]
    RateTooHigh { model: f64, stream: f64 },
    #[error("band edge {edge} Hz is not below the stream's Nyquist frequency ({nyquist} Hz)")]
    BandAboveNyquist { edge: f64, nyquist: f64 },
}

/// Where each model channel comes from in the stream, and its unit conversion to SI.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMap {
    pub stream_index: Vec<usize>,
    pub to_si: Vec<f32>,
}

/// SI factor of a unit string as LSL sources write it (`T`, `fT`, `T/m`, `fT/cm`, `V`...).
pub fn unit_to_si(unit: &str) -> f32 {
    let u = unit.trim();
    let (num, den) = u.split_once('/').unwrap_or((u, ""));
    let prefix = |s: &str, base: &str| -> f64 {
        match s.strip_suffix(base).unwrap_or(s) {
            "f" => 1e-15,
            "p" => 1e-12,
            "n" => 1e-9,
            "u" | "µ" => 1e-6,
            "m" => 1e-3,
            "c" => 1e-2,
            _ => 1.0,
        }
    };
    let n = if num.ends_with('T') {
        prefix(num, "T")
    } else if num.ends_with('V') {
        prefix(num, "V")
    } else {
        1.0
    };
    let d = if den.is_empty() { 1.0 } else { prefix(den, "m") };
    (n / d) as f32
}

impl ChannelMap {
    /// Maps `model_names` onto the stream's `labels` (with their `units`).
    pub fn new(model_names: &[String], labels: &[String], units: &[String]) -> Result<Self, MappingError> {
        let mut stream_index = Vec::with_capacity(model_names.len());
        let mut missing = Vec::new();
        for name in model_names {
            match labels.iter().position(|l| l == name) {
                Some(i) => stream_index.push(i),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(MappingError::MissingChannels { missing, total: model_names.len() });
        }
        let to_si = stream_index.iter().map(|&i| units.get(i).map_or(1.0, |u| unit_to_si(u))).collect();
        Ok(Self { stream_index, to_si })
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
    Ok(sos)
}

/// Stream rows in, model-rate rows out.
pub struct Preprocessor {
    map: ChannelMap,
    fin: f64,
    fout: f64,
    filter: SosFilter,
    resampler: Resampler,
    row: Vec<f32>,
    last_finite: Vec<f32>,
    /// Input index (since reset) of the newest repaired sample.
    last_bad: Option<u64>,
    inputs: u64,
    /// Timestamp of the first input since reset.
    t0: f64,
    pub repaired_samples: u64,
}

/// One model-rate output sample.
pub struct ModelSample<'a> {
    pub row: &'a [f32],
    pub timestamp: f64,
    /// A repaired (NaN/Inf) input contributed to it.
    pub repaired: bool,
}

impl Preprocessor {
    pub fn new(contract: &ModelContract, map: ChannelMap, stream_rate: f64) -> Result<Self, MappingError> {
        if contract.sample_rate > stream_rate * 1.0001 {
            return Err(MappingError::RateTooHigh { model: contract.sample_rate, stream: stream_rate });
        }
        let c = map.stream_index.len();
        Ok(Self {
            filter: SosFilter::new(design_filters(contract, stream_rate)?, c),
            resampler: Resampler::new(c, stream_rate, contract.sample_rate),
            map,
            fin: stream_rate,
            fout: contract.sample_rate,
            row: vec![0.0; c],
            last_finite: vec![0.0; c],
            last_bad: None,
            inputs: 0,
            t0: 0.0,
            repaired_samples: 0,
        })
    }

    /// Seconds of delay the resampler adds (its kernel's half-width).
    pub fn latency_s(&self) -> f64 {
        self.resampler.latency_s(self.fin)
    }

    /// Starts a new segment (after a gap): filters and resampler forget the past.
    pub fn reset(&mut self) {
        self.filter.reset();
        self.resampler.reset();
        self.last_bad = None;
        self.inputs = 0;
    }

    /// Feeds one stream row (all stream channels) with its timestamp; calls `emit` for
    /// each model-rate sample it completes.
    #[inline]
    pub fn push(&mut self, stream_row: &[f32], timestamp: f64, mut emit: impl FnMut(ModelSample<'_>)) {
        if self.inputs == 0 {
            self.t0 = timestamp;
        }
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
        self.filter.process_row(&mut self.row);
        let (t0, fin, fout) = (self.t0, self.fin, self.fout);
        let half = self.resampler.kernel().half_width;
        let last_bad = self.last_bad;
        self.resampler.push_row(&self.row, |k, out| {
            // Output k sits at input position k * fin / fout (see Resampler::position).
            let pos = k as f64 * fin / fout;
            let repaired = last_bad.is_some_and(|b| b as f64 > pos - half);
            emit(ModelSample { row: out, timestamp: t0 + k as f64 / fout, repaired });
        });
        self.inputs += 1;
    }
}
