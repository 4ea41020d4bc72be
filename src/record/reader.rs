//! Reading XDF files back (for `replay`): every stream's samples, timestamps and clock
//! offsets. A file cut short by a crash, or with a damaged chunk, is read up to the
//! damage, then resumed at the next Boundary chunk; [`XdfFile::damage`] says where.

use std::path::Path;

use super::xdf::{
    BOUNDARY_UUID, MAGIC, TAG_BOUNDARY, TAG_CLOCK_OFFSET, TAG_FILE_HEADER, TAG_SAMPLES, TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
};

#[derive(Debug, Clone, Default)]
pub struct XdfStream {
    pub id: u32,
    pub header_xml: String,
    pub name: String,
    pub kind: String,
    pub source_id: String,
    pub channel_count: usize,
    pub nominal_srate: f64,
    pub format: String,
    pub labels: Vec<String>,
    pub units: Vec<String>,
    pub timestamps: Vec<f64>,
    /// Numeric samples, sample-major, in double precision (every XDF numeric format's
    /// values exactly, int64 up to 2^53).
    pub values: Vec<f64>,
    /// String samples (one channel).
    pub strings: Vec<String>,
    /// (collection time, offset) pairs.
    pub clock_offsets: Vec<(f64, f64)>,
    pub footer_xml: Option<String>,
}

