//! Raw liblsl C API, loaded at run time from the shared library that the `pylsl` wheel
//! ships (see `native/versions.env`).
//!
//! Only the handful of functions meg-decoder needs are bound. The library is opened once
//! per process and kept for its lifetime; every other module talks to the safe wrappers in
//! [`super::info`], [`super::inlet`] and [`super::outlet`].

use std::ffi::{c_char, c_double, c_float, c_ulong, c_void};
use std::path::PathBuf;
use std::sync::OnceLock;

use super::LslError;

/// Opaque liblsl handles.
pub type StreamInfoPtr = *mut c_void;
pub type OutletPtr = *mut c_void;
pub type InletPtr = *mut c_void;
pub type XmlPtr = *mut c_void;

/// liblsl error codes (`lsl_error_code_t`).
pub const LSL_NO_ERROR: i32 = 0;
pub const LSL_TIMEOUT_ERROR: i32 = -1;
pub const LSL_LOST_ERROR: i32 = -2;
pub const LSL_ARGUMENT_ERROR: i32 = -3;

/// `lsl_processing_options_t::proc_clocksync`.
pub const PROC_CLOCKSYNC: u32 = 1;
pub const PROC_DEJITTER: u32 = 2;
pub const PROC_MONOTONIZE: u32 = 4;

macro_rules! lsl_api {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? ; )*) => {
        /// Function pointers resolved from liblsl.
        #[allow(non_snake_case, dead_code)]
        pub struct Api {
            _lib: libloading::Library,
            pub path: PathBuf,
            $( pub $name: unsafe extern "C" fn($($ty),*) $(-> $ret)?, )*
        }

        impl Api {
            fn from_library(lib: libloading::Library, path: PathBuf) -> Result<Self, String> {
                $(
                    // SAFETY: the symbol is looked up by its exact C name and given the
                    // signature declared in liblsl's lsl_c.h (1.16+); the function pointer
                    // is copied out while `lib`, which keeps it valid, moves into `Api`.
                    let $name = unsafe {
                        *lib.get::<unsafe extern "C" fn($($ty),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                        .map_err(|e| format!("{} lacks {}: {e}", path.display(), stringify!($name)))?
                    };
                )*
                Ok(Api { _lib: lib, path, $($name,)* })
            }
        }
    };
}

