//! [`StoppableThread`]: a named OS thread with a stop flag, stopped and joined on drop.
//! Every long-lived thread of the service (acquisition, markers, pipeline, generator) is
//! one. A thread that panics, or returns without being asked to, leaves its reason in
//! its [`Failure`] slot: the service watches those slots and turns unhealthy (and exits
//! non-zero) instead of sitting there silently idle.
//!
//! For the reliability tests, `MEG_DECODER_FAULT=<thread name>:<seconds>` makes the named
//! thread panic that many seconds after it starts (at its next stop-flag check).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a thread's cause of death is kept (None while it is alive or stopped cleanly).
#[derive(Clone, Debug, Default)]
pub struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, why: String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(why);
        }
    }
}

/// An injected fault (reliability tests only): panic once `at` has passed.
#[derive(Clone, Debug, Default)]
pub struct Fault(Option<Instant>);

impl Fault {
    /// The fault `MEG_DECODER_FAULT` asks for on thread `name`, if any.
    pub fn for_thread(name: &str) -> Self {
        let at = std::env::var("MEG_DECODER_FAULT").ok().and_then(|v| {
            let (who, secs) = v.rsplit_once(':')?;
            let secs: f64 = secs.parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 1e6)?;
            (who == name).then(|| Instant::now() + Duration::from_secs_f64(secs))
        });
        Self(at)
    }

    /// Panics if the fault is due.
    #[inline]
    pub fn check(&self) {
        if let Some(at) = self.0 {
            if Instant::now() >= at {
                panic!("injected fault (MEG_DECODER_FAULT)");
            }
        }
    }
}

/// What the thread polls to know it should return.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>, Fault);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.1.check();
        self.0.load(Ordering::Relaxed)
    }
}

pub struct StoppableThread {
    flag: StopFlag,
    failure: Failure,
    handle: Option<JoinHandle<()>>,
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl StoppableThread {
    /// Starts `body` on a thread called `name`, handing it the stop flag.
    pub fn spawn(name: String, body: impl FnOnce(StopFlag) + Send + 'static) -> std::io::Result<Self> {
        let flag = StopFlag(Arc::default(), Fault::for_thread(&name));
        let failure = Failure::default();
        let (f, fail, n) = (flag.clone(), failure.clone(), name.clone());
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let stop = f.0.clone();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(f))) {
                Err(p) => fail.set(format!("thread '{n}' panicked: {}", panic_message(p.as_ref()))),
                Ok(()) if !stop.load(Ordering::Relaxed) => fail.set(format!("thread '{n}' stopped unexpectedly")),
                Ok(()) => {}
            }
            if let Some(why) = fail.get() {
                tracing::error!("{why}");
            }
        })?;
        Ok(Self { flag, failure, handle: Some(handle) })
    }

    /// Why the thread died, if it did.
    pub fn failure(&self) -> Failure {
        self.failure.clone()
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
