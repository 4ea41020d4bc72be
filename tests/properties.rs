//! Property tests (proptest, a bounded number of cases so they fit `make test`): the XDF
//! reader never panics on damaged or hostile files and reads back what the writer wrote,
//! and no configuration value or subscription request panics the service's checks.

use proptest::prelude::*;

use meg_decoder::config::Config;
use meg_decoder::record::parse_xdf;
use meg_decoder::record::xdf::{info_xml, XdfWriter};
use meg_decoder::server::proto;

/// A small valid XDF file: header, a 3-channel float32 stream, samples.
fn valid_file(values: &[f32], stamps: &[f64]) -> Vec<u8> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut w = XdfWriter::create(tmp.reopen().unwrap(), "").unwrap();
    w.stream_header(1, &info_xml("s", "MEG", 3, 100.0, "float32", "src", "")).unwrap();
    w.samples_f32(1, stamps, values, 3).unwrap();
    drop(w);
    std::fs::read(tmp.path()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = b"XDF:".to_vec();
        bytes.extend(tail);
        let _ = parse_xdf(&bytes, "fuzz");
    }

    #[test]
    fn damaged_valid_files_never_panic_and_intact_ones_read_back(
        n in 1usize..60,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let values: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.5).collect();
        let stamps: Vec<f64> = (0..n).map(|i| 10.0 + i as f64 / 100.0).collect();
        let bytes = valid_file(&values, &stamps);
        let f = parse_xdf(&bytes, "ok").unwrap();
        let s = f.by_type("MEG").unwrap();
        prop_assert_eq!(&s.values, &values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        prop_assert_eq!(&s.timestamps, &stamps);
        let mut bad = bytes.clone();
        for (at, v) in &flips {
            let i = 4 + at % (bad.len() - 4);
            bad[i] ^= v | 1;
        }
        bad.truncate(4 + cut % (bad.len() - 3));
        let _ = parse_xdf(&bad, "damaged");
    }

    #[test]
    fn any_numeric_setting_is_accepted_or_refused_by_name(
        key in prop::sample::select(vec![
            "pipeline.hop_s", "pipeline.buffer_s", "pipeline.max_batch", "pipeline.top_k",
            "stream.ring_seconds", "stream.resolve_timeout_s", "server.hub_capacity",
            "server.shutdown_timeout_s", "preprocessing.settle_s", "events.pair_window_s",
            "events.min_interval_s", "markers.resolve_timeout_s", "model.intra_threads",
        ]),
        value in prop_oneof![
            any::<f64>().prop_map(|v| format!("{v:e}")),
            any::<i64>().prop_map(|v| v.to_string()),
            Just("nan".to_string()), Just("inf".to_string()), Just("-inf".to_string()),
        ],
    ) {
        let mut base = Config::default();
        base.model.dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo");
        match base.with_overrides(&[format!("{key}={value}")]) {
            Err(e) => prop_assert!(e.to_string().contains(key.rsplit('.').next().unwrap())),
            Ok(c) => {
                if let Err(e) = c.validate("prop") {
                    let msg = e.to_string();
                    prop_assert!(msg.contains(key) || msg.contains("stream.ring_seconds"), "{}", msg);
                }
            }
        }
    }

    #[test]
    fn subscribe_requests_are_valid_or_invalid_argument(
        rate in prop_oneof![any::<f64>(), Just(f64::NAN), Just(1e-300), Just(0.0)],
        format in any::<i32>(),
        size in any::<u32>(),
    ) {
        let req = proto::SubscribeRequest { max_rate_hz: rate, image_format: format, image_size: size, ..Default::default() };
        if let Err(s) = meg_decoder::server::validate_subscribe(&req) {
            prop_assert_eq!(s.code(), tonic::Code::InvalidArgument);
            prop_assert!(s.message().len() < 300);
        }
    }
}
