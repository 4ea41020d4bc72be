//! Live LSL ingest over loopback: every sample arrives in order, a killed source is
//! reconnected with its gap reported, and each kind of bad input gives its error.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meg_decoder::ingest::{AcquisitionConfig, IngestError, IngestEvent, MegAcquisition, RingBuffer, StreamQuery};
use meg_decoder::lsl::{self, ChannelFormat, LslError, MarkerOutlet, Outlet, StreamInfo};
use meg_decoder::simulate::{self, LayoutKind, SimulatorConfig};

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Reads the whole ring and returns (counter channel, timestamps).
fn read_all(ring: &RingBuffer) -> (Vec<f32>, Vec<f64>) {
    let (start, end) = (ring.oldest(), ring.head());
    let n = (end - start) as usize;
    let mut data = vec![0.0; n * ring.channels()];
    let mut ts = vec![0.0; n];
    ring.read(start, &mut data, &mut ts).unwrap();
    (data.chunks_exact(ring.channels()).map(|r| r[0]).collect(), ts)
}

fn every_sample_arrives(layout: LayoutKind, rate: f64, format: ChannelFormat, chunk: usize) {
    common::init_lsl();
    let name = common::unique("meg");
    let seconds = 3.0;
    let cfg = SimulatorConfig {
        name: name.clone(),
        source_id: name.clone(),
        layout,
        srate: rate,
        chunk,
        format,
        counter_channel: true,
        duration_s: Some(seconds),
        wait_for_consumer_s: 10.0,
        ..Default::default()
    };
    let sim = std::thread::spawn(move || simulate::run(&cfg, &AtomicBool::new(false)).unwrap());
    let acq = MegAcquisition::start(AcquisitionConfig::new(StreamQuery::by_name(&name))).unwrap();
    let report = sim.join().unwrap();
    let expected = report.samples;
    assert_eq!(expected, (seconds * rate) as u64);
    assert!(
        wait_until(Duration::from_secs(5), || acq.ring.head() >= expected),
        "received {} of {expected}",
        acq.ring.head()
    );
    let (counter, ts) = read_all(&acq.ring);
    assert_eq!(counter.len() as u64, expected);
    for (i, c) in counter.iter().enumerate() {
        assert_eq!(*c, i as f32, "sample {i} out of order or lost");
    }
    assert!(ts.windows(2).all(|w| w[1] > w[0]), "timestamps not monotonic");
    let period = ts.windows(2).map(|w| w[1] - w[0]).sum::<f64>() / (ts.len() - 1) as f64;
    assert!((period * rate - 1.0).abs() < 1e-6, "mean period {period} vs rate {rate}");
    let s = acq.stats.snapshot();
    assert_eq!((s.samples, s.gaps, s.non_finite_samples), (expected, 0, 0));
    assert_eq!(acq.description.channel_count, if layout == LayoutKind::Ctf272 { 272 } else { 306 });
}

#[test]
fn neuromag_306ch_1000hz_every_sample_in_order() {
    every_sample_arrives(LayoutKind::Neuromag306, 1000.0, ChannelFormat::Float32, 10);
}

#[test]
fn ctf_272ch_1200hz_every_sample_in_order() {
    every_sample_arrives(LayoutKind::Ctf272, 1200.0, ChannelFormat::Float32, 24);
}

#[test]
fn int16_and_double_streams_arrive_as_f32() {
    every_sample_arrives(LayoutKind::Ctf272, 600.614, ChannelFormat::Int16, 7);
    every_sample_arrives(LayoutKind::Neuromag306, 1000.0, ChannelFormat::Double64, 1);
}

#[test]
fn killed_source_is_reconnected_and_gap_reported() {
    common::init_lsl();
    let name = common::unique("meg-restart");
    let args = ["simulate", "--name", &name, "--source-id", &name, "--counter", "--rate", "1000", "--layout", "ctf272"];
    let child = common::Reaper(common::spawn(&args));
    let mut cfg = AcquisitionConfig::new(StreamQuery::by_name(&name));
    cfg.resolve_timeout_s = 10.0;
    cfg.stall_timeout_s = 0.5;
    let acq = MegAcquisition::start(cfg).unwrap();
    assert!(wait_until(Duration::from_secs(5), || acq.ring.head() > 1000));
    drop(child); // SIGKILL: the outlet dies wherever it is, mid-chunk or not
    let killed = Instant::now();
    let before = acq.ring.head();
    std::thread::sleep(Duration::from_millis(1500));
    let _child2 = common::Reaper(common::spawn(&args));
    let restarted = killed.elapsed().as_secs_f64();
    assert!(
        wait_until(Duration::from_secs(15), || acq.stats.snapshot().reconnects >= 1),
        "no reconnect: {:?}",
        acq.stats.snapshot()
    );
    assert!(wait_until(Duration::from_secs(5), || acq.ring.head() > before + 500));
    let events: Vec<IngestEvent> = acq.events.try_iter().collect();
    assert!(events.iter().any(|e| matches!(e, IngestEvent::SourceLost { .. })), "{events:?}");
    let gap = events.iter().find_map(|e| match e {
        IngestEvent::Gap { missing_samples, seconds, .. } => Some((*missing_samples, *seconds)),
        _ => None,
    });
    let (missing, seconds) = gap.unwrap_or_else(|| panic!("no gap event in {events:?}"));
    // The gap spans the downtime, plus start-up of the new process (< 3 s here).
    assert!(seconds > 1.0 && seconds < restarted + 3.0, "gap {seconds:.3} s for {restarted:.3} s down");
    assert!((missing as f64 - seconds * 1000.0).abs() < 2.0);
    // Every sample before the loss arrived, in order; the ring marks the discontinuity.
    let (counter, _) = read_all(&acq.ring);
    let first = counter[0];
    let until_gap = counter.iter().enumerate().take_while(|(i, c)| **c == first + *i as f32).count();
    assert!(until_gap as u64 >= before.min(counter.len() as u64) - 1, "lost samples before the loss");
    let seg_before = acq.ring.meta(acq.ring.oldest()).unwrap().segment;
    let seg_after = acq.ring.meta(acq.ring.head() - 1).unwrap().segment;
    assert!(seg_after > seg_before, "no new segment after the gap");
    assert_eq!(acq.stats.snapshot().gaps, 1);
}

