//! Stimulus onsets for event-locked decoding, from wherever the lab has them:
//!
//! - LSL **markers** from the stimulus PC (label and time; the time jitters by the
//!   stimulus PC's scheduling, milliseconds to tens of milliseconds);
//! - a **trigger** channel inside the MEG stream (`STI 014`, `UPPT001`): digital codes
//!   written sample-accurately by the acquisition system; an onset is a sample whose
//!   (masked) code is higher than the previous sample's, as MNE's `find_events` does by
//!   default;
//! - a **photodiode** on a misc channel: an onset is a rising crossing of a threshold,
//!   with a refractory interval.
//!
//! With a trigger or photodiode and markers both present, [`OnsetPairing`] pairs them: the
//! onset's time from the channel, the label from the marker nearest in time (within
//! `pair_window_s`). An onset with no marker is labelled by its code; a marker with no
//! onset is counted and not decoded.

use std::collections::VecDeque;

use crate::ingest::{ChannelInfoData, Marker};

/// Where event-locked onsets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnsetSource {
    /// The trigger channel when one is configured and present in the stream, else the
    /// photodiode when configured and present, else markers.
    #[default]
    Auto,
    Markers,
    Trigger,
    Photodiode,
}

/// How onsets are found (the `[events]` configuration section).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventConfig {
    pub source: OnsetSource,
    /// Label of the trigger channel in the MEG stream (e.g. `STI 014`, `UPPT001`).
    pub trigger_channel: String,
    /// Bits of the trigger code to keep (MNE's `mask`, applied as `code & mask`).
    pub trigger_mask: u32,
    /// Label of the photodiode channel.
    pub photodiode_channel: String,
    /// Photodiode level (in the channel's own units) whose rising crossing is an onset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photodiode_threshold: Option<f64>,
    /// Photodiode onsets closer than this to the previous one are ignored (flicker);
    /// trigger codes are clean and never ignored.
    pub min_interval_s: f64,
    /// A marker labels the trigger/photodiode onset within this many seconds of it.
    pub pair_window_s: f64,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            source: OnsetSource::Auto,
            trigger_channel: String::new(),
            trigger_mask: u32::MAX,
            photodiode_channel: String::new(),
            photodiode_threshold: None,
            min_interval_s: 0.05,
            pair_window_s: 0.25,
        }
    }
}

/// Why the events configuration does not fit the stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("events.{key} = '{label}' names no channel of the stream; its channels include {sample}; set the label exactly as `meg-decoder inspect-stream --channels` prints it")]
    NoSuchChannel { key: &'static str, label: String, sample: String },
    #[error("events.source = {mode} needs events.{key}")]
    Missing { mode: &'static str, key: &'static str },
    #[error("events.{key} = {value} is invalid: {why}")]
    Invalid { key: &'static str, value: String, why: String },
}

/// The stream channel called `label`: exactly, else the one channel equal after
/// normalisation (`STI014` = `STI 014`).
fn locate(label: &str, channels: &[ChannelInfoData]) -> Option<usize> {
    if label.is_empty() {
        return None;
    }
    channels.iter().position(|c| c.label == label).or_else(|| {
        let key = crate::pipeline::normalize_channel_name(label);
        let mut hits =
            channels.iter().enumerate().filter(|(_, c)| crate::pipeline::normalize_channel_name(&c.label) == key);
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    })
}

/// What the stream channel holds and how to read onsets from it.
#[derive(Debug, Clone, PartialEq)]
enum Detector {
    Trigger { index: usize, mask: u64, previous: Option<u64> },
    Photodiode { index: usize, threshold: f32, previous: Option<f32> },
}

/// An onset found in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Onset {
    pub timestamp: f64,
    /// The trigger code (photodiode: 1).
    pub code: u64,
}

/// Finds onsets in stream rows, sample by sample (no allocation).
#[derive(Debug, Clone)]
pub struct OnsetDetector {
    detector: Detector,
    min_interval_s: f64,
    last_onset: f64,
    pub label: String,
}

