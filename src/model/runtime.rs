//! ONNX Runtime: finding the shared library (from the `onnxruntime` wheel, see
//! `native/versions.env`) and the one process-wide environment.

use std::path::PathBuf;
use std::sync::OnceLock;

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return vec![PathBuf::from(p)];
    }
    let name = "libonnxruntime.so.1.31.1";
    let mut out = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("native/lib").join(name)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join("lib").join(name));
            out.push(dir.join("../lib").join(name));
        }
    }
    out
}

/// The ONNX Runtime environment, initialised on first use.
pub fn environment() -> Result<&'static ort::environment::Environment, String> {
    ENV.get_or_init(|| {
        let tried = candidates();
        let path = tried.iter().find(|p| p.exists()).ok_or_else(|| {
            format!(
                "ONNX Runtime not found (tried {}). Fix: run `make native` (fetches it from the onnxruntime wheel on PyPI into native/lib) or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so",
                tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        })?;
        ort::init_from(path)
            .map_err(|e| format!("loading ONNX Runtime from {}: {e}", path.display()))?
            .with_name("meg-decoder")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("starting ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}
