//! Never behind the stream: with an encoder slower than the hop (the paper-size brain
//! module, ~26 ms a window on one core here, at a one-sample hop of 8.3 ms), live
//! decoding skips the continuous windows it cannot get to (counted as `behind`) and its
//! latency stays near one encoder run, where decoding every window falls further behind
//! the stream each second. Both run side by side on the same simulated CTF 272 stream.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use meg_decoder::server::proto;

fn serve(name: &str, keep_up: bool) -> (common::Reaper, String) {
    let grpc = format!("127.0.0.1:{}", common::free_port());
    let child = common::bin()
        .current_dir(common::repo())
        .args(["serve", "--model", "models/paper", "--stream-name", name, "--no-markers", "--threads", "1"])
        .args(["--hop", "0.0084", "--listen", &grpc, "--set", "preprocessing.settle_s=0.5"])
        .args(["--set", &format!("pipeline.keep_up={keep_up}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_port(&grpc);
    (common::Reaper(child), grpc)
}

fn status(rt: &tokio::runtime::Runtime, grpc: &str) -> proto::PipelineStatus {
    rt.block_on(async {
        let mut c = proto::decoder_client::DecoderClient::connect(format!("http://{grpc}")).await.unwrap();
        c.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner().pipeline.unwrap()
    })
}

#[test]
fn a_model_slower_than_the_hop_decodes_the_newest_window_and_stays_near_one_encoder_run() {
    common::init_lsl();
    let name = common::unique("realtime");
    let _sim = common::Reaper(common::spawn(&[
        "simulate",
        "--layout",
        "ctf272",
        "--rate",
        "1200",
        "--name",
        &name,
        "--source-id",
        &name,
    ]));
    let (_keeping_up, fast) = serve(&name, true);
    let (_decoding_all, slow) = serve(&name, false);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The scaler fits on the first 10 s; then both decode for 20 s.
    let t = Instant::now();
    while status(&rt, &fast).decoded == 0 || status(&rt, &slow).decoded == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no decodings within 60 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(20));
    let (kept, all) = (status(&rt, &fast), status(&rt, &slow));
    eprintln!("keep_up: {kept:?}\ndecode all: {all:?}");
    let behind = |p: &proto::PipelineStatus| p.skipped_by_reason.get("behind").copied().unwrap_or(0);
    assert!(behind(&kept) > 0, "nothing skipped as behind: {kept:?}");
    assert_eq!(behind(&all), 0, "keep_up = false skipped windows: {all:?}");
    assert!(
        all.encoder_p50_ms > 8.4,
        "the encoder ({:.1} ms) keeps up with the hop here: this test needs one slower than 8.4 ms",
        all.encoder_p50_ms
    );
    // Keeping up: window end -> decoded stays within an encoder run or two plus the
    // preprocessing's look-ahead; decoding everything is seconds behind after 20 s.
    assert!(
        kept.latency_p99_ms < 3.0 * kept.encoder_p99_ms + 150.0,
        "latency p99 {:.0} ms with an encoder p99 of {:.0} ms",
        kept.latency_p99_ms,
        kept.encoder_p99_ms
    );
    assert!(all.latency_p50_ms > 1000.0, "decoding every window is not behind: p50 {:.0} ms", all.latency_p50_ms);
    assert!(kept.latency_p50_ms * 5.0 < all.latency_p50_ms);
}