impl OnsetDetector {
    /// The detector `cfg` asks for on this stream, or None when onsets come from markers.
    pub fn from_config(cfg: &EventConfig, channels: &[ChannelInfoData]) -> Result<Option<Self>, EventError> {
        for (key, v) in [("min_interval_s", cfg.min_interval_s), ("pair_window_s", cfg.pair_window_s)] {
            if !v.is_finite() || !(0.0..=10.0).contains(&v) {
                return Err(EventError::Invalid { key, value: v.to_string(), why: "need 0..10 seconds".into() });
            }
        }
        let find = |key: &'static str, label: &str| -> Result<Option<usize>, EventError> {
            if label.is_empty() {
                return Ok(None);
            }
            match locate(label, channels) {
                Some(i) => Ok(Some(i)),
                None => Err(EventError::NoSuchChannel {
                    key,
                    label: label.chars().take(64).collect(),
                    // The stream's non-sensor channels (where a trigger lives), else any.
                    sample: {
                        let other: Vec<&ChannelInfoData> =
                            channels.iter().filter(|c| !crate::pipeline::is_brain_type(&c.kind)).collect();
                        let shown = if other.is_empty() { channels.iter().collect() } else { other };
                        shown.iter().take(6).map(|c| format!("'{}'", c.label)).collect::<Vec<_>>().join(", ")
                    },
                }),
            }
        };
        let present = |label: &str| locate(label, channels).is_some();
        let source = match cfg.source {
            OnsetSource::Auto if present(&cfg.trigger_channel) => OnsetSource::Trigger,
            OnsetSource::Auto if present(&cfg.photodiode_channel) => OnsetSource::Photodiode,
            OnsetSource::Auto => {
                for (key, label) in
                    [("trigger_channel", &cfg.trigger_channel), ("photodiode_channel", &cfg.photodiode_channel)]
                {
                    if !label.is_empty() {
                        tracing::warn!(
                            "events.{key} = '{}' is not a channel of the stream; event-locked onsets come from markers",
                            label.chars().take(64).collect::<String>()
                        );
                    }
                }
                OnsetSource::Markers
            }
            s => s,
        };
        let detector = match source {
            OnsetSource::Markers | OnsetSource::Auto => return Ok(None),
            OnsetSource::Trigger => {
                let index = find("trigger_channel", &cfg.trigger_channel)?
                    .ok_or(EventError::Missing { mode: "trigger", key: "trigger_channel" })?;
                if cfg.trigger_mask == 0 {
                    return Err(EventError::Invalid {
                        key: "trigger_mask",
                        value: "0".into(),
                        why: "a zero mask hides every code".into(),
                    });
                }
                Detector::Trigger { index, mask: u64::from(cfg.trigger_mask), previous: None }
            }
            OnsetSource::Photodiode => {
                let index = find("photodiode_channel", &cfg.photodiode_channel)?
                    .ok_or(EventError::Missing { mode: "photodiode", key: "photodiode_channel" })?;
                let threshold = match cfg.photodiode_threshold {
                    None => return Err(EventError::Missing { mode: "photodiode", key: "photodiode_threshold" }),
                    Some(t) if !t.is_finite() || t.abs() > 1e30 => {
                        return Err(EventError::Invalid {
                            key: "photodiode_threshold",
                            value: t.to_string(),
                            why: "need a finite level in the channel's units".into(),
                        })
                    }
                    Some(t) => t as f32,
                };
                Detector::Photodiode { index, threshold, previous: None }
            }
        };
        let label = match &detector {
            Detector::Trigger { index, .. } => format!("trigger channel '{}'", channels[*index].label),
            Detector::Photodiode { index, .. } => format!("photodiode channel '{}'", channels[*index].label),
        };
        Ok(Some(Self { detector, min_interval_s: cfg.min_interval_s, last_onset: f64::NEG_INFINITY, label }))
    }

    /// Forgets the past (a new segment starts without an edge, and its clock may have
    /// been reset).
    pub fn reset(&mut self) {
        self.last_onset = f64::NEG_INFINITY;
        match &mut self.detector {
            Detector::Trigger { previous, .. } => *previous = None,
            Detector::Photodiode { previous, .. } => *previous = None,
        }
    }

    /// Looks at one stream row stamped `t`; returns the onset it starts, if any.
    #[inline]
    pub fn push(&mut self, row: &[f32], t: f64) -> Option<Onset> {
        let code = match &mut self.detector {
            // Digital codes are clean: every rise is an onset, however close.
            Detector::Trigger { index, mask, previous } => {
                let v = row[*index];
                let code = if v.is_finite() && v > 0.0 { (v.round() as u64) & *mask } else { 0 };
                let rising = previous.is_some_and(|p| code > p);
                *previous = Some(code);
                return rising.then_some(Onset { timestamp: t, code });
            }
            Detector::Photodiode { index, threshold, previous } => {
                let v = row[*index];
                if !v.is_finite() {
                    return None;
                }
                let rising = previous.is_some_and(|p| p < *threshold) && v >= *threshold;
                *previous = Some(v);
                rising.then_some(1)
            }
        }?;
        if t - self.last_onset < self.min_interval_s {
            return None;
        }
        self.last_onset = t;
        Some(Onset { timestamp: t, code })
    }
}

