//! Minimal reader/writer of NumPy `.npy` files (little-endian float32, C order), the
//! format labs already use for embedding matrices (`np.save`).

use std::path::Path;

/// A float32 array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a float32 .npy file ({why}); save it with np.save(path, array.astype(np.float32))")]
    Format { path: String, why: String },
}

pub fn read(path: &Path) -> Result<NpyF32, NpyError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: p.clone(), source })?;
    parse(&bytes).map_err(|why| NpyError::Format { path: p, why })
}

pub fn parse(bytes: &[u8]) -> Result<NpyF32, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing \\x93NUMPY magic".into());
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = std::str::from_utf8(bytes.get(hstart..hstart + hlen).ok_or("truncated header")?)
        .map_err(|_| "header is not text")?;
    let wide = header.contains("'descr': '<f8'");
    if !wide && !header.contains("'descr': '<f4'") {
        return Err(format!("dtype is not little-endian float32 or float64: {header}"));
    }
    if header.contains("'fortran_order': True") {
        return Err("array is in Fortran order".into());
    }
    let shape_txt = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or("no shape in header")?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape '{shape_txt}'")))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[hstart + hlen..];
    let width = if wide { 8 } else { 4 };
    if body.len() != n * width {
        return Err(format!("shape {shape:?} needs {} bytes of data, file has {}", n * width, body.len()));
    }
    let data = if wide {
        body.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
    } else {
        body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    Ok(NpyF32 { shape, data })
}

/// Reads a float64 `.npy` file at full precision (e.g. filter coefficients).
pub fn read_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>), NpyError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: p.clone(), source })?;
    let shape = parse(&bytes).map_err(|why| NpyError::Format { path: p.clone(), why })?.shape;
    let n: usize = shape.iter().product();
    if bytes.len() < n * 8 || !String::from_utf8_lossy(&bytes[..bytes.len().min(128)]).contains("<f8") {
        return Err(NpyError::Format { path: p, why: "not float64".into() });
    }
    let body = &bytes[bytes.len() - n * 8..];
    Ok((shape, body.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()))
}

/// Serialises a float32 array as `.npy` version 1.0.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape_txt}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_dtypes() {
        let bytes = to_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let a = parse(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.5);
        let bad = String::from_utf8_lossy(&bytes).replace("<f4", "<f8");
        assert!(parse(bad.as_bytes()).is_err());
        assert!(parse(&bytes[..bytes.len() - 1]).unwrap_err().contains("needs 24 bytes"));
    }
}