lsl_api! {
    fn lsl_library_version() -> i32;
    fn lsl_protocol_version() -> i32;
    fn lsl_library_info() -> *const c_char;
    fn lsl_local_clock() -> c_double;
    fn lsl_destroy_string(s: *mut c_char);
    fn lsl_set_config_content(content: *const c_char);

    fn lsl_create_streaminfo(name: *const c_char, kind: *const c_char, channel_count: i32, nominal_srate: c_double, channel_format: i32, source_id: *const c_char) -> StreamInfoPtr;
    fn lsl_destroy_streaminfo(info: StreamInfoPtr);
    fn lsl_copy_streaminfo(info: StreamInfoPtr) -> StreamInfoPtr;
    fn lsl_get_name(info: StreamInfoPtr) -> *const c_char;
    fn lsl_get_type(info: StreamInfoPtr) -> *const c_char;
    fn lsl_get_channel_count(info: StreamInfoPtr) -> i32;
    fn lsl_get_nominal_srate(info: StreamInfoPtr) -> c_double;
    fn lsl_get_channel_format(info: StreamInfoPtr) -> i32;
    fn lsl_get_source_id(info: StreamInfoPtr) -> *const c_char;
    fn lsl_get_hostname(info: StreamInfoPtr) -> *const c_char;
    fn lsl_get_uid(info: StreamInfoPtr) -> *const c_char;
    fn lsl_get_created_at(info: StreamInfoPtr) -> c_double;
    fn lsl_get_desc(info: StreamInfoPtr) -> XmlPtr;
    fn lsl_get_xml(info: StreamInfoPtr) -> *mut c_char;

    fn lsl_first_child(e: XmlPtr) -> XmlPtr;
    fn lsl_next_sibling(e: XmlPtr) -> XmlPtr;
    fn lsl_child(e: XmlPtr, name: *const c_char) -> XmlPtr;
    fn lsl_empty(e: XmlPtr) -> i32;
    fn lsl_name(e: XmlPtr) -> *const c_char;
    fn lsl_child_value(e: XmlPtr) -> *const c_char;
    fn lsl_child_value_n(e: XmlPtr, name: *const c_char) -> *const c_char;
    fn lsl_append_child(e: XmlPtr, name: *const c_char) -> XmlPtr;
    fn lsl_append_child_value(e: XmlPtr, name: *const c_char, value: *const c_char) -> XmlPtr;

    fn lsl_resolve_all(buffer: *mut StreamInfoPtr, buffer_elements: u32, wait_time: c_double) -> i32;
    fn lsl_resolve_byprop(buffer: *mut StreamInfoPtr, buffer_elements: u32, prop: *const c_char, value: *const c_char, minimum: i32, timeout: c_double) -> i32;
    fn lsl_resolve_bypred(buffer: *mut StreamInfoPtr, buffer_elements: u32, pred: *const c_char, minimum: i32, timeout: c_double) -> i32;

    fn lsl_create_outlet(info: StreamInfoPtr, chunk_size: i32, max_buffered: i32) -> OutletPtr;
    fn lsl_destroy_outlet(out: OutletPtr);
    fn lsl_push_chunk_ftnp(out: OutletPtr, data: *const c_float, data_elements: c_ulong, timestamps: *const c_double, pushthrough: i32) -> i32;
    fn lsl_push_chunk_dtnp(out: OutletPtr, data: *const c_double, data_elements: c_ulong, timestamps: *const c_double, pushthrough: i32) -> i32;
    fn lsl_push_chunk_stnp(out: OutletPtr, data: *const i16, data_elements: c_ulong, timestamps: *const c_double, pushthrough: i32) -> i32;
    fn lsl_push_chunk_itnp(out: OutletPtr, data: *const i32, data_elements: c_ulong, timestamps: *const c_double, pushthrough: i32) -> i32;
    fn lsl_push_sample_strtp(out: OutletPtr, data: *const *const c_char, timestamp: c_double, pushthrough: i32) -> i32;
    fn lsl_have_consumers(out: OutletPtr) -> i32;
    fn lsl_wait_for_consumers(out: OutletPtr, timeout: c_double) -> i32;

    fn lsl_create_inlet(info: StreamInfoPtr, max_buflen: i32, max_chunklen: i32, recover: i32) -> InletPtr;
    fn lsl_destroy_inlet(inlet: InletPtr);
    fn lsl_get_fullinfo(inlet: InletPtr, timeout: c_double, ec: *mut i32) -> StreamInfoPtr;
    fn lsl_open_stream(inlet: InletPtr, timeout: c_double, ec: *mut i32);
    fn lsl_time_correction(inlet: InletPtr, timeout: c_double, ec: *mut i32) -> c_double;
    fn lsl_set_postprocessing(inlet: InletPtr, flags: u32) -> i32;
    fn lsl_pull_sample_f(inlet: InletPtr, buffer: *mut c_float, buffer_elements: i32, timeout: c_double, ec: *mut i32) -> c_double;
    fn lsl_pull_chunk_f(inlet: InletPtr, data: *mut c_float, timestamps: *mut c_double, data_elements: c_ulong, timestamp_elements: c_ulong, timeout: c_double, ec: *mut i32) -> c_ulong;
    fn lsl_pull_sample_d(inlet: InletPtr, buffer: *mut c_double, buffer_elements: i32, timeout: c_double, ec: *mut i32) -> c_double;
    fn lsl_pull_chunk_d(inlet: InletPtr, data: *mut c_double, timestamps: *mut c_double, data_elements: c_ulong, timestamp_elements: c_ulong, timeout: c_double, ec: *mut i32) -> c_ulong;
    fn lsl_pull_sample_str(inlet: InletPtr, buffer: *mut *mut c_char, buffer_elements: i32, timeout: c_double, ec: *mut i32) -> c_double;
    fn lsl_samples_available(inlet: InletPtr) -> u32;
    fn lsl_was_clock_reset(inlet: InletPtr) -> u32;
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Where liblsl is looked for, in order: `$LSL_LIB`, the project's `native/lib` (as
/// fetched by `make native`), `lib/` next to the executable, then the system linker path.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("LSL_LIB") {
        out.push(PathBuf::from(p));
        return out;
    }
    let name = "liblsl.so.1.18.0";
    out.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("native/lib").join(name));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join("lib").join(name));
            out.push(dir.join("../lib").join(name));
        }
    }
    out.push(PathBuf::from("liblsl.so.2"));
    out.push(PathBuf::from("liblsl.so"));
    out
}

fn load() -> Result<Api, String> {
    let mut tried = Vec::new();
    for path in candidates() {
        if path.is_absolute() && !path.exists() {
            tried.push(format!("{} (missing)", path.display()));
            continue;
        }
        // SAFETY: loading liblsl runs its static initialisers, which only set up
        // internal state (no global side effects on the process beyond its own threads).
        match unsafe { libloading::Library::new(&path) } {
            Ok(lib) => return Api::from_library(lib, path),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(format!(
        "liblsl could not be loaded; tried: {}. Fix: run `make native` (fetches it from the \
         pylsl wheel on PyPI into native/lib) or set LSL_LIB=/path/to/liblsl.so",
        tried.join("; ")
    ))
}

/// The process-wide liblsl binding, loaded on first use.
pub fn api() -> Result<&'static Api, LslError> {
    API.get_or_init(load).as_ref().map_err(|e| LslError::Library(e.clone()))
}
