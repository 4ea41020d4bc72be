//! Decodings on the wire, encoded once for every subscriber.
//!
//! A protobuf message is a sequence of fields, and concatenated encodings of the same
//! message type decode as one message (repeated fields append). So each decoding the hub
//! publishes ([`Published`]) is encoded once, by the first subscriber that sends it, into
//! parts every subscriber shares ([`WireParts`]): the fields all subscribers get alike,
//! the embedding, and each top-k hit. What a subscriber sends ([`SubscriberDecoding`]) is
//! those shared parts, as its request picks them (embedding or not, the first `top_k`
//! hits), followed by the few fields of its own: `missed`, `age_ms`, and the generated
//! image (encoded as PNG once per size, see `GeneratedImage::png_at`). Per subscriber, a
//! decoding costs a filter and a copy of bytes, not an encode.
//!
//! The Subscribe method's codec ([`SubscribeCodec`], wired in by build.rs) writes those
//! bytes; requests are decoded by prost as for every other method.

use std::sync::{Arc, OnceLock};

use prost::bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;

use super::proto;
use crate::pipeline::{DecodeMode, Decoding};

/// A decoding as the hub publishes it: the decoding, and its wire encoding once made.
#[derive(Debug)]
pub struct Published {
    pub decoding: Arc<Decoding>,
    wire: OnceLock<WireParts>,
}

/// The encoded fields every subscriber shares.
#[derive(Debug)]
pub struct WireParts {
    /// Every field but `embedding`, `top_k` and the per-subscriber ones.
    common: Bytes,
    /// The `embedding` field (packed floats).
    embedding: Bytes,
    /// One encoded `top_k` entry per hit, best first.
    hits: Vec<Bytes>,
}

impl Published {
    pub fn new(decoding: Arc<Decoding>) -> Self {
        Self { decoding, wire: OnceLock::new() }
    }

    /// The shared encoding (made by the first caller).
    pub fn wire(&self) -> &WireParts {
        self.wire.get_or_init(|| WireParts::encode(&self.decoding))
    }
}

impl WireParts {
    fn encode(d: &Decoding) -> Self {
        let common = proto::Decoding {
            sequence: d.sequence,
            mode: match d.mode {
                DecodeMode::Continuous => proto::Mode::Continuous,
                DecodeMode::EventLocked => proto::Mode::EventLocked,
            } as i32,
            marker: d.marker.as_ref().map(|m| m.text.clone()).unwrap_or_default(),
            marker_time: d.marker.as_ref().map_or(0.0, |m| m.timestamp),
            onset: d.onset,
            on_screen_at: d.on_screen_at.unwrap_or(0.0),
            window_start: d.window_start,
            window_end: d.window_end,
            decoded_at: d.decoded_at,
            latency_ms: d.latency_s * 1e3,
            repaired: d.repaired,
            encoder_ms: d.encoder_s * 1e3,
            model: d.model.to_string(),
            stage: d.stage,
            stages: d.stages,
            ..Default::default()
        };
        let embedding = proto::Decoding { embedding: d.embedding.clone(), ..Default::default() };
        let hits = d
            .top_k
            .iter()
            .map(|h| {
                let one = proto::Hit { image_id: h.image_id.clone(), score: h.score };
                proto::Decoding { top_k: vec![one], ..Default::default() }.encode_to_vec().into()
            })
            .collect();
        Self { common: common.encode_to_vec().into(), embedding: embedding.encode_to_vec().into(), hits }
    }
}

/// One decoding as one subscriber receives it.
#[derive(Debug, Clone)]
pub struct SubscriberDecoding {
    pub published: Arc<Published>,
    pub include_embedding: bool,
    /// How many hits to send (at most the decoding's).
    pub top_k: usize,
    /// Decodings this subscriber lost since its previous message.
    pub missed: u64,
    /// Seconds from the window's end to sending (ms).
    pub age_ms: f64,
    /// A generated image new to this subscriber: (PNG, image sequence).
    pub image: Option<(Arc<Vec<u8>>, u64)>,
}

