//! Inlets: receiving a stream's samples. [`Inlet`] pulls numeric chunks straight into
//! caller-owned flat buffers (liblsl converts any numeric format to `f32`); [`MarkerInlet`]
//! pulls string markers.

use std::ffi::c_char;

use super::ffi::{self, InletPtr};
use super::{check_ec, cstr_to_string, LslError, StreamInfo};

/// Why a pull returned no data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PullError {
    #[error("the stream was lost and the inlet cannot recover (no source_id, or recovery disabled)")]
    Lost,
    #[error("liblsl failed: {0}")]
    Other(LslError),
}

/// A numeric stream's inlet.
pub struct Inlet {
    ptr: InletPtr,
    channels: usize,
    api: &'static ffi::Api,
}

// SAFETY: a liblsl inlet may be used from any thread, one call at a time; `&mut self` on
// every pull guarantees that.
unsafe impl Send for Inlet {}

fn create(info: &StreamInfo, max_buffer_s: i32, recover: bool) -> Result<(InletPtr, &'static ffi::Api), LslError> {
    let api = ffi::api()?;
    // SAFETY: `info.ptr` is a live streaminfo; liblsl copies what it needs. max_chunklen 0
    // keeps the sender's chunking.
    let ptr = unsafe { (api.lsl_create_inlet)(info.ptr, max_buffer_s, 0, i32::from(recover)) };
    if ptr.is_null() {
        return Err(LslError::Internal("lsl_create_inlet"));
    }
    Ok((ptr, api))
}

impl Inlet {
    /// Opens an inlet on a numeric stream. `max_buffer_s` is how many seconds liblsl
    /// buffers if we fall behind; `recover` re-resolves a lost source by its source_id.
    pub fn open(info: &StreamInfo, max_buffer_s: i32, recover: bool) -> Result<Self, LslError> {
        if !info.format().is_numeric() {
            return Err(LslError::WrongFormat {
                name: info.name(),
                format: info.format(),
                expected: "a numeric stream (float32, double64, int32, int16) is needed here; \
                           pick the MEG stream, not a marker stream",
            });
        }
        let (ptr, api) = create(info, max_buffer_s, recover)?;
        Ok(Self { ptr, channels: info.channel_count(), api })
    }

    pub fn channel_count(&self) -> usize {
        self.channels
    }

    /// Subscribes now (instead of at the first pull), waiting up to `timeout_s`.
    pub fn open_stream(&mut self, timeout_s: f64) -> Result<(), LslError> {
        let mut ec = 0;
        // SAFETY: `self.ptr` is a live inlet; `ec` is a valid out-pointer.
        unsafe { (self.api.lsl_open_stream)(self.ptr, timeout_s, &mut ec) };
        check_ec(ec, "lsl_open_stream", timeout_s)
    }

    /// The full stream description, including `<desc>` (channel names).
    pub fn info(&mut self, timeout_s: f64) -> Result<StreamInfo, LslError> {
        let mut ec = 0;
        // SAFETY: `self.ptr` is live; the returned handle is owned by us on success.
        let p = unsafe { (self.api.lsl_get_fullinfo)(self.ptr, timeout_s, &mut ec) };
        check_ec(ec, "lsl_get_fullinfo", timeout_s)?;
        StreamInfo::from_raw(p).ok_or(LslError::Internal("lsl_get_fullinfo"))
    }

    /// Offset (seconds) to add to the remote timestamps to map them onto the local clock.
    pub fn time_correction(&mut self, timeout_s: f64) -> Result<f64, LslError> {
        let mut ec = 0;
        // SAFETY: `self.ptr` is live; `ec` is a valid out-pointer.
        let v = unsafe { (self.api.lsl_time_correction)(self.ptr, timeout_s, &mut ec) };
        check_ec(ec, "lsl_time_correction", timeout_s)?;
        Ok(v)
    }

    /// Turns on liblsl's own clock synchronisation of returned timestamps.
    pub fn set_clocksync(&mut self) -> Result<(), LslError> {
        // SAFETY: `self.ptr` is live; the flag is a documented constant.
        let ec = unsafe { (self.api.lsl_set_postprocessing)(self.ptr, ffi::PROC_CLOCKSYNC) };
        check_ec(ec, "lsl_set_postprocessing", 0.0)
    }

