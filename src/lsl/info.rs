//! Stream descriptions ([`StreamInfo`]) and resolving streams on the network.

use std::ffi::c_char;

use super::ffi::{self, StreamInfoPtr, XmlPtr};
use super::{cstr_to_string, to_cstring, ChannelFormat, LslError};

/// One channel's metadata from `<desc><channels><channel>` (label, type, unit).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    pub label: String,
    pub kind: String,
    pub unit: String,
}

/// An owned liblsl stream description.
pub struct StreamInfo {
    pub(super) ptr: StreamInfoPtr,
}

// SAFETY: a streaminfo is a heap object that liblsl does not tie to a thread; we only
// mutate it through `&mut self`, so moving it between threads is sound.
unsafe impl Send for StreamInfo {}

impl StreamInfo {
    /// Describes a new stream to publish.
    pub fn new(
        name: &str,
        kind: &str,
        channel_count: usize,
        nominal_srate: f64,
        format: ChannelFormat,
        source_id: &str,
    ) -> Result<Self, LslError> {
        let api = ffi::api()?;
        let (n, t, s) =
            (to_cstring(name, "stream name")?, to_cstring(kind, "stream type")?, to_cstring(source_id, "source_id")?);
        let channels = i32::try_from(channel_count)
            .map_err(|_| LslError::Argument(format!("channel count {channel_count} too large")))?;
        // SAFETY: all strings are valid NUL-terminated and outlive the call (liblsl copies
        // them); numeric arguments are plain values.
        let ptr = unsafe {
            (api.lsl_create_streaminfo)(n.as_ptr(), t.as_ptr(), channels, nominal_srate, format.to_raw(), s.as_ptr())
        };
        if ptr.is_null() {
            return Err(LslError::Argument(format!(
                "liblsl refused stream '{name}' ({channel_count} channels at {nominal_srate} Hz)"
            )));
        }
        Ok(Self { ptr })
    }

    /// Takes ownership of a streaminfo handle returned by liblsl.
    pub(super) fn from_raw(ptr: StreamInfoPtr) -> Option<Self> {
        (!ptr.is_null()).then_some(Self { ptr })
    }

    fn get_str(&self, f: unsafe extern "C" fn(StreamInfoPtr) -> *const c_char) -> String {
        // SAFETY: `self.ptr` is a live streaminfo; the getter returns a string owned by it
        // that we copy before returning.
        cstr_to_string(unsafe { f(self.ptr) })
    }

