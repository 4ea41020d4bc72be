//! A thin, safe wrapper over liblsl's C API (Lab Streaming Layer).
//!
//! This module and its children are the only place in meg-decoder that contains `unsafe`
//! code: every other module deals in [`StreamInfo`], [`Inlet`], [`MarkerInlet`],
//! [`Outlet`] and [`MarkerOutlet`]. liblsl itself is loaded at run time (see [`ffi`]), so
//! the crate builds without it and a missing library is a clear run-time error.
//!
//! Vocabulary follows liblsl and MNE-LSL: a *stream* is described by a [`StreamInfo`]
//! (name, type, source_id, channels, nominal rate, format); an *outlet* publishes it; an
//! *inlet* receives it; *resolving* finds streams on the network.

mod ffi;
mod info;
mod inlet;
mod outlet;

use std::ffi::{CStr, CString};

pub use info::{resolve_all, resolve_bypred, resolve_byprop, ChannelInfo, StreamInfo};
pub use inlet::{Inlet, MarkerInlet, PullError};
pub use outlet::{MarkerOutlet, Outlet};

/// Errors from the LSL layer. Messages say what went wrong and what to do about it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LslError {
    #[error("{0}")]
    Library(String),
    #[error("no LSL stream matching {query} appeared within {timeout_s:.1} s. Check that the source is running (`meg-decoder inspect-stream` lists what is visible) and that both sides use the same LSL config (LSLAPICFG, SessionID)")]
    NotFound { query: String, timeout_s: f64 },
    #[error("timed out after {0:.1} s waiting for the stream to answer")]
    Timeout(f64),
    #[error("the stream was lost (source gone) and could not be recovered")]
    Lost,
    #[error("invalid argument to liblsl: {0}")]
    Argument(String),
    #[error("liblsl internal error in {0}")]
    Internal(&'static str),
    #[error("stream '{name}' has format {format:?}; {expected}")]
    WrongFormat { name: String, format: ChannelFormat, expected: &'static str },
}

fn check_ec(ec: i32, what: &'static str, timeout: f64) -> Result<(), LslError> {
    match ec {
        ffi::LSL_NO_ERROR => Ok(()),
        ffi::LSL_TIMEOUT_ERROR => Err(LslError::Timeout(timeout)),
        ffi::LSL_LOST_ERROR => Err(LslError::Lost),
        ffi::LSL_ARGUMENT_ERROR => Err(LslError::Argument(what.to_string())),
        _ => Err(LslError::Internal(what)),
    }
}

/// A numeric value as meg-decoder moves samples around: f32 (what the decoder reads) or
/// f64 (exact for every numeric LSL format up to 2^53). Outlets push either; the ring
/// buffer stores f64 and hands back either.
pub trait Sample: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// The slice itself when it already is f32 (no copy before a float32 push).
    fn as_f32s(_: &[Self]) -> Option<&[f32]> {
        None
    }
    /// The slice itself when it already is f64 (no copy before a double64 push).
    fn as_f64s(_: &[Self]) -> Option<&[f64]> {
        None
    }
}
impl Sample for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f32s(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
}
impl Sample for f64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    fn as_f64s(s: &[Self]) -> Option<&[f64]> {
        Some(s)
    }
}

/// Sample formats of an LSL stream (`lsl_channel_format_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFormat {
    Float32,
    Double64,
    String,
    Int32,
    Int16,
    Int8,
    Int64,
    Undefined,
}

impl ChannelFormat {
    fn from_raw(v: i32) -> Self {
        match v {
            1 => Self::Float32,
            2 => Self::Double64,
            3 => Self::String,
            4 => Self::Int32,
            5 => Self::Int16,
            6 => Self::Int8,
            7 => Self::Int64,
            _ => Self::Undefined,
        }
    }
    fn to_raw(self) -> i32 {
        match self {
            Self::Float32 => 1,
            Self::Double64 => 2,
            Self::String => 3,
            Self::Int32 => 4,
            Self::Int16 => 5,
            Self::Int8 => 6,
            Self::Int64 => 7,
            Self::Undefined => 0,
        }
    }
    /// Numeric formats that an inlet can pull as `f32` (liblsl converts them).
    pub fn is_numeric(self) -> bool {
        !matches!(self, Self::String | Self::Undefined)
    }
    /// The XDF / LSL XML spelling (`float32`, `double64`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Double64 => "double64",
            Self::String => "string",
            Self::Int32 => "int32",
            Self::Int16 => "int16",
            Self::Int8 => "int8",
            Self::Int64 => "int64",
            Self::Undefined => "undefined",
        }
    }
}

impl std::str::FromStr for ChannelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "float32" => Self::Float32,
            "double64" => Self::Double64,
            "string" => Self::String,
            "int32" => Self::Int32,
            "int16" => Self::Int16,
            other => return Err(format!("unknown sample format '{other}': use float32, double64, int32 or int16")),
        })
    }
}

/// Loads liblsl now (if not yet loaded) and reports where from.
pub fn library_path() -> Result<std::path::PathBuf, LslError> {
    Ok(ffi::api()?.path.clone())
}

/// liblsl's version as `major*100 + minor` (e.g. 118).
pub fn library_version() -> Result<i32, LslError> {
    let api = ffi::api()?;
    // SAFETY: no arguments, returns a plain integer.
    Ok(unsafe { (api.lsl_library_version)() })
}

/// liblsl's build description string.
pub fn library_info() -> Result<String, LslError> {
    let api = ffi::api()?;
    // SAFETY: returns a pointer to a static, NUL-terminated string owned by liblsl.
    let p = unsafe { (api.lsl_library_info)() };
    Ok(cstr_to_string(p))
}

/// The LSL clock (seconds, monotonic, shared by every stream on this machine).
pub fn local_clock() -> Result<f64, LslError> {
    let api = ffi::api()?;
    // SAFETY: no arguments, returns a plain double.
    Ok(unsafe { (api.lsl_local_clock)() })
}

/// Hands liblsl its configuration (the text of an `lsl_api.cfg`). Must run before any
/// other LSL call in the process creates an outlet, inlet or resolver; later calls have no
/// effect on liblsl's already-loaded configuration.
pub fn set_config_content(content: &str) -> Result<(), LslError> {
    let api = ffi::api()?;
    let c = CString::new(content).map_err(|_| LslError::Argument("config has a NUL byte".into()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; liblsl copies it.
    unsafe { (api.lsl_set_config_content)(c.as_ptr()) };
    Ok(())
}

/// Copies a liblsl-owned C string into a Rust `String` (empty for NULL).
fn cstr_to_string(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: liblsl returns NUL-terminated strings that stay valid at least until the
    // owning object is modified or destroyed; we copy immediately.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn to_cstring(s: &str, what: &str) -> Result<CString, LslError> {
    CString::new(s).map_err(|_| LslError::Argument(format!("{what} contains a NUL byte")))
}
