//! Sensor layouts of real MEG systems: channel names, types, units and 2-D positions,
//! from MNE-Python's layout files (see `tools/make_layouts.py`), embedded in the binary.

use crate::lsl::ChannelInfo;

/// Which MEG system to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutKind {
    /// MEGIN/Elekta Neuromag Vectorview: 204 planar gradiometers + 102 magnetometers.
    Neuromag306,
    /// CTF 275 with 3 dead sensors: 272 axial gradiometers.
    Ctf272,
}

/// One sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub name: String,
    /// `mag`, `grad` (planar) or `axial_grad`.
    pub kind: String,
    /// SI unit: `T` or `T/m`.
    pub unit: String,
    pub x: f32,
    pub y: f32,
}

#[derive(Debug, Clone)]
pub struct SensorLayout {
    pub kind: LayoutKind,
    pub sensors: Vec<Sensor>,
}

impl SensorLayout {
    pub fn load(kind: LayoutKind) -> Self {
        let text = match kind {
            LayoutKind::Neuromag306 => include_str!("../../models/layouts/neuromag306.tsv"),
            LayoutKind::Ctf272 => include_str!("../../models/layouts/ctf272.tsv"),
        };
        let sensors = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Some(Sensor {
                    name: f.first()?.to_string(),
                    kind: f.get(1)?.to_string(),
                    unit: f.get(2)?.to_string(),
                    x: f.get(3)?.parse().ok()?,
                    y: f.get(4)?.parse().ok()?,
                })
            })
            .collect();
        Self { kind, sensors }
    }

    pub fn len(&self) -> usize {
        self.sensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }
    pub fn names(&self) -> Vec<String> {
        self.sensors.iter().map(|s| s.name.clone()).collect()
    }

    /// Typical noise amplitude per sensor type, in SI units (per sample, broadband).
    pub fn noise_scale(&self, i: usize) -> f32 {
        match self.sensors[i].kind.as_str() {
            "mag" => 2.0e-13,
            "grad" => 4.0e-12,
            _ => 3.0e-13,
        }
    }

    /// Channel metadata for the stream description; `femto` for integer formats.
    pub fn channel_infos(&self, femto: bool) -> Vec<ChannelInfo> {
        self.sensors
            .iter()
            .map(|s| ChannelInfo {
                label: s.name.clone(),
                kind: if s.kind == "mag" { "MAG".into() } else { "GRAD".into() },
                unit: if femto { format!("f{}", s.unit) } else { s.unit.clone() },
            })
            .collect()
    }

    /// A position-dependent weight in [0, 1] peaking at the back of the head (occipital),
    /// where visual responses and alpha are strongest.
    pub fn occipital_weight(&self, i: usize) -> f32 {
        let (miny, maxy) = self.sensors.iter().fold((f32::MAX, f32::MIN), |(a, b), s| (a.min(s.y), b.max(s.y)));
        let s = &self.sensors[i];
        let back = 1.0 - (s.y - miny) / (maxy - miny).max(1e-6);
        back.powi(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_real_sizes_and_types() {
        let nm = SensorLayout::load(LayoutKind::Neuromag306);
        assert_eq!(nm.len(), 306);
        assert_eq!(nm.sensors.iter().filter(|s| s.kind == "mag").count(), 102);
        assert!(nm.names().contains(&"MEG2643".to_string()));
        let ctf = SensorLayout::load(LayoutKind::Ctf272);
        assert_eq!(ctf.len(), 272);
        assert!(ctf.names().iter().all(|n| n.starts_with('M')));
    }
}