    fn api(&self) -> &'static ffi::Api {
        ffi::api().expect("liblsl is loaded: a StreamInfo exists")
    }

    pub fn name(&self) -> String {
        self.get_str(self.api().lsl_get_name)
    }
    pub fn kind(&self) -> String {
        self.get_str(self.api().lsl_get_type)
    }
    pub fn source_id(&self) -> String {
        self.get_str(self.api().lsl_get_source_id)
    }
    pub fn hostname(&self) -> String {
        self.get_str(self.api().lsl_get_hostname)
    }
    pub fn uid(&self) -> String {
        self.get_str(self.api().lsl_get_uid)
    }
    pub fn channel_count(&self) -> usize {
        // SAFETY: `self.ptr` is a live streaminfo.
        unsafe { (self.api().lsl_get_channel_count)(self.ptr) }.max(0) as usize
    }
    pub fn nominal_srate(&self) -> f64 {
        // SAFETY: `self.ptr` is a live streaminfo.
        unsafe { (self.api().lsl_get_nominal_srate)(self.ptr) }
    }
    pub fn format(&self) -> ChannelFormat {
        // SAFETY: `self.ptr` is a live streaminfo.
        ChannelFormat::from_raw(unsafe { (self.api().lsl_get_channel_format)(self.ptr) })
    }
    pub fn created_at(&self) -> f64 {
        // SAFETY: `self.ptr` is a live streaminfo.
        unsafe { (self.api().lsl_get_created_at)(self.ptr) }
    }

    /// The whole description as LSL's XML (what XDF stores in a stream header).
    pub fn as_xml(&self) -> String {
        let api = self.api();
        // SAFETY: `self.ptr` is live; lsl_get_xml returns a newly allocated string that we
        // copy and then free with lsl_destroy_string, as liblsl documents.
        unsafe {
            let p = (api.lsl_get_xml)(self.ptr);
            let s = cstr_to_string(p);
            if !p.is_null() {
                (api.lsl_destroy_string)(p);
            }
            s
        }
    }

    /// Channel metadata from `<desc><channels>`; empty if the source wrote none.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        let api = self.api();
        let mut out = Vec::new();
        // SAFETY: every xml_ptr here comes from liblsl for the live `self.ptr`; liblsl
        // returns an "empty" node (never NULL) when a child is missing, checked with
        // lsl_empty; names are NUL-terminated literals.
        unsafe {
            let desc = (api.lsl_get_desc)(self.ptr);
            let chans = (api.lsl_child)(desc, c"channels".as_ptr());
            if (api.lsl_empty)(chans) != 0 {
                return out;
            }
            let mut ch = (api.lsl_child)(chans, c"channel".as_ptr());
            while (api.lsl_empty)(ch) == 0 {
                if cstr_to_string((api.lsl_name)(ch)) == "channel" {
                    out.push(ChannelInfo {
                        label: cstr_to_string((api.lsl_child_value_n)(ch, c"label".as_ptr())),
                        kind: cstr_to_string((api.lsl_child_value_n)(ch, c"type".as_ptr())),
                        unit: cstr_to_string((api.lsl_child_value_n)(ch, c"unit".as_ptr())),
                    });
                }
                ch = (api.lsl_next_sibling)(ch);
            }
        }
        out
    }

    /// Channel labels; falls back to `ch000`, `ch001`, ... if the source wrote none.
    pub fn channel_labels(&self) -> Vec<String> {
        let chans = self.channels();
        if chans.len() == self.channel_count() {
            chans.into_iter().map(|c| c.label).collect()
        } else {
            (0..self.channel_count()).map(|i| format!("ch{i:03}")).collect()
        }
    }

    /// Writes `<desc><channels><channel><label/><type/><unit/>` (before publishing).
    pub fn set_channels(&mut self, channels: &[ChannelInfo]) -> Result<(), LslError> {
        let api = self.api();
        let strings: Vec<_> = channels
            .iter()
            .map(|c| {
                Ok((
                    to_cstring(&c.label, "channel label")?,
                    to_cstring(&c.kind, "channel type")?,
                    to_cstring(&c.unit, "channel unit")?,
                ))
            })
            .collect::<Result<_, LslError>>()?;
        // SAFETY: `self.ptr` is live and exclusively borrowed; every string is valid and
        // outlives its call (liblsl copies it).
        unsafe {
            let desc = (api.lsl_get_desc)(self.ptr);
            let chans: XmlPtr = (api.lsl_append_child)(desc, c"channels".as_ptr());
            for (label, kind, unit) in &strings {
                let ch = (api.lsl_append_child)(chans, c"channel".as_ptr());
                (api.lsl_append_child_value)(ch, c"label".as_ptr(), label.as_ptr());
                (api.lsl_append_child_value)(ch, c"type".as_ptr(), kind.as_ptr());
                (api.lsl_append_child_value)(ch, c"unit".as_ptr(), unit.as_ptr());
            }
        }
        Ok(())
    }

    /// Adds `<desc><key>value</key>` (e.g. `manufacturer`).
    pub fn set_desc_value(&mut self, key: &str, value: &str) -> Result<(), LslError> {
        let api = self.api();
        let (k, v) = (to_cstring(key, "desc key")?, to_cstring(value, "desc value")?);
        // SAFETY: `self.ptr` is live and exclusively borrowed; strings outlive the call.
        unsafe {
            let desc = (api.lsl_get_desc)(self.ptr);
            (api.lsl_append_child_value)(desc, k.as_ptr(), v.as_ptr());
        }
        Ok(())
    }

    /// A short human description: `name (type, N ch @ R Hz, format, source_id)`.
    pub fn summary(&self) -> String {
        format!(
            "'{}' type={} channels={} rate={} Hz format={} source_id='{}' host={}",
            self.name(),
            self.kind(),
            self.channel_count(),
            self.nominal_srate(),
            self.format().as_str(),
            self.source_id(),
            self.hostname()
        )
    }
}