impl XdfStream {
    /// The clock offset to add to a timestamp at `t`: linear interpolation of the
    /// recorded offsets (as pyxdf's synchronize_clocks does, without the robust fit).
    pub fn offset_at(&self, t: f64) -> f64 {
        match self.clock_offsets.len() {
            0 => 0.0,
            1 => self.clock_offsets[0].1,
            _ => {
                let i = self.clock_offsets.partition_point(|(ct, _)| *ct <= t).clamp(1, self.clock_offsets.len() - 1);
                let ((t0, v0), (t1, v1)) = (self.clock_offsets[i - 1], self.clock_offsets[i]);
                if t1 == t0 {
                    v1
                } else {
                    v0 + (v1 - v0) * ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct XdfFile {
    pub header_xml: String,
    pub streams: Vec<XdfStream>,
    /// Where reading met damage (byte offset, what), if it did.
    pub damage: Vec<(u64, String)>,
}

impl XdfFile {
    pub fn stream(&self, id: u32) -> Option<&XdfStream> {
        self.streams.iter().find(|s| s.id == id)
    }
    pub fn by_type(&self, kind: &str) -> Option<&XdfStream> {
        self.streams.iter().find(|s| s.kind == kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XdfError {
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error("{path} is not an XDF file (no 'XDF:' magic at the start)")]
    NotXdf { path: String },
}

/// The text of the first `<tag>...</tag>` in `xml`.
pub fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&"))
}

fn channel_fields(xml: &str, field: &str) -> Vec<String> {
    let Some(start) = xml.find("<channels>") else { return Vec::new() };
    let end = xml[start..].find("</channels>").map_or(xml.len(), |e| e + start);
    xml[start..end].split("<channel>").skip(1).map(|c| xml_field(c, field).unwrap_or_default()).collect()
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or_else(|| format!("truncated: needed {n} bytes at offset {}", self.pos))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn varlen(&mut self) -> Result<u64, String> {
        match self.u8()? {
            1 => Ok(u64::from(self.u8()?)),
            4 => Ok(u64::from(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))),
            8 => Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            n => Err(format!("invalid length-byte count {n}")),
        }
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
}

fn value_width(format: &str) -> Option<usize> {
    Some(match format {
        "float32" | "int32" => 4,
        "double64" | "int64" => 8,
        "int16" => 2,
        "int8" => 1,
        _ => return None,
    })
}

fn to_f64(format: &str, b: &[u8]) -> f64 {
    match format {
        "float32" => f64::from(f32::from_le_bytes(b.try_into().expect("4"))),
        "double64" => f64::from_le_bytes(b.try_into().expect("8")),
        "int32" => f64::from(i32::from_le_bytes(b.try_into().expect("4"))),
        "int64" => i64::from_le_bytes(b.try_into().expect("8")) as f64,
        "int16" => f64::from(i16::from_le_bytes(b.try_into().expect("2"))),
        _ => f64::from(b[0] as i8),
    }
}

fn samples(s: &mut XdfStream, c: &mut Cursor<'_>) -> Result<(), String> {
    let n = c.varlen()?;
    let period = if s.nominal_srate > 0.0 { 1.0 / s.nominal_srate } else { 0.0 };
    for _ in 0..n {
        let ts = match c.u8()? {
            8 => c.f64()?,
            0 => s.timestamps.last().map_or(0.0, |t| t + period),
            k => return Err(format!("invalid timestamp byte count {k}")),
        };
        if s.format == "string" {
            for _ in 0..s.channel_count.max(1) {
                let len = c.varlen()? as usize;
                s.strings.push(String::from_utf8_lossy(c.take(len)?).into_owned());
            }
        } else {
            let w = value_width(&s.format).ok_or_else(|| format!("unsupported channel format '{}'", s.format))?;
            let bytes = c.take(w.checked_mul(s.channel_count).ok_or("sample size overflows")?)?;
            s.values.extend(bytes.chunks_exact(w).map(|b| to_f64(&s.format, b)));
        }
        s.timestamps.push(ts);
    }
    Ok(())
}

/// Most channels a stream header may announce.
const MAX_CHANNELS: usize = 100_000;
/// Highest nominal rate a stream header may announce.
const MAX_RATE_HZ: f64 = 1e6;

/// Reads a whole XDF file.
pub fn read_xdf(path: &Path) -> Result<XdfFile, XdfError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| XdfError::Io { path: p.clone(), why: e.to_string() })?;
    parse_xdf(&bytes, &p)
}

/// Parses XDF bytes (`p` names them in errors). Damage never panics: the parser resumes at
/// the next Boundary and reports where it lost its way.
pub fn parse_xdf(bytes: &[u8], p: &str) -> Result<XdfFile, XdfError> {
    let p = p.to_string();
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(XdfError::NotXdf { path: p });
    }
    let mut file = XdfFile::default();
    let mut c = Cursor { b: bytes, pos: 4 };
    while c.pos < bytes.len() {
        let chunk_start = c.pos;
        let res = (|| -> Result<(), String> {
            let len = c.varlen()? as usize;
            if len < 2 {
                return Err(format!("chunk length {len} too small"));
            }
            let body = c.take(len)?;
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let mut b = Cursor { b: &body[2..], pos: 0 };
            match tag {
                TAG_FILE_HEADER => file.header_xml = String::from_utf8_lossy(b.b).into_owned(),
                TAG_STREAM_HEADER => {
                    let id = b.u32()?;
                    let xml = String::from_utf8_lossy(&b.b[4..]).into_owned();
                    let field = |f: &str| xml_field(&xml, f).unwrap_or_default();
                    let count: usize =
                        field("channel_count").parse().map_err(|_| "stream header without a valid channel_count")?;
                    if !(1..=MAX_CHANNELS).contains(&count) {
                        return Err(format!("stream header channel_count {count} is outside 1..{MAX_CHANNELS}"));
                    }
                    let srate: f64 = field("nominal_srate").parse().unwrap_or(0.0);
                    if !(srate.is_finite() && (0.0..=MAX_RATE_HZ).contains(&srate)) {
                        return Err(format!("stream header nominal_srate {srate} is outside 0..{MAX_RATE_HZ} Hz"));
                    }
                    file.streams.push(XdfStream {
                        id,
                        name: field("name"),
                        kind: field("type"),
                        source_id: field("source_id"),
                        channel_count: count,
                        nominal_srate: srate,
                        format: field("channel_format"),
                        labels: channel_fields(&xml, "label"),
                        units: channel_fields(&xml, "unit"),
                        header_xml: xml,
                        ..Default::default()
                    });
                }
                TAG_SAMPLES => {
                    let id = b.u32()?;
                    let s = file
                        .streams
                        .iter_mut()
                        .find(|s| s.id == id)
                        .ok_or(format!("samples for unknown stream {id}"))?;
                    // All or nothing: a damaged chunk adds no samples.
                    let (nt, nv, ns) = (s.timestamps.len(), s.values.len(), s.strings.len());
                    if let Err(e) = samples(s, &mut b) {
                        s.timestamps.truncate(nt);
                        s.values.truncate(nv);
                        s.strings.truncate(ns);
                        return Err(e);
                    }
                }
                TAG_CLOCK_OFFSET => {
                    let id = b.u32()?;
                    let (t, v) = (b.f64()?, b.f64()?);
                    if let Some(s) = file.streams.iter_mut().find(|s| s.id == id) {
                        s.clock_offsets.push((t, v));
                    }
                }
                TAG_STREAM_FOOTER => {
                    let id = b.u32()?;
                    if let Some(s) = file.streams.iter_mut().find(|s| s.id == id) {
                        s.footer_xml = Some(String::from_utf8_lossy(&b.b[4..]).into_owned());
                    }
                }
                TAG_BOUNDARY => {}
                other => return Err(format!("unknown chunk tag {other}")),
            }
            Ok(())
        })();
        if let Err(why) = res {
            file.damage.push((chunk_start as u64, why));
            // Resume after the next Boundary chunk, if there is one.
            match bytes[chunk_start + 1..].windows(16).position(|w| w == BOUNDARY_UUID) {
                Some(i) => c.pos = chunk_start + 1 + i + 16,
                None => break,
            }
        }
    }
    Ok(file)
}
