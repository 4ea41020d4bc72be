//! XDF (Extensible Data Format), written the way LabRecorder writes it, so pyxdf, MNE and
//! EEGLAB read our sessions.
//!
//! ```text
//! "XDF:" then chunks: [len-bytes: 1|4|8][len (LE)][tag u16][content]
//!   tag 1 FileHeader   XML
//!   tag 2 StreamHeader stream id u32 + LSL stream info XML
//!   tag 3 Samples      stream id u32 + [count-bytes][count] + per sample: [8][f64 ts] values
//!   tag 4 ClockOffset  stream id u32 + collection time f64 + offset f64
//!   tag 5 Boundary     16-byte UUID (lets readers resync after a damaged chunk)
//!   tag 6 StreamFooter stream id u32 + XML (first/last timestamp, sample_count, offsets)
//! ```
//!
//! [`XdfWriter`] builds each chunk in a reused buffer and hands it to the file with one
//! `write`, so a crash cuts the file only at a chunk boundary or inside the last chunk.

use std::fs::File;
use std::io::Write;

pub const MAGIC: &[u8; 4] = b"XDF:";
pub const BOUNDARY_UUID: [u8; 16] =
    [0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4];

pub const TAG_FILE_HEADER: u16 = 1;
pub const TAG_STREAM_HEADER: u16 = 2;
pub const TAG_SAMPLES: u16 = 3;
pub const TAG_CLOCK_OFFSET: u16 = 4;
pub const TAG_BOUNDARY: u16 = 5;
pub const TAG_STREAM_FOOTER: u16 = 6;