impl SubscriberDecoding {
    /// Writes the message: the shared parts, then this subscriber's own fields.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let wire = self.published.wire();
        buf.put_slice(&wire.common);
        if self.include_embedding {
            buf.put_slice(&wire.embedding);
        }
        for hit in wire.hits.iter().take(self.top_k) {
            buf.put_slice(hit);
        }
        if let Some((png, sequence)) = &self.image {
            prost::encoding::bytes::encode(11, png.as_ref(), buf);
            prost::encoding::uint64::encode(12, sequence, buf);
        }
        if self.missed != 0 {
            prost::encoding::uint64::encode(13, &self.missed, buf);
        }
        if self.age_ms != 0.0 {
            prost::encoding::double::encode(16, &self.age_ms, buf);
        }
    }

    /// The message as a prost value (tests, and any in-process reader).
    pub fn to_proto(&self) -> proto::Decoding {
        let mut v = Vec::new();
        self.encode(&mut v);
        proto::Decoding::decode(v.as_slice()).expect("our own encoding decodes")
    }
}

/// Subscribe's codec: requests decoded by prost, decodings written from shared bytes.
#[derive(Debug, Default, Clone)]
pub struct SubscribeCodec;

impl Codec for SubscribeCodec {
    type Encode = SubscriberDecoding;
    type Decode = proto::SubscribeRequest;
    type Encoder = SubscribeEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::SubscribeRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        SubscribeEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug, Default, Clone)]
pub struct SubscribeEncoder;

impl Encoder for SubscribeEncoder {
    type Item = SubscriberDecoding;
    type Error = Status;

    fn encode(&mut self, item: SubscriberDecoding, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hit;
    use crate::pipeline::MarkerRef;

    fn decoding() -> Decoding {
        Decoding {
            sequence: 42,
            mode: DecodeMode::EventLocked,
            marker: Some(MarkerRef { timestamp: 12.5, text: "image 4127".into() }),
            onset: 12.5,
            on_screen_at: None,
            window_start: 12.0,
            window_end: 13.5,
            decoded_at: 13.56,
            latency_s: 0.06,
            embedding: (0..32).map(|i| i as f32 * 0.25 - 3.0).collect(),
            top_k: (0..5).map(|i| Hit { image_id: format!("img{i}"), index: i, score: 0.9 - i as f32 * 0.1 }).collect(),
            repaired: true,
            encoder_s: 0.0025,
            model: "demo@abc".into(),
            stage: 2,
            stages: 3,
        }
    }

    /// What the service sent before the shared encoding: one prost message per subscriber.
    fn expected(
        d: &Decoding,
        emb: bool,
        k: usize,
        missed: u64,
        age_ms: f64,
        img: Option<(&[u8], u64)>,
    ) -> proto::Decoding {
        proto::Decoding {
            sequence: d.sequence,
            mode: proto::Mode::EventLocked as i32,
            marker: "image 4127".into(),
            marker_time: 12.5,
            onset: 12.5,
            on_screen_at: 0.0,
            stage: 2,
            stages: 3,
            window_start: d.window_start,
            window_end: d.window_end,
            decoded_at: d.decoded_at,
            latency_ms: d.latency_s * 1e3,
            embedding: if emb { d.embedding.clone() } else { Vec::new() },
            top_k: d.top_k[..k].iter().map(|h| proto::Hit { image_id: h.image_id.clone(), score: h.score }).collect(),
            image_png: img.map(|(p, _)| p.to_vec()).unwrap_or_default(),
            image_sequence: img.map_or(0, |(_, s)| s),
            missed,
            repaired: true,
            encoder_ms: d.encoder_s * 1e3,
            age_ms,
            model: "demo@abc".into(),
        }
    }

    #[test]
    fn every_subscriber_gets_the_message_a_full_encode_would_give() {
        let d = Arc::new(decoding());
        let published = Arc::new(Published::new(d.clone()));
        let png = Arc::new(vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3]);
        for emb in [false, true] {
            for k in [0, 1, 3, 5, 9] {
                for (missed, age) in [(0, 0.0), (7, 12.25)] {
                    for img in [None, Some((png.clone(), 77u64))] {
                        let s = SubscriberDecoding {
                            published: published.clone(),
                            include_embedding: emb,
                            top_k: k,
                            missed,
                            age_ms: age,
                            image: img.clone(),
                        };
                        let want =
                            expected(&d, emb, k.min(5), missed, age, img.as_ref().map(|(p, s)| (p.as_slice(), *s)));
                        assert_eq!(
                            s.to_proto(),
                            want,
                            "embedding {emb}, k {k}, missed {missed}, image {}",
                            img.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_shared_parts_are_encoded_once() {
        let published = Arc::new(Published::new(Arc::new(decoding())));
        let a = published.wire() as *const WireParts;
        let b = published.wire() as *const WireParts;
        assert_eq!(a, b);
        assert_eq!(published.wire().hits.len(), 5);
    }
}
