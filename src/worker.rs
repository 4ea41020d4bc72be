//! [`StoppableThread`]: a named OS thread with a stop flag, stopped and joined on drop.
//! Every long-lived thread of the service (acquisition, markers, pipeline, generator) is
//! one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What the thread polls to know it should return.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct StoppableThread {
    flag: StopFlag,
    handle: Option<JoinHandle<()>>,
}

impl StoppableThread {
    /// Starts `body` on a thread called `name`, handing it the stop flag.
    pub fn spawn(name: String, body: impl FnOnce(StopFlag) + Send + 'static) -> std::io::Result<Self> {
        let flag = StopFlag::default();
        let f = flag.clone();
        let handle = std::thread::Builder::new().name(name).spawn(move || body(f))?;
        Ok(Self { flag, handle: Some(handle) })
    }

    /// Sets the flag (the thread returns at its next check) without waiting.
    pub fn request_stop(&self) {
        self.flag.0.store(true, Ordering::Relaxed);
    }

    /// Sets the flag and waits for the thread to return.
    pub fn stop(&mut self) {
        self.request_stop();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.stop();
    }
}
