//! The gRPC service with a real client over TCP on loopback: ordering, fan-out, slow
//! subscribers, rate limits, images, bad requests, auth, TLS, health and reflection.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use meg_decoder::model::{Gallery, Hit, RgbImage};
use meg_decoder::pipeline::{DecodeMode, Decoding, GeneratedImage, MarkerRef, PipelineStats};
use meg_decoder::server::proto::{self, decoder_client::DecoderClient};
use meg_decoder::server::{serve, DecoderState, Hub, ModelInfo, ServeOptions, TlsFiles};
use tonic::transport::Channel;
use tonic::Code;

struct Server {
    addr: std::net::SocketAddr,
    state: Arc<DecoderState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(capacity: usize, token: Option<&str>, tls: Option<TlsFiles>) -> Server {
    let gallery = Gallery::load(&common::repo().join("models/demo/gallery")).unwrap();
    let state = Arc::new(DecoderState {
        hub: Hub::new(capacity),
        streams: Vec::new(),
        rings: Vec::new(),
        model: Arc::new(std::sync::RwLock::new(ModelInfo { name: "test".into(), ..Default::default() })),
        pipeline: Arc::new(PipelineStats::default()),
        gallery: Arc::new(std::sync::RwLock::new(Some(Arc::new(gallery)))),
        images_generated: Arc::new(AtomicU64::new(0)),
        recorder: None,
        failure: Default::default(),
        switcher: None,
        signal: None,
        buffer_s: 10.0,
        allow_load_model: false,
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions { listen: "127.0.0.1:0".parse().unwrap(), token: token.map(String::from), tls };
    let (addr, fut) = serve(state.clone(), opts, async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    tokio::spawn(fut);
    Server { addr, state, _stop: tx }
}

async fn client(addr: std::net::SocketAddr) -> DecoderClient<Channel> {
    DecoderClient::connect(format!("http://{addr}")).await.unwrap()
}

fn decoding(seq: u64, mode: DecodeMode, dim: usize) -> Arc<Decoding> {
    Arc::new(Decoding {
        sequence: seq,
        mode,
        marker: (mode == DecodeMode::EventLocked)
            .then(|| MarkerRef { text: format!("img_{seq:04}"), timestamp: seq as f64 }),
        onset: seq as f64,
        on_screen_at: None,
        // Fresh: the window ended just now (subscribers drop decodings older than 2 s).
        window_start: meg_decoder::lsl::local_clock().unwrap() - 1.5,
        window_end: meg_decoder::lsl::local_clock().unwrap(),
        decoded_at: meg_decoder::lsl::local_clock().unwrap() + 0.05,
        latency_s: 0.05,
        encoder_s: 0.0001,
        embedding: vec![seq as f32; dim],
        top_k: vec![Hit { image_id: "img_0001".into(), index: 1, score: 0.5 }],
        repaired: false,
        model: std::sync::Arc::from("test@000000000000"),
        stage: 0,
        stages: 0,
    })
}

fn all() -> proto::SubscribeRequest {
    proto::SubscribeRequest { include_embedding: true, ..Default::default() }
}

async fn wait_subscribers(s: &Server, n: usize) {
    for _ in 0..200 {
        if s.state.hub.subscribers().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} subscribers, have {}", s.state.hub.subscribers().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_receive_the_same_decodings_in_order() {
    let s = start(1024, None, None).await;
    let mut a = client(s.addr).await.subscribe(all()).await.unwrap().into_inner();
    let mut b = client(s.addr).await.subscribe(all()).await.unwrap().into_inner();
    wait_subscribers(&s, 2).await;
    for i in 0..50 {
        s.state.hub.publish(decoding(i, if i % 5 == 0 { DecodeMode::EventLocked } else { DecodeMode::Continuous }, 32));
    }
    let (mut ga, mut gb) = (Vec::new(), Vec::new());
    // The same decodings; only the age at send time is each subscriber's own.
    let unaged = |mut m: proto::Decoding| {
        assert!(m.age_ms >= 0.0 && m.age_ms < 2000.0, "age {}", m.age_ms);
        m.age_ms = 0.0;
        m
    };
    for _ in 0..50 {
        ga.push(unaged(a.message().await.unwrap().unwrap()));
        gb.push(unaged(b.message().await.unwrap().unwrap()));
    }
    assert_eq!(ga, gb);
    assert!(ga.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
    assert_eq!(ga[0].sequence, 0);
    assert_eq!(ga[10].marker, "img_0010");
    assert_eq!(ga[10].mode, proto::Mode::EventLocked as i32);
    assert_eq!(ga[3].embedding, vec![3.0; 32]);
    assert!((ga[3].latency_ms - 50.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_misses_while_the_other_keeps_up() {
    let s = start(64, None, None).await;
    let mut steady = client(s.addr).await.subscribe(all()).await.unwrap().into_inner();
    let mut stalled = client(s.addr).await.subscribe(all()).await.unwrap().into_inner();
    wait_subscribers(&s, 2).await;
    let total = 3000u64;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while (got.len() as u64) < total {
            got.push(steady.message().await.unwrap().unwrap());
        }
        got
    });
    let hub = s.state.hub.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..total {
            hub.publish(decoding(i, DecodeMode::Continuous, 512));
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
    .await
    .unwrap();
    let steady_got = reader.await.unwrap();
    assert_eq!(steady_got.len() as u64, total);
    assert!(steady_got.iter().all(|d| d.missed == 0), "the steady subscriber missed decodings");
    assert!(steady_got.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
    // The stalled one now reads what is left: what it got plus what it missed is all.
    let (mut n, mut missed, mut last) = (0u64, 0u64, None);
    while let Ok(Some(d)) =
        tokio::time::timeout(Duration::from_millis(500), stalled.message()).await.map(|r| r.unwrap())
    {
        n += 1;
        missed += d.missed;
        if let Some(l) = last {
            assert!(d.sequence > l);
        }
        last = Some(d.sequence);
    }
    assert!(missed > 0, "the stalled subscriber was not told it missed decodings");
    assert_eq!(n + missed, total, "received {n} + missed {missed} != published {total}");
    let status = client(s.addr).await.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
    assert!(status.subscribers.iter().any(|x| x.missed == missed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_filters_and_images_scale() {
    let s = start(1024, None, None).await;
    let req = proto::SubscribeRequest {
        max_rate_hz: 10.0,
        include_images: true,
        image_size: 64,
        top_k: 1,
        ..Default::default()
    };
    let mut st = client(s.addr).await.subscribe(req).await.unwrap().into_inner();
    wait_subscribers(&s, 1).await;
    let rgb = RgbImage { width: 32, height: 32, rgb: vec![200; 32 * 32 * 3] };
    s.state.hub.publish_image(GeneratedImage {
        sequence: 7,
        png: Arc::new(rgb.to_png().unwrap()),
        image: Arc::new(rgb),
        generated_at: 0.0,
        sized: Default::default(),
    });
    let hub = s.state.hub.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..200 {
            hub.publish(decoding(i, if i == 100 { DecodeMode::EventLocked } else { DecodeMode::Continuous }, 4));
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), st.message()).await.map(|r| r.unwrap()) {
        got.push(d);
    }
    let cont = got.iter().filter(|d| d.mode == proto::Mode::Continuous as i32).count();
    assert!((5..=16).contains(&cont), "{cont} continuous decodings in ~1 s at max 10 Hz");
    assert!(got.iter().any(|d| d.sequence == 100), "event-locked decodings are never rate-limited");
    let with_image: Vec<_> = got.iter().filter(|d| !d.image_png.is_empty()).collect();
    assert_eq!(with_image.len(), 1, "the image is sent once");
    assert_eq!(with_image[0].image_sequence, 7);
    let dec = png::Decoder::new(std::io::Cursor::new(with_image[0].image_png.clone())).read_info().unwrap();
    assert_eq!((dec.info().width, dec.info().height), (64, 64));
    assert!(got.iter().all(|d| d.embedding.is_empty() && d.top_k.len() <= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_and_disconnects_free_at_once() {
    let s = start(16, None, None).await;
    let mut c = client(s.addr).await;
    for (req, words) in [
        (proto::SubscribeRequest { max_rate_hz: -1.0, ..Default::default() }, "max_rate_hz"),
        (proto::SubscribeRequest { max_rate_hz: 1e-300, ..Default::default() }, "max_rate_hz"),
        (proto::SubscribeRequest { max_rate_hz: f64::NAN, ..Default::default() }, "max_rate_hz"),
        (proto::SubscribeRequest { image_format: 7, ..Default::default() }, "image_format"),
        (proto::SubscribeRequest { image_size: 5000, ..Default::default() }, "image_size"),
    ] {
        let e = c.subscribe(req).await.err().unwrap();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(words), "{}", e.message());
    }
    let e = c
        .start_recording(proto::StartRecordingRequest { subject: "01".into(), ..Default::default() })
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("--record-dir"));
    let e = c.get_gallery_image(proto::GetGalleryImageRequest { image_id: "nope".into() }).await.err().unwrap();
    assert_eq!(e.code(), Code::NotFound);
    // A huge id is not echoed back (the answer stays small and NOT_FOUND).
    let e = c.get_gallery_image(proto::GetGalleryImageRequest { image_id: "x".repeat(20_000) }).await.err().unwrap();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().len() < 200, "{} bytes", e.message().len());
    let img =
        c.get_gallery_image(proto::GetGalleryImageRequest { image_id: "img_0003".into() }).await.unwrap().into_inner();
    assert_eq!(&img.png[1..4], b"PNG");
    // A client that goes away leaves the hub without any decoding being published.
    let st = c.subscribe(all()).await.unwrap().into_inner();
    wait_subscribers(&s, 1).await;
    drop(st);
    drop(c);
    wait_subscribers(&s, 0).await;
    // A port in use is a clear start-up error.
    let opts = ServeOptions { listen: s.addr, token: None, tls: None };
    let err = serve(s.state.clone(), opts, async {}).await.err().unwrap().to_string();
    assert!(err.contains("already in use") && err.contains("--listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_health_and_reflection() {
    let s = start(16, Some("s3cret"), None).await;
    let mut c = client(s.addr).await;
    let e = c.get_status(proto::GetStatusRequest {}).await.err().unwrap();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("Bearer"));
    let mut bad = tonic::Request::new(proto::GetStatusRequest {});
    bad.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(c.get_status(bad).await.err().unwrap().code(), Code::Unauthenticated);
    let mut good = tonic::Request::new(proto::GetStatusRequest {});
    good.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
    assert_eq!(c.get_status(good).await.unwrap().into_inner().model.unwrap().name, "test");
    // Health and reflection need no token (probes).
    let ch = Channel::from_shared(format!("http://{}", s.addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest { service: "megdecoder.v1.Decoder".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("no service list") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"megdecoder.v1.Decoder".to_string()) && names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::self_signed_localhost(dir.path());
    let s = start(16, None, Some(TlsFiles { cert, key })).await;
    let ch = common::tls_channel(&ca, s.addr.port()).await;
    let status = DecoderClient::new(ch).get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.model.unwrap().name, "test");
    // Plain text against the TLS port fails.
    let plain = DecoderClient::connect(format!("http://{}", s.addr)).await;
    let failed = match plain {
        Err(_) => true,
        Ok(mut c) => c.get_status(proto::GetStatusRequest {}).await.is_err(),
    };
    assert!(failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_decodings_are_dropped_and_counted_and_latest_only_skips_ahead() {
    common::init_lsl();
    let s = start(64, None, None).await;
    let now = meg_decoder::lsl::local_clock().unwrap();
    let aged = |seq: u64, age: f64| {
        let mut d = (*decoding(seq, DecodeMode::Continuous, 4)).clone();
        d.window_end = now - age;
        Arc::new(d)
    };
    // Bound 0.5 s: a decoding 3 s old is never sent, and the next one says it was missed.
    let req = proto::SubscribeRequest { max_age_s: 0.5, ..all() };
    let mut st = client(s.addr).await.subscribe(req).await.unwrap().into_inner();
    wait_subscribers(&s, 1).await;
    s.state.hub.publish(aged(0, 3.0));
    s.state.hub.publish(aged(1, 0.0));
    let m = st.message().await.unwrap().unwrap();
    assert_eq!((m.sequence, m.missed), (1, 1));
    assert!(m.age_ms >= 0.0 && m.age_ms < 500.0, "age {} ms", m.age_ms);
    drop(st);
    wait_subscribers(&s, 0).await;
    // latest_only: a subscriber that fell 20 behind gets the newest, told it missed 19.
    let req = proto::SubscribeRequest { latest_only: true, ..all() };
    let mut st = client(s.addr).await.subscribe(req).await.unwrap().into_inner();
    wait_subscribers(&s, 1).await;
    let first = s.state.hub.subscribers()[0].clone();
    for i in 10..30 {
        s.state.hub.publish(aged(i, 0.0));
    }
    let mut got = Vec::new();
    while got.last().is_none_or(|m: &proto::Decoding| m.sequence < 29) {
        got.push(st.message().await.unwrap().unwrap());
    }
    let missed: u64 = got.iter().map(|m| m.missed).sum();
    assert_eq!(got.len() as u64 + missed, 20, "received + missed = published");
    assert!(got.len() < 20, "latest_only skipped nothing: {}", got.len());
    assert_eq!(first.missed.load(std::sync::atomic::Ordering::Relaxed), missed);
    // A bound out of range is refused.
    let e = client(s.addr).await.subscribe(proto::SubscribeRequest { max_age_s: -1.0, ..all() }).await.err().unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
}
