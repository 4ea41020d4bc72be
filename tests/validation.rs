//! Every setting is checked where it enters, with an error that names the key and the
//! range, before anything starts: `check-config` and `serve` say the same.

mod common;

/// `check-config --set KEY=VALUE` with the bundled model; returns (success, stderr).
fn check(set: &str) -> (bool, String) {
    let out = common::bin()
        .current_dir(common::repo())
        .args(["check-config", "--model", "models/demo", "--set", set])
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn bad_values_are_refused_with_the_key_named() {
    let cases = [
        ("pipeline.buffer_s=nan", "pipeline.buffer_s"),
        ("pipeline.buffer_s=inf", "pipeline.buffer_s"),
        ("pipeline.buffer_s=1e300", "pipeline.buffer_s"),
        ("pipeline.hop_s=0", "pipeline.hop_s"),
        ("pipeline.hop_s=-1", "pipeline.hop_s"),
        ("pipeline.max_batch=100000000000000", "pipeline.max_batch"),
        ("pipeline.max_batch=0", "pipeline.max_batch"),
        ("pipeline.top_k=100000", "pipeline.top_k"),
        ("stream.ring_seconds=inf", "stream.ring_seconds"),
        ("stream.ring_seconds=-5", "stream.ring_seconds"),
        ("stream.resolve_timeout_s=nan", "stream.resolve_timeout_s"),
        ("server.hub_capacity=1000000000000", "server.hub_capacity"),
        ("server.hub_capacity=0", "server.hub_capacity"),
        ("preprocessing.notch_hz=[nan]", "preprocessing.notch_hz"),
        ("preprocessing.notch_hz=[-50.0]", "preprocessing.notch_hz"),
        ("preprocessing.settle_s=inf", "preprocessing.settle_s"),
        ("preprocessing.settle_s=-1", "preprocessing.settle_s"),
        ("events.pair_window_s=nan", "events.pair_window_s"),
        ("events.min_interval_s=1e9", "events.min_interval_s"),
        ("events.source=trigger", "events.trigger_channel"),
        ("events.source=photodiode", "events.photodiode_channel"),
        ("events.source=sometimes", "events"),
        ("stream.channel_matching=fuzzy", "channel_matching"),
        ("model.intra_threads=0", "model.intra_threads"),
        ("pipeline.max_lag_s=nan", "pipeline.max_lag_s"),
        ("pipeline.max_lag_s=0", "pipeline.max_lag_s"),
        ("pipeline.max_lag_s=1e300", "pipeline.max_lag_s"),
        ("http.listen=localhost", "http.listen"),
        ("http.max_connections=0", "http.max_connections"),
        ("http.max_connections=1000000000000", "http.max_connections"),
        ("http.header_timeout_s=nan", "http.header_timeout_s"),
        ("http.header_timeout_s=0", "http.header_timeout_s"),
        ("http.header_timeout_s=-1", "http.header_timeout_s"),
    ];
    for (set, key) in cases {
        let (ok, err) = check(set);
        assert!(!ok, "{set} was accepted");
        assert!(err.contains(key), "{set}: error does not name {key}: {err}");
        assert!(!err.contains("panicked"), "{set}: {err}");
        assert!(err.len() < 600, "{set}: error too long: {err}");
    }
    // top_k 0 is valid: decodings without retrieval.
    assert!(check("pipeline.top_k=0").0);
    assert!(check("events.trigger_channel=STI 014").0);
    assert!(check("http.listen=127.0.0.1:8080").0);
    // metrics.listen (the older key) and http.listen on different addresses: one server.
    let out = common::bin()
        .current_dir(common::repo())
        .args(["check-config", "--model", "models/demo", "--http-listen", "127.0.0.1:8080"])
        .args(["--metrics-listen", "127.0.0.1:9464"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("metrics.listen") && err.contains("http.listen"), "{err}");
}
