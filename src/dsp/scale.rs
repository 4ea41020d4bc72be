//! Per-window steps on a `[channels, time]` window: robust scaling (median / IQR, as
//! scikit-learn's RobustScaler), baseline correction and clamping, as in the paper's
//! preprocessing (brainmagick).

/// Per-channel robust scaler: `(x - center) / scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustScaler {
    pub center: Vec<f32>,
    pub scale: Vec<f32>,
}

impl RobustScaler {
    /// Fits median and inter-quartile range per channel on `[channels, n]` data.
    pub fn fit(data: &[f32], channels: usize) -> Self {
        let n = data.len() / channels;
        let mut center = Vec::with_capacity(channels);
        let mut scale = Vec::with_capacity(channels);
        let mut tmp: Vec<f32> = Vec::with_capacity(n);
        for c in 0..channels {
            tmp.clear();
            tmp.extend(data[c * n..(c + 1) * n].iter().copied().filter(|v| v.is_finite()));
            tmp.sort_by(f32::total_cmp);
            let q = |p: f64| -> f32 {
                if tmp.is_empty() {
                    return 0.0;
                }
                let pos = p * (tmp.len() - 1) as f64;
                let (i, f) = (pos.floor() as usize, (pos - pos.floor()) as f32);
                let next = tmp[(i + 1).min(tmp.len() - 1)];
                tmp[i] * (1.0 - f) + next * f
            };
            center.push(q(0.5));
            let iqr = q(0.75) - q(0.25);
            scale.push(if iqr > 0.0 && iqr.is_finite() { iqr } else { 1.0 });
        }
        Self { center, scale }
    }

    /// Applies the scaler to a `[channels, time]` window in place.
    pub fn apply(&self, window: &mut [f32], time: usize) {
        for (c, row) in window.chunks_exact_mut(time).enumerate() {
            let (m, s) = (self.center[c], self.scale[c]);
            row.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
    }
}

/// Subtracts each channel's mean over samples `from..to` of a `[channels, time]` window.
pub fn baseline(window: &mut [f32], time: usize, from: usize, to: usize) {
    if to <= from {
        return;
    }
    for row in window.chunks_exact_mut(time) {
        let mean = row[from..to].iter().map(|&v| f64::from(v)).sum::<f64>() / (to - from) as f64;
        row.iter_mut().for_each(|v| *v -= mean as f32);
    }
}

/// Clamps every value to `[-limit, limit]`.
pub fn clamp(window: &mut [f32], limit: f32) {
    window.iter_mut().for_each(|v| *v = v.clamp(-limit, limit));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_scaler_uses_median_and_iqr() {
        // channel 0: 1..=5 -> median 3, q25 2, q75 4; channel 1 constant -> scale 1
        let s = RobustScaler::fit(&[1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 7.0, 7.0, 7.0, 7.0], 2);
        assert_eq!(s.center, vec![3.0, 7.0]);
        assert_eq!(s.scale, vec![2.0, 1.0]);
        let mut w = vec![5.0, 1.0, 7.0, 8.0];
        s.apply(&mut w, 2);
        assert_eq!(w, vec![1.0, -1.0, 0.0, 1.0]);
        baseline(&mut w, 2, 0, 1);
        assert_eq!(w, vec![0.0, -2.0, 0.0, 1.0]);
        clamp(&mut w, 1.5);
        assert_eq!(w, vec![0.0, -1.5, 0.0, 1.0]);
    }
}