    /// Turns on liblsl's clock synchronisation and dejittering (a running regression of
    /// timestamps on sample index, 90 s half-time) and monotonic timestamps. The service
    /// fits its own clock per segment instead (liblsl's dejitter assumes no sample is ever
    /// lost, so it would smear a gap); tests use this as the reference to agree with.
    pub fn set_dejitter(&mut self) -> Result<(), LslError> {
        let flags = ffi::PROC_CLOCKSYNC | ffi::PROC_DEJITTER | ffi::PROC_MONOTONIZE;
        // SAFETY: `self.ptr` is live; the flags are documented constants.
        let ec = unsafe { (self.api.lsl_set_postprocessing)(self.ptr, flags) };
        check_ec(ec, "lsl_set_postprocessing", 0.0)
    }

    /// Whether the source's clock was reset since the last call (e.g. it restarted).
    pub fn was_clock_reset(&mut self) -> bool {
        // SAFETY: `self.ptr` is live.
        unsafe { (self.api.lsl_was_clock_reset)(self.ptr) != 0 }
    }

    /// Samples liblsl holds for us right now.
    pub fn samples_available(&mut self) -> usize {
        // SAFETY: `self.ptr` is live.
        unsafe { (self.api.lsl_samples_available)(self.ptr) as usize }
    }

    /// Pulls up to `timestamps.len()` samples into `data` (row-major, sample after sample)
    /// and `timestamps`, waiting at most `timeout_s` for them (0.0 = only what is buffered).
    /// Returns the number of samples. Allocates nothing.
    ///
    /// # Panics
    /// If `data` is shorter than `timestamps.len() * channel_count()`.
    pub fn pull_chunk(&mut self, data: &mut [f32], timestamps: &mut [f64], timeout_s: f64) -> Result<usize, PullError> {
        self.pull_chunk_with(self.api.lsl_pull_chunk_f, data, timestamps, timeout_s)
    }

    /// [`pull_chunk`](Self::pull_chunk) in double precision: float32, double64 and
    /// integer sources up to 2^53 arrive exactly as pushed. Allocates nothing.
    pub fn pull_chunk_f64(
        &mut self,
        data: &mut [f64],
        timestamps: &mut [f64],
        timeout_s: f64,
    ) -> Result<usize, PullError> {
        self.pull_chunk_with(self.api.lsl_pull_chunk_d, data, timestamps, timeout_s)
    }

    /// Waits up to `timeout_s` for one sample into `data[..channels]`; returns its
    /// timestamp, or `None` on timeout. Used to sleep until data arrives.
    pub fn pull_sample(&mut self, data: &mut [f32], timeout_s: f64) -> Result<Option<f64>, PullError> {
        self.pull_sample_with(self.api.lsl_pull_sample_f, data, timeout_s)
    }

    /// [`pull_sample`](Self::pull_sample) in double precision.
    pub fn pull_sample_f64(&mut self, data: &mut [f64], timeout_s: f64) -> Result<Option<f64>, PullError> {
        self.pull_sample_with(self.api.lsl_pull_sample_d, data, timeout_s)
    }

    /// One of liblsl's typed `lsl_pull_chunk_*` calls (`T` is the type it writes).
    fn pull_chunk_with<T>(
        &mut self,
        pull: PullChunkFn<T>,
        data: &mut [T],
        timestamps: &mut [f64],
        timeout_s: f64,
    ) -> Result<usize, PullError> {
        let max_samples = timestamps.len().min(data.len() / self.channels.max(1));
        assert!(max_samples > 0 || timestamps.is_empty(), "pull_chunk: buffers too small");
        let mut ec = 0;
        // SAFETY: both buffers are valid for the element counts passed (checked above);
        // `pull` is the liblsl function for elements of type `T`, which writes at most that
        // many elements and returns the count written.
        let elements = unsafe {
            pull(
                self.ptr,
                data.as_mut_ptr(),
                timestamps.as_mut_ptr(),
                (max_samples * self.channels) as _,
                max_samples as _,
                timeout_s,
                &mut ec,
            )
        };
        pull_result(ec, timeout_s)?;
        Ok(elements as usize / self.channels.max(1))
    }

    /// One of liblsl's typed `lsl_pull_sample_*` calls.
    fn pull_sample_with<T>(
        &mut self,
        pull: PullSampleFn<T>,
        data: &mut [T],
        timeout_s: f64,
    ) -> Result<Option<f64>, PullError> {
        assert!(data.len() >= self.channels, "pull_sample: buffer too small");
        let mut ec = 0;
        // SAFETY: `data` holds at least `channels` values of the type `pull` writes, which is
        // what we tell liblsl.
        let ts = unsafe { pull(self.ptr, data.as_mut_ptr(), self.channels as i32, timeout_s, &mut ec) };
        pull_result(ec, timeout_s)?;
        Ok((ts != 0.0).then_some(ts))
    }
}