/// Appends XDF's variable-length integer: a byte saying 1, 4 or 8, then the value.
pub fn put_varlen(buf: &mut Vec<u8>, v: u64) {
    if v <= u8::MAX as u64 {
        buf.push(1);
        buf.push(v as u8);
    } else if v <= u32::MAX as u64 {
        buf.push(4);
        buf.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        buf.push(8);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Escapes text for XML content.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes XDF chunks to a file, counting bytes.
pub struct XdfWriter {
    file: File,
    chunk: Vec<u8>,
    body: Vec<u8>,
    pub bytes_written: u64,
}

impl XdfWriter {
    /// Starts a file: magic and file header (`extra_xml` goes inside `<info>`).
    pub fn create(mut file: File, extra_xml: &str) -> std::io::Result<Self> {
        file.write_all(MAGIC)?;
        let mut w =
            Self { file, chunk: Vec::with_capacity(1 << 16), body: Vec::with_capacity(1 << 16), bytes_written: 4 };
        let xml = format!("<?xml version=\"1.0\"?><info><version>1.0</version>{extra_xml}</info>");
        w.body.extend_from_slice(xml.as_bytes());
        w.emit(TAG_FILE_HEADER)?;
        Ok(w)
    }

    /// Wraps `self.body` as a chunk with `tag` and writes it with one call.
    fn emit(&mut self, tag: u16) -> std::io::Result<()> {
        self.chunk.clear();
        put_varlen(&mut self.chunk, self.body.len() as u64 + 2);
        self.chunk.extend_from_slice(&tag.to_le_bytes());
        self.chunk.extend_from_slice(&self.body);
        self.file.write_all(&self.chunk)?;
        self.bytes_written += self.chunk.len() as u64;
        self.body.clear();
        Ok(())
    }

    pub fn stream_header(&mut self, id: u32, info_xml: &str) -> std::io::Result<()> {
        self.body.extend_from_slice(&id.to_le_bytes());
        self.body.extend_from_slice(info_xml.as_bytes());
        self.emit(TAG_STREAM_HEADER)
    }

    /// A samples chunk of float32 values (`values.len() == timestamps.len() * channels`).
    pub fn samples_f32(&mut self, id: u32, timestamps: &[f64], values: &[f32], channels: usize) -> std::io::Result<()> {
        self.body.extend_from_slice(&id.to_le_bytes());
        put_varlen(&mut self.body, timestamps.len() as u64);
        for (t, row) in timestamps.iter().zip(values.chunks_exact(channels)) {
            self.body.push(8);
            self.body.extend_from_slice(&t.to_le_bytes());
            for v in row {
                self.body.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.emit(TAG_SAMPLES)
    }

    /// A samples chunk written in `format` (the source's own: float32, double64, int8..64)
    /// from the ring's double-precision values, which hold every such value exactly.
    pub fn samples_as(
        &mut self,
        id: u32,
        timestamps: &[f64],
        values: &[f64],
        channels: usize,
        format: crate::lsl::ChannelFormat,
    ) -> std::io::Result<()> {
        use crate::lsl::ChannelFormat as F;
        self.body.extend_from_slice(&id.to_le_bytes());
        put_varlen(&mut self.body, timestamps.len() as u64);
        for (t, row) in timestamps.iter().zip(values.chunks_exact(channels)) {
            self.body.push(8);
            self.body.extend_from_slice(&t.to_le_bytes());
            for &v in row {
                match format {
                    F::Double64 => self.body.extend_from_slice(&v.to_le_bytes()),
                    F::Int8 => self.body.extend_from_slice(&(v as i8).to_le_bytes()),
                    F::Int16 => self.body.extend_from_slice(&(v as i16).to_le_bytes()),
                    F::Int32 => self.body.extend_from_slice(&(v as i32).to_le_bytes()),
                    F::Int64 => self.body.extend_from_slice(&(v as i64).to_le_bytes()),
                    F::Float32 | F::String | F::Undefined => self.body.extend_from_slice(&(v as f32).to_le_bytes()),
                }
            }
        }
        self.emit(TAG_SAMPLES)
    }

    /// A samples chunk of a single-channel string stream.
    pub fn samples_str<'a>(
        &mut self,
        id: u32,
        samples: impl ExactSizeIterator<Item = (f64, &'a str)>,
    ) -> std::io::Result<()> {
        self.body.extend_from_slice(&id.to_le_bytes());
        put_varlen(&mut self.body, samples.len() as u64);
        for (t, s) in samples {
            self.body.push(8);
            self.body.extend_from_slice(&t.to_le_bytes());
            put_varlen(&mut self.body, s.len() as u64);
            self.body.extend_from_slice(s.as_bytes());
        }
        self.emit(TAG_SAMPLES)
    }

    pub fn clock_offset(&mut self, id: u32, collection_time: f64, offset: f64) -> std::io::Result<()> {
        self.body.extend_from_slice(&id.to_le_bytes());
        self.body.extend_from_slice(&collection_time.to_le_bytes());
        self.body.extend_from_slice(&offset.to_le_bytes());
        self.emit(TAG_CLOCK_OFFSET)
    }

    pub fn boundary(&mut self) -> std::io::Result<()> {
        self.body.extend_from_slice(&BOUNDARY_UUID);
        self.emit(TAG_BOUNDARY)
    }

    pub fn stream_footer(
        &mut self,
        id: u32,
        first: f64,
        last: f64,
        count: u64,
        offsets: &[(f64, f64)],
    ) -> std::io::Result<()> {
        let mut xml = format!(
            "<?xml version=\"1.0\"?><info><first_timestamp>{first}</first_timestamp><last_timestamp>{last}</last_timestamp><sample_count>{count}</sample_count><clock_offsets>"
        );
        for (t, v) in offsets {
            xml.push_str(&format!("<offset><time>{t}</time><value>{v}</value></offset>"));
        }
        xml.push_str("</clock_offsets></info>");
        self.body.extend_from_slice(&id.to_le_bytes());
        self.body.extend_from_slice(xml.as_bytes());
        self.emit(TAG_STREAM_FOOTER)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// LSL-style stream header XML for a stream we create ourselves (decodings, session).
pub fn info_xml(
    name: &str,
    kind: &str,
    channels: usize,
    srate: f64,
    format: &str,
    source_id: &str,
    desc: &str,
) -> String {
    format!(
        "<?xml version=\"1.0\"?><info><name>{}</name><type>{}</type><channel_count>{channels}</channel_count><nominal_srate>{srate}</nominal_srate><channel_format>{format}</channel_format><source_id>{}</source_id><version>1.1</version><created_at>0</created_at><uid></uid><session_id></session_id><hostname></hostname><desc>{desc}</desc></info>",
        xml_escape(name),
        xml_escape(kind),
        xml_escape(source_id)
    )
}