#[test]
fn missing_stream_times_out_naming_the_query() {
    common::init_lsl();
    let mut cfg = AcquisitionConfig::new(StreamQuery::by_name("no-such-stream"));
    cfg.resolve_timeout_s = 0.5;
    let err = MegAcquisition::start(cfg).err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, IngestError::Lsl(LslError::NotFound { .. })));
    assert!(msg.contains("name='no-such-stream'") && msg.contains("inspect-stream"), "{msg}");
}

#[test]
fn wrong_channel_count_and_names_are_refused() {
    common::init_lsl();
    let name = common::unique("meg-small");
    let mut info = StreamInfo::new(&name, "MEG", 3, 100.0, ChannelFormat::Float32, &name).unwrap();
    info.set_channels(&["A", "B", "C"].map(|l| lsl::ChannelInfo { label: l.into(), ..Default::default() })).unwrap();
    let _outlet = Outlet::create(&info, 1).unwrap();
    let mut cfg = AcquisitionConfig::new(StreamQuery::by_name(&name));
    cfg.expected_channels = Some(306);
    let msg = MegAcquisition::start(cfg.clone()).err().unwrap().to_string();
    assert!(msg.contains("has 3 channels but 306 were configured"), "{msg}");
    cfg.expected_channels = None;
    cfg.expected_labels = Some(vec!["A".into(), "B".into(), "MEG0111".into()]);
    let msg = MegAcquisition::start(cfg).err().unwrap().to_string();
    assert!(msg.contains("MEG0111"), "{msg}");
}

#[test]
fn marker_stream_where_meg_expected_is_refused() {
    common::init_lsl();
    let name = common::unique("markers");
    let _m = MarkerOutlet::create(&name, &name).unwrap();
    let err = MegAcquisition::start(AcquisitionConfig::new(StreamQuery::by_name(&name))).err().unwrap();
    assert!(matches!(err, IngestError::Lsl(LslError::WrongFormat { .. })), "{err}");
    assert!(err.to_string().contains("numeric"));
}

#[test]
fn nan_samples_are_counted_and_flagged_not_dropped() {
    common::init_lsl();
    let name = common::unique("meg-nan");
    let info = StreamInfo::new(&name, "MEG", 2, 100.0, ChannelFormat::Float32, &name).unwrap();
    let mut outlet = Outlet::create(&info, 10).unwrap();
    let acq = MegAcquisition::start(AcquisitionConfig::new(StreamQuery::by_name(&name))).unwrap();
    assert!(outlet.wait_for_consumers(5.0));
    let t0 = lsl::local_clock().unwrap();
    let data = [1.0, 2.0, f32::NAN, 3.0, 4.0, f32::INFINITY, 5.0, 6.0];
    let ts: Vec<f64> = (0..4).map(|i| t0 + i as f64 / 100.0).collect();
    outlet.push_chunk(&data, &ts).unwrap();
    assert!(wait_until(Duration::from_secs(5), || acq.ring.head() == 4));
    assert_eq!(acq.stats.snapshot().non_finite_samples, 2);
    let flags: Vec<u8> = (0..4).map(|i| acq.ring.meta(i).unwrap().flags).collect();
    assert_eq!(flags, vec![0, 1, 1, 0]);
    assert!(acq.events.try_iter().any(|e| matches!(e, IngestEvent::NonFinite { samples: 2 })));
}

#[test]
fn rate_far_from_nominal_is_warned_with_measured_rate() {
    common::init_lsl();
    let name = common::unique("meg-slow");
    let info = StreamInfo::new(&name, "MEG", 1, 1000.0, ChannelFormat::Float32, &name).unwrap();
    let mut outlet = Outlet::create(&info, 50).unwrap();
    let acq = MegAcquisition::start(AcquisitionConfig::new(StreamQuery::by_name(&name))).unwrap();
    assert!(outlet.wait_for_consumers(5.0));
    // Declares 1000 Hz, really sends 500 samples/s (stamped as if 1000 Hz: no gaps).
    let t0 = lsl::local_clock().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for k in 0..230 {
        let ts: Vec<f64> = (0..25).map(|i| t0 + (k * 25 + i) as f64 / 1000.0).collect();
        outlet.push_chunk(&[0.5; 25], &ts).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stop);
    let warned = acq.events.try_iter().find_map(|e| match e {
        IngestEvent::RateMismatch { measured, nominal } => Some((measured, nominal)),
        _ => None,
    });
    let (measured, nominal) = warned.expect("rate warning");
    assert_eq!(nominal, 1000.0);
    assert!((measured - 500.0).abs() < 100.0, "measured {measured}");
}