impl Clone for StreamInfo {
    fn clone(&self) -> Self {
        // SAFETY: `self.ptr` is live; lsl_copy_streaminfo returns a new owned handle.
        let ptr = unsafe { (self.api().lsl_copy_streaminfo)(self.ptr) };
        Self { ptr }
    }
}

impl Drop for StreamInfo {
    fn drop(&mut self) {
        // SAFETY: we own `self.ptr` and it is destroyed exactly once, here.
        unsafe { (self.api().lsl_destroy_streaminfo)(self.ptr) }
    }
}

impl std::fmt::Debug for StreamInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

const MAX_RESOLVE: usize = 256;

fn collect(buf: &[StreamInfoPtr], n: i32) -> Vec<StreamInfo> {
    buf[..n.clamp(0, MAX_RESOLVE as i32) as usize].iter().filter_map(|&p| StreamInfo::from_raw(p)).collect()
}

/// Every stream visible within `wait_s` seconds.
pub fn resolve_all(wait_s: f64) -> Result<Vec<StreamInfo>, LslError> {
    let api = ffi::api()?;
    let mut buf = [std::ptr::null_mut(); MAX_RESOLVE];
    // SAFETY: `buf` holds MAX_RESOLVE writable slots; liblsl writes at most that many
    // owned handles and returns how many, which `collect` takes ownership of.
    let n = unsafe { (api.lsl_resolve_all)(buf.as_mut_ptr(), MAX_RESOLVE as u32, wait_s) };
    Ok(collect(&buf, n))
}

/// Streams whose property `prop` (name, type, source_id, ...) equals `value`.
pub fn resolve_byprop(prop: &str, value: &str, timeout_s: f64) -> Result<Vec<StreamInfo>, LslError> {
    let api = ffi::api()?;
    let (p, v) = (to_cstring(prop, "property")?, to_cstring(value, "value")?);
    let mut buf = [std::ptr::null_mut(); MAX_RESOLVE];
    // SAFETY: as in resolve_all; strings outlive the call.
    let n =
        unsafe { (api.lsl_resolve_byprop)(buf.as_mut_ptr(), MAX_RESOLVE as u32, p.as_ptr(), v.as_ptr(), 1, timeout_s) };
    let found = collect(&buf, n);
    if found.is_empty() {
        return Err(LslError::NotFound { query: format!("{prop}='{value}'"), timeout_s });
    }
    Ok(found)
}

/// Streams matching an XPath 1.0 predicate over their description, e.g.
/// `name='MEG' and type='MEG'`.
pub fn resolve_bypred(pred: &str, timeout_s: f64) -> Result<Vec<StreamInfo>, LslError> {
    let api = ffi::api()?;
    let p = to_cstring(pred, "predicate")?;
    let mut buf = [std::ptr::null_mut(); MAX_RESOLVE];
    // SAFETY: as in resolve_all; the predicate string outlives the call.
    let n = unsafe { (api.lsl_resolve_bypred)(buf.as_mut_ptr(), MAX_RESOLVE as u32, p.as_ptr(), 1, timeout_s) };
    let found = collect(&buf, n);
    if found.is_empty() {
        return Err(LslError::NotFound { query: pred.to_string(), timeout_s });
    }
    Ok(found)
}
