//! [`Generator`]: draws an image from an embedding (`embedding` f32[batch, dim] ->
//! `image` f32[batch, 3, H, W] in [0, 1]) and encodes it as PNG.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use super::encoder::{open_session, EncoderOptions, ModelError};

pub struct Generator {
    session: Session,
    dim: usize,
}

impl Generator {
    pub fn load(path: &Path, dim: usize, opts: &EncoderOptions) -> Result<Self, ModelError> {
        let (session, _) = open_session(path, opts)?;
        let p = path.display().to_string();
        if !session.inputs().iter().any(|i| i.name() == "embedding")
            || !session.outputs().iter().any(|o| o.name() == "image")
        {
            return Err(ModelError::Shape {
                path: p,
                why: "a generator needs input 'embedding' and output 'image'".into(),
            });
        }
        let mut g = Self { session, dim };
        g.generate_png(&vec![0.0; dim])
            .map_err(|e| ModelError::Shape { path: path.display().to_string(), why: e.to_string() })?;
        Ok(g)
    }

    /// Runs the generator on one embedding and returns PNG bytes.
    pub fn generate_png(&mut self, embedding: &[f32]) -> Result<Vec<u8>, ModelError> {
        self.generate(embedding)?.to_png().map_err(ModelError::Run)
    }

    /// Runs the generator on one embedding.
    pub fn generate(&mut self, embedding: &[f32]) -> Result<RgbImage, ModelError> {
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        let input = TensorRef::from_array_view(([1usize, self.dim], embedding)).map_err(run)?;
        let outputs = self.session.run(ort::inputs!["embedding" => input]).map_err(run)?;
        let (shape, img) = outputs["image"].try_extract_tensor::<f32>().map_err(run)?;
        if shape.len() != 4 || shape[1] != 3 {
            return Err(ModelError::Run(format!("generator output has shape {shape:?}, expected [1, 3, H, W]")));
        }
        let (h, w) = (shape[2] as usize, shape[3] as usize);
        let mut rgb = vec![0u8; h * w * 3];
        for c in 0..3 {
            for i in 0..h * w {
                rgb[i * 3 + c] = (img[c * h * w + i].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Ok(RgbImage { width: w as u32, height: h as u32, rgb })
    }
}

/// 8-bit RGB pixels, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl RgbImage {
    pub fn to_png(&self) -> Result<Vec<u8>, String> {
        encode_png(&self.rgb, self.width, self.height)
    }

    /// Nearest-neighbour scaling to `size` x `size`.
    pub fn resized(&self, size: u32) -> RgbImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let n = size as usize;
        let mut rgb = vec![0u8; n * n * 3];
        for y in 0..n {
            let sy = y * h / n;
            for x in 0..n {
                let sx = x * w / n;
                rgb[(y * n + x) * 3..(y * n + x) * 3 + 3]
                    .copy_from_slice(&self.rgb[(sy * w + sx) * 3..(sy * w + sx) * 3 + 3]);
            }
        }
        RgbImage { width: size, height: size, rgb }
    }
}

/// Encodes 8-bit RGB pixels as PNG.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