/// liblsl's `lsl_pull_chunk_f`/`_d` signature for element type `T`.
type PullChunkFn<T> = unsafe extern "C" fn(
    ffi::InletPtr,
    *mut T,
    *mut std::os::raw::c_double,
    std::os::raw::c_ulong,
    std::os::raw::c_ulong,
    std::os::raw::c_double,
    *mut i32,
) -> std::os::raw::c_ulong;
/// liblsl's `lsl_pull_sample_f`/`_d` signature for element type `T`.
type PullSampleFn<T> =
    unsafe extern "C" fn(ffi::InletPtr, *mut T, i32, std::os::raw::c_double, *mut i32) -> std::os::raw::c_double;

fn pull_result(ec: i32, timeout_s: f64) -> Result<(), PullError> {
    match ec {
        ffi::LSL_NO_ERROR | ffi::LSL_TIMEOUT_ERROR => Ok(()),
        ffi::LSL_LOST_ERROR => Err(PullError::Lost),
        other => Err(PullError::Other(check_ec(other, "pull", timeout_s).unwrap_err())),
    }
}

impl Drop for Inlet {
    fn drop(&mut self) {
        // SAFETY: we own `self.ptr`; destroyed exactly once, here.
        unsafe { (self.api.lsl_destroy_inlet)(self.ptr) }
    }
}

/// A string marker stream's inlet (one string channel, irregular rate).
pub struct MarkerInlet {
    ptr: InletPtr,
    api: &'static ffi::Api,
}

// SAFETY: as for Inlet.
unsafe impl Send for MarkerInlet {}

impl MarkerInlet {
    pub fn open(info: &StreamInfo, recover: bool) -> Result<Self, LslError> {
        if info.format() != super::ChannelFormat::String {
            return Err(LslError::WrongFormat {
                name: info.name(),
                format: info.format(),
                expected: "a string marker stream (type=Markers) is needed here",
            });
        }
        let (ptr, api) = create(info, 360, recover)?;
        Ok(Self { ptr, api })
    }

    pub fn time_correction(&mut self, timeout_s: f64) -> Result<f64, LslError> {
        let mut ec = 0;
        // SAFETY: `self.ptr` is live; `ec` is a valid out-pointer.
        let v = unsafe { (self.api.lsl_time_correction)(self.ptr, timeout_s, &mut ec) };
        check_ec(ec, "lsl_time_correction", timeout_s)?;
        Ok(v)
    }

    pub fn open_stream(&mut self, timeout_s: f64) -> Result<(), LslError> {
        let mut ec = 0;
        // SAFETY: `self.ptr` is a live inlet; `ec` is a valid out-pointer.
        unsafe { (self.api.lsl_open_stream)(self.ptr, timeout_s, &mut ec) };
        check_ec(ec, "lsl_open_stream", timeout_s)
    }

    /// Waits up to `timeout_s` for the next marker: `(timestamp, text)`.
    pub fn pull_marker(&mut self, timeout_s: f64) -> Result<Option<(f64, String)>, PullError> {
        let mut slot: *mut c_char = std::ptr::null_mut();
        let mut ec = 0;
        // SAFETY: one writable slot; liblsl allocates the string it stores there, which we
        // copy and free with lsl_destroy_string as its documentation requires.
        let ts = unsafe { (self.api.lsl_pull_sample_str)(self.ptr, &mut slot, 1, timeout_s, &mut ec) };
        let text = if slot.is_null() {
            None
        } else {
            let s = cstr_to_string(slot);
            // SAFETY: `slot` was allocated by liblsl for us and is freed exactly once.
            unsafe { (self.api.lsl_destroy_string)(slot) };
            Some(s)
        };
        pull_result(ec, timeout_s)?;
        Ok(match (ts != 0.0, text) {
            (true, Some(t)) => Some((ts, t)),
            _ => None,
        })
    }
}

impl Drop for MarkerInlet {
    fn drop(&mut self) {
        // SAFETY: we own `self.ptr`; destroyed exactly once, here.
        unsafe { (self.api.lsl_destroy_inlet)(self.ptr) }
    }
}
