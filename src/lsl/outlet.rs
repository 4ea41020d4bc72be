//! Outlets: publishing a stream. [`Outlet`] pushes numeric chunks with per-sample
//! timestamps in the stream's own format; [`MarkerOutlet`] pushes string markers.

use std::ffi::CString;

use super::ffi::{self, OutletPtr};
use super::{ChannelFormat, LslError, StreamInfo};

/// A numeric stream's outlet.
pub struct Outlet {
    ptr: OutletPtr,
    channels: usize,
    format: ChannelFormat,
    api: &'static ffi::Api,
    /// Scratch for format conversion, sized once (no allocation per push).
    scratch_i16: Vec<i16>,
    scratch_i32: Vec<i32>,
    scratch_f64: Vec<f64>,
    scratch_f32: Vec<f32>,
}

// SAFETY: liblsl outlets are thread-safe; we only push through `&mut self`.
unsafe impl Send for Outlet {}

fn create(info: &StreamInfo, chunk_size: i32, max_buffered_s: i32) -> Result<(OutletPtr, &'static ffi::Api), LslError> {
    let api = ffi::api()?;
    // SAFETY: `info.ptr` is live; liblsl copies the description.
    let ptr = unsafe { (api.lsl_create_outlet)(info.ptr, chunk_size, max_buffered_s) };
    if ptr.is_null() {
        return Err(LslError::Internal("lsl_create_outlet"));
    }
    Ok((ptr, api))
}

impl Outlet {
    /// Publishes `info`. `max_chunk` is the largest chunk (samples) pushed at once.
    pub fn create(info: &StreamInfo, max_chunk: usize) -> Result<Self, LslError> {
        let format = info.format();
        if !format.is_numeric() {
            return Err(LslError::WrongFormat { name: info.name(), format, expected: "Outlet needs a numeric format" });
        }
        let (ptr, api) = create(info, 0, 360)?;
        let n = max_chunk * info.channel_count();
        let sized = |f: ChannelFormat| if format == f { n } else { 0 };
        Ok(Self {
            ptr,
            channels: info.channel_count(),
            format,
            api,
            scratch_i16: vec![0; sized(ChannelFormat::Int16)],
            scratch_i32: vec![0; sized(ChannelFormat::Int32)],
            scratch_f64: vec![0.0; sized(ChannelFormat::Double64)],
            scratch_f32: vec![0.0; sized(ChannelFormat::Float32)],
        })
    }

    pub fn channel_count(&self) -> usize {
        self.channels
    }

    /// Pushes `timestamps.len()` samples from `data` (row-major, f32 or f64), converting
    /// to the stream's format (integers are rounded and saturated); a double64 outlet gets
    /// f64 values unchanged, so replaying a recording gives the source's values exactly.
    pub fn push_chunk<V: super::Sample>(&mut self, data: &[V], timestamps: &[f64]) -> Result<(), LslError> {
        let n = timestamps.len() * self.channels;
        if data.len() != n {
            return Err(LslError::Argument(format!(
                "push_chunk: {} values for {} samples x {} channels",
                data.len(),
                timestamps.len(),
                self.channels
            )));
        }
        let api = self.api;
        // SAFETY (all arms): the data pointer is valid for `n` elements and the timestamp
        // pointer for `n / channels` elements, exactly what liblsl reads.
        let ec = match self.format {
            ChannelFormat::Float32 => {
                let buf = match V::as_f32s(data) {
                    Some(d) => d,
                    None => converted(&mut self.scratch_f32, data, n, |v| v as f32)?,
                };
                unsafe { (api.lsl_push_chunk_ftnp)(self.ptr, buf.as_ptr(), n as _, timestamps.as_ptr(), 1) }
            }
            ChannelFormat::Double64 => {
                let buf = match V::as_f64s(data) {
                    Some(d) => d,
                    None => converted(&mut self.scratch_f64, data, n, |v| v)?,
                };
                unsafe { (api.lsl_push_chunk_dtnp)(self.ptr, buf.as_ptr(), n as _, timestamps.as_ptr(), 1) }
            }
            ChannelFormat::Int16 => {
                let buf = converted(&mut self.scratch_i16, data, n, |v| v.round() as i16)?;
                unsafe { (api.lsl_push_chunk_stnp)(self.ptr, buf.as_ptr(), n as _, timestamps.as_ptr(), 1) }
            }
            ChannelFormat::Int32 => {
                let buf = converted(&mut self.scratch_i32, data, n, |v| v.round() as i32)?;
                unsafe { (api.lsl_push_chunk_itnp)(self.ptr, buf.as_ptr(), n as _, timestamps.as_ptr(), 1) }
            }
            other => return Err(LslError::WrongFormat { name: String::new(), format: other, expected: "numeric" }),
        };
        super::check_ec(ec, "lsl_push_chunk", 0.0)
    }

