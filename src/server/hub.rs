//! [`Hub`]: fans each decoding out to every subscriber without ever blocking the
//! pipeline.
//!
//! Decodings go into one bounded broadcast ring (tokio `broadcast`): publishing is a
//! non-blocking write from the pipeline thread. Each subscriber reads at its own pace;
//! one that falls more than the ring's capacity behind loses the oldest decodings and is
//! told how many (`missed`) with its next message. Generated images travel separately
//! (latest-wins `watch`), so a slow generator never delays embeddings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use crate::pipeline::{Decoding, GeneratedImage};

/// Per-subscriber counters.
#[derive(Debug)]
pub struct SubscriberStats {
    pub id: u64,
    pub peer: String,
    pub since: Instant,
    pub sent: AtomicU64,
    pub missed: AtomicU64,
}

pub struct Hub {
    decodings: broadcast::Sender<Arc<Decoding>>,
    /// Turns true when the service shuts down: every subscriber stream ends.
    closing: watch::Sender<bool>,
    images: watch::Sender<Option<GeneratedImage>>,
    subscribers: Mutex<BTreeMap<u64, Arc<SubscriberStats>>>,
    next_id: AtomicU64,
    pub published: AtomicU64,
    /// Decodings lost by slow subscribers, all subscribers together.
    pub missed_total: AtomicU64,
}

/// A subscriber's handle: its receivers and its entry in the hub (removed on drop, so a
/// client that disconnects frees its place at once).
pub struct Subscription {
    pub decodings: broadcast::Receiver<Arc<Decoding>>,
    /// True once the service is shutting down.
    pub closing: watch::Receiver<bool>,
    pub images: watch::Receiver<Option<GeneratedImage>>,
    pub stats: Arc<SubscriberStats>,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.stats.id);
    }
}

impl Hub {
    /// `capacity`: how many decodings a subscriber may fall behind before it misses some.
    pub fn new(capacity: usize) -> Arc<Self> {
        let (decodings, _) = broadcast::channel(capacity.max(1));
        let (images, _) = watch::channel(None);
        let (closing, _) = watch::channel(false);
        Arc::new(Self {
            decodings,
            closing,
            images,
            subscribers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            published: AtomicU64::new(0),
            missed_total: AtomicU64::new(0),
        })
    }

    /// Publishes a decoding (never blocks; fine with no subscribers).
    pub fn publish(&self, d: Arc<Decoding>) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.decodings.send(d);
    }

    /// Publishes a newly generated image (replaces the previous one).
    pub fn publish_image(&self, img: GeneratedImage) {
        self.images.send_replace(Some(img));
    }

    pub fn subscribe(self: &Arc<Self>, peer: String) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(SubscriberStats {
            id,
            peer,
            since: Instant::now(),
            sent: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        });
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stats.clone());
        let mut images = self.images.subscribe();
        images.mark_unchanged();
        Subscription {
            decodings: self.decodings.subscribe(),
            closing: self.closing.subscribe(),
            images,
            stats,
            hub: self.clone(),
        }
    }

    /// Ends every subscriber stream (shutdown); returns how many were connected.
    pub fn close(&self) -> usize {
        self.closing.send_replace(true);
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn subscribers(&self) -> Vec<Arc<SubscriberStats>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}