/// Pairs channel onsets with markers: the time from the onset, the label from the marker.
#[derive(Debug, Default)]
pub struct OnsetPairing {
    window_s: f64,
    onsets: VecDeque<Onset>,
    markers: VecDeque<Marker>,
}

/// What the pairing decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Paired {
    /// An onset to decode (label from its marker, or its code).
    Onset { marker: Marker, paired: bool },
    /// A marker no onset claimed.
    UnpairedMarker(Marker),
}

impl OnsetPairing {
    pub fn new(window_s: f64) -> Self {
        Self { window_s, ..Default::default() }
    }

    pub fn add_onset(&mut self, o: Onset) {
        self.onsets.push_back(o);
    }

    pub fn add_marker(&mut self, m: Marker) {
        self.markers.push_back(m);
    }

    /// Resolves what can be resolved once data up to time `now` has been seen: pairs, and
    /// onsets and markers whose partner can no longer come (older than the window plus
    /// `slack_s` for the marker stream's own latency).
    pub fn resolve(&mut self, now: f64, slack_s: f64, out: &mut Vec<Paired>) {
        let w = self.window_s;
        while let Some(o) = self.onsets.front() {
            // The marker nearest in time, within the window.
            let best = self
                .markers
                .iter()
                .enumerate()
                .filter(|(_, m)| (m.timestamp - o.timestamp).abs() <= w)
                .min_by(|a, b| (a.1.timestamp - o.timestamp).abs().total_cmp(&(b.1.timestamp - o.timestamp).abs()))
                .map(|(i, _)| i);
            let o = o.clone();
            if let Some(i) = best {
                let m = self.markers.remove(i).expect("index in range");
                self.onsets.pop_front();
                out.push(Paired::Onset {
                    marker: Marker { timestamp: o.timestamp, source_timestamp: m.source_timestamp, text: m.text },
                    paired: true,
                });
            } else if now > o.timestamp + w + slack_s {
                self.onsets.pop_front();
                out.push(Paired::Onset {
                    marker: Marker { timestamp: o.timestamp, source_timestamp: o.timestamp, text: o.code.to_string() },
                    paired: false,
                });
            } else {
                break;
            }
        }
        while let Some(m) = self.markers.front() {
            let claimable = self.onsets.iter().any(|o| (m.timestamp - o.timestamp).abs() <= w);
            if !claimable && now > m.timestamp + w + slack_s {
                let m = self.markers.pop_front().expect("front exists");
                out.push(Paired::UnpairedMarker(m));
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(label: &str, kind: &str) -> ChannelInfoData {
        ChannelInfoData { label: label.into(), kind: kind.into(), unit: String::new() }
    }

    #[test]
    fn trigger_codes_rise_like_find_events() {
        let chans = [ch("MEG0111", "mag"), ch("STI 014", "stim")];
        let cfg = EventConfig { trigger_channel: "STI 014".into(), trigger_mask: 0xFF, ..Default::default() };
        let mut d = OnsetDetector::from_config(&cfg, &chans).unwrap().expect("auto picks the trigger");
        let codes = [0.0, 0.0, 5.0, 5.0, 0.0, 0.0, 3.0, 7.0, 7.0, 0.0, 256.0 + 4.0, 0.0];
        let found: Vec<(usize, u64)> =
            codes.iter().enumerate().filter_map(|(i, &c)| d.push(&[0.0, c], i as f64).map(|o| (i, o.code))).collect();
        // 3 -> 7 rises too (MNE's consecutive='increasing'), one sample later: trigger codes
        // are never thinned by min_interval_s; 260 & 0xFF = 4.
        assert_eq!(found, vec![(2, 5), (6, 3), (7, 7), (10, 4)]);
        // A label that differs only in spacing finds the channel.
        let cfg = EventConfig { trigger_channel: "STI014".into(), ..Default::default() };
        assert!(OnsetDetector::from_config(&cfg, &chans).unwrap().is_some());
    }

    #[test]
    fn photodiode_crossings_with_refractory_interval() {
        let chans = [ch("MISC 001", "misc")];
        let cfg = EventConfig {
            source: OnsetSource::Photodiode,
            photodiode_channel: "MISC 001".into(),
            photodiode_threshold: Some(0.5),
            // The dip at 1.10-1.12 s (monitor flicker) must not count as a new onset.
            min_interval_s: 0.15,
            ..Default::default()
        };
        let mut d = OnsetDetector::from_config(&cfg, &chans).unwrap().unwrap();
        let level = |t: f64| {
            if (1.0..1.1).contains(&t) || (1.12..1.2).contains(&t) || (2.0..2.1).contains(&t) {
                1.0
            } else {
                0.0
            }
        };
        let onsets: Vec<f64> = (0..3000)
            .filter_map(|i| d.push(&[level(i as f64 / 1000.0)], i as f64 / 1000.0))
            .map(|o| o.timestamp)
            .collect();
        assert_eq!(onsets, vec![1.0, 2.0]);
    }

    #[test]
    fn bad_event_configuration_is_named() {
        let chans = [ch("MEG0111", "mag")];
        let cfg = EventConfig { source: OnsetSource::Trigger, trigger_channel: "STI 101".into(), ..Default::default() };
        let e = OnsetDetector::from_config(&cfg, &chans).unwrap_err().to_string();
        assert!(e.contains("STI 101") && e.contains("trigger_channel"), "{e}");
        let cfg = EventConfig { source: OnsetSource::Trigger, ..Default::default() };
        assert!(OnsetDetector::from_config(&cfg, &chans)
            .unwrap_err()
            .to_string()
            .contains("needs events.trigger_channel"));
        let cfg = EventConfig { pair_window_s: f64::NAN, ..Default::default() };
        assert!(OnsetDetector::from_config(&cfg, &chans).unwrap_err().to_string().contains("pair_window_s"));
        // Auto without a configured channel: markers.
        assert!(OnsetDetector::from_config(&EventConfig::default(), &chans).unwrap().is_none());
    }

    #[test]
    fn markers_label_the_nearest_trigger() {
        let mut p = OnsetPairing::new(0.1);
        let m = |t: f64, s: &str| Marker { timestamp: t, source_timestamp: t, text: s.into() };
        p.add_marker(m(10.03, "img_a"));
        p.add_onset(Onset { timestamp: 10.0, code: 1 });
        p.add_onset(Onset { timestamp: 11.0, code: 2 });
        p.add_marker(m(11.6, "stray"));
        p.add_onset(Onset { timestamp: 12.0, code: 3 });
        p.add_marker(m(11.98, "img_c"));
        let mut out = Vec::new();
        p.resolve(13.0, 0.5, &mut out);
        let got: Vec<String> = out
            .iter()
            .map(|x| match x {
                Paired::Onset { marker, paired } => format!("{:.2} {} {paired}", marker.timestamp, marker.text),
                Paired::UnpairedMarker(m) => format!("unpaired {}", m.text),
            })
            .collect();
        assert_eq!(got, vec!["10.00 img_a true", "11.00 2 false", "12.00 img_c true", "unpaired stray"]);
    }
}