    pub fn have_consumers(&self) -> bool {
        // SAFETY: `self.ptr` is live.
        unsafe { (self.api.lsl_have_consumers)(self.ptr) != 0 }
    }

    /// Waits up to `timeout_s` for an inlet to connect.
    pub fn wait_for_consumers(&self, timeout_s: f64) -> bool {
        // SAFETY: `self.ptr` is live.
        unsafe { (self.api.lsl_wait_for_consumers)(self.ptr, timeout_s) != 0 }
    }
}

/// `data` converted into the first `n` values of the preallocated `buf`.
fn converted<'a, V: super::Sample, T>(
    buf: &'a mut [T],
    data: &[V],
    n: usize,
    f: impl Fn(f64) -> T,
) -> Result<&'a [T], LslError> {
    let out = scratch(buf, n)?;
    out.iter_mut().zip(data).for_each(|(d, &s)| *d = f(s.to_f64()));
    Ok(out)
}

fn scratch<T>(buf: &mut [T], n: usize) -> Result<&mut [T], LslError> {
    let len = buf.len();
    buf.get_mut(..n).ok_or_else(|| {
        LslError::Argument(format!("push_chunk: chunk of {n} values exceeds the outlet's max_chunk ({len} values)"))
    })
}

impl Drop for Outlet {
    fn drop(&mut self) {
        // SAFETY: we own `self.ptr`; destroyed exactly once, here.
        unsafe { (self.api.lsl_destroy_outlet)(self.ptr) }
    }
}

/// A string marker stream's outlet (one channel, irregular rate).
pub struct MarkerOutlet {
    ptr: OutletPtr,
    api: &'static ffi::Api,
}

// SAFETY: as for Outlet.
unsafe impl Send for MarkerOutlet {}

impl MarkerOutlet {
    /// Publishes a `type=Markers` string stream named `name`.
    pub fn create(name: &str, source_id: &str) -> Result<Self, LslError> {
        let info = StreamInfo::new(name, "Markers", 1, 0.0, ChannelFormat::String, source_id)?;
        let (ptr, api) = create(&info, 1, 360)?;
        Ok(Self { ptr, api })
    }

    pub fn push_marker(&mut self, text: &str, timestamp: f64) -> Result<(), LslError> {
        let c = CString::new(text).map_err(|_| LslError::Argument("marker contains a NUL byte".into()))?;
        let arr = [c.as_ptr()];
        // SAFETY: one valid string pointer, matching the stream's single channel.
        let ec = unsafe { (self.api.lsl_push_sample_strtp)(self.ptr, arr.as_ptr(), timestamp, 1) };
        super::check_ec(ec, "lsl_push_sample_str", 0.0)
    }

    pub fn have_consumers(&self) -> bool {
        // SAFETY: `self.ptr` is live.
        unsafe { (self.api.lsl_have_consumers)(self.ptr) != 0 }
    }
}

impl Drop for MarkerOutlet {
    fn drop(&mut self) {
        // SAFETY: we own `self.ptr`; destroyed exactly once, here.
        unsafe { (self.api.lsl_destroy_outlet)(self.ptr) }
    }
}
