//! [`Hub`]: fans each decoding out to every subscriber without ever blocking the
//! pipeline.
//!
//! Decodings go into one bounded broadcast ring (tokio `broadcast`): publishing is a
//! non-blocking write from the pipeline thread. Each subscriber reads at its own pace;
//! one that falls more than the ring's capacity behind loses the oldest decodings and is
//! told how many (`missed`) with its next message; GetStatus and the metrics count the
//! losses of a subscriber that stopped reading while it is stalled. The ring carries
//! [`Published`] decodings, encoded for the wire once (see `wire`). Generated images
//! travel separately (latest-wins `watch`), so a slow generator never delays embeddings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use super::wire::Published;
use crate::pipeline::{Decoding, GeneratedImage};

/// Per-subscriber counters.
#[derive(Debug)]
pub struct SubscriberStats {
    pub id: u64,
    pub peer: String,
    pub since: Instant,
    pub sent: AtomicU64,
    pub missed: AtomicU64,
    /// Hub decodings this subscriber has taken from its receiver (sent, filtered out or
    /// counted missed), counted from the hub's total when it subscribed.
    pub consumed: AtomicU64,
}

pub struct Hub {
    decodings: broadcast::Sender<Arc<Published>>,
    /// Turns true when the service shuts down: every subscriber stream ends.
    closing: watch::Sender<bool>,
    images: watch::Sender<Option<GeneratedImage>>,
    subscribers: Mutex<BTreeMap<u64, Arc<SubscriberStats>>>,
    next_id: AtomicU64,
    pub published: AtomicU64,
    /// Decodings lost by slow subscribers, all subscribers together (as they noticed).
    pub missed_total: AtomicU64,
    /// How far a receiver may fall behind (the broadcast ring's real size).
    ring: u64,
}

/// A subscriber's handle: its receivers and its entry in the hub (removed on drop, so a
/// client that disconnects frees its place at once).
pub struct Subscription {
    pub decodings: broadcast::Receiver<Arc<Published>>,
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
        let capacity = capacity.max(1);
        let (decodings, _) = broadcast::channel(capacity);
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
            // tokio's broadcast ring holds the next power of two.
            ring: capacity.next_power_of_two() as u64,
        })
    }

    /// Publishes a decoding (never blocks; fine with no subscribers). Its wire encoding
    /// is made later, once, by the first subscriber that sends it.
    pub fn publish(&self, d: Arc<Decoding>) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.decodings.send(Arc::new(Published::new(d)));
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
            consumed: AtomicU64::new(self.published.load(Ordering::Acquire)),
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

    /// Decodings published that `s` has not taken yet (a subscriber whose client stopped
    /// reading stops taking them).
    pub fn behind(&self, s: &SubscriberStats) -> u64 {
        self.published.load(Ordering::Acquire).saturating_sub(s.consumed.load(Ordering::Acquire))
    }

    /// What `s` has lost so far: counted, plus what has already left its ring unread
    /// (counted when it reads again), so a stalled subscriber's losses show at once.
    pub fn missed_by(&self, s: &SubscriberStats) -> u64 {
        s.missed.load(Ordering::Relaxed) + self.behind(s).saturating_sub(self.ring)
    }

    /// Decodings lost by slow subscribers, all together, including those stalled now.
    pub fn missed_now(&self) -> u64 {
        let stalled: u64 = self.subscribers().iter().map(|s| self.behind(s).saturating_sub(self.ring)).sum();
        self.missed_total.load(Ordering::Relaxed) + stalled
    }

    pub fn subscribers(&self) -> Vec<Arc<SubscriberStats>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::DecodeMode;

    fn decoding(sequence: u64) -> Arc<Decoding> {
        Arc::new(Decoding {
            sequence,
            mode: DecodeMode::Continuous,
            marker: None,
            onset: 0.0,
            on_screen_at: None,
            window_start: 0.0,
            window_end: 0.0,
            decoded_at: 0.0,
            latency_s: 0.0,
            encoder_s: 0.0,
            embedding: Vec::new(),
            top_k: Vec::new(),
            repaired: false,
            model: Arc::from("test"),
            stage: 0,
            stages: 0,
        })
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_reading_shows_its_losses_before_it_reads_again() {
        let hub = Hub::new(6); // a ring of 8
        hub.publish(decoding(0));
        let mut sub = hub.subscribe("test".into());
        for i in 1..=20 {
            hub.publish(decoding(i));
        }
        assert_eq!(hub.behind(&sub.stats), 20);
        assert_eq!(hub.missed_by(&sub.stats), 12, "20 unread, the ring keeps 8");
        assert_eq!(hub.missed_now(), 12);
        // When it reads again, the receiver reports exactly those as lagged.
        match sub.decodings.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => {
                assert_eq!(n, 12);
                sub.stats.consumed.fetch_add(n, Ordering::Relaxed);
                sub.stats.missed.fetch_add(n, Ordering::Relaxed);
                hub.missed_total.fetch_add(n, Ordering::Relaxed);
            }
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(hub.missed_by(&sub.stats), 12, "counted once, not twice");
        assert_eq!(hub.missed_now(), 12);
        assert_eq!(hub.behind(&sub.stats), 8);
    }
}
