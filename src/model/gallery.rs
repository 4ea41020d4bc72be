//! [`Gallery`]: the images a decoder can retrieve, with their embeddings, and top-k
//! retrieval by cosine similarity.
//!
//! On disk (`<model>/gallery/`): `ids.txt` (one image id per line), `embeddings.npy`
//! (float32 `[N, dim]`, row i belongs to line i) and optionally `images/<id>.png`.
//! Rows are L2-normalised once at load, so a query is one matrix-vector product.

use std::path::{Path, PathBuf};

use super::npy;

#[derive(Debug, Clone)]
pub struct Gallery {
    pub ids: Vec<String>,
    pub dim: usize,
    /// Raw embeddings as stored, `[N, dim]`.
    pub embeddings: Vec<f32>,
    /// L2-normalised rows, `[N, dim]`.
    normalised: Vec<f32>,
    pub images_dir: Option<PathBuf>,
}

/// One retrieval hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub image_id: String,
    pub index: usize,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("gallery {dir}: {msg}")]
    Invalid { dir: String, msg: String },
    #[error(transparent)]
    Npy(#[from] npy::NpyError),
}

impl Gallery {
    pub fn load(dir: &Path) -> Result<Self, GalleryError> {
        let bad = |msg: String| GalleryError::Invalid { dir: dir.display().to_string(), msg };
        let ids_text =
            std::fs::read_to_string(dir.join("ids.txt")).map_err(|e| bad(format!("cannot read ids.txt: {e}")))?;
        let ids: Vec<String> = ids_text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        let arr = npy::read(&dir.join("embeddings.npy"))?;
        if arr.shape.len() != 2 || arr.shape[0] != ids.len() {
            return Err(bad(format!(
                "embeddings.npy has shape {:?} but ids.txt lists {} images; they must match row for row",
                arr.shape,
                ids.len()
            )));
        }
        let images = dir.join("images");
        Ok(Self::from_parts(ids, arr.shape[1], arr.data, images.is_dir().then_some(images)))
    }

    pub fn from_parts(ids: Vec<String>, dim: usize, embeddings: Vec<f32>, images_dir: Option<PathBuf>) -> Self {
        let mut normalised = embeddings.clone();
        for row in normalised.chunks_exact_mut(dim) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= n);
        }
        Self { ids, dim, embeddings, normalised, images_dir }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| i == id)
    }

    pub fn embedding(&self, index: usize) -> &[f32] {
        &self.embeddings[index * self.dim..(index + 1) * self.dim]
    }

    /// Cosine similarity of `query` with every image into `scores` (len N).
    pub fn scores(&self, query: &[f32], scores: &mut [f32]) {
        let qn = dot(query, query).sqrt().max(1e-12);
        for (s, row) in scores.iter_mut().zip(self.normalised.chunks_exact(self.dim)) {
            *s = dot(row, query) / qn;
        }
    }

    /// The `k` most similar images, best first. `scores` is caller-owned scratch (len N).
    pub fn top_k(&self, query: &[f32], k: usize, scores: &mut [f32]) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        self.scores(query, scores);
        let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        for (i, &s) in scores.iter().enumerate() {
            if best.len() < k || s > best[best.len() - 1].1 {
                let pos = best.partition_point(|&(_, b)| b >= s);
                best.insert(pos, (i, s));
                best.truncate(k);
            }
        }
        best.into_iter().map(|(index, score)| Hit { image_id: self.ids[index].clone(), index, score }).collect()
    }

    /// The stored PNG of an image, if the gallery has images.
    pub fn image_png(&self, index: usize) -> Option<Vec<u8>> {
        let dir = self.images_dir.as_ref()?;
        std::fs::read(dir.join(format!("{}.png", self.ids[index]))).ok()
    }
}

/// Dot product with 8 independent accumulators, so the compiler can use SIMD lanes
/// (a plain `.sum()` must add in order and cannot).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        let (x, y): (&[f32; 8], &[f32; 8]) = (x.try_into().expect("chunk of 8"), y.try_into().expect("chunk of 8"));
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_cosine() {
        let g =
            Gallery::from_parts(vec!["a".into(), "b".into(), "c".into()], 2, vec![1.0, 0.0, 0.0, 5.0, 1.0, 1.0], None);
        let mut s = vec![0.0; 3];
        let hits = g.top_k(&[0.1, 1.0], 2, &mut s);
        assert_eq!(hits[0].image_id, "b");
        assert_eq!(hits[1].image_id, "c");
        assert!(hits[0].score > 0.99 && hits[0].score <= 1.0001);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..77).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..77).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-5);
    }
}
