//! No silent death: a panic in any long-lived thread (acquisition, markers, pipeline,
//! generator, recorder) makes the service unhealthy at once (standard health service
//! NOT_SERVING, the cause in GetStatus) and, by default, stops it with a non-zero exit so
//! systemd or Kubernetes restart it. Faults are injected with MEG_DECODER_FAULT.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use meg_decoder::server::proto;

/// `serve` with every thread running (markers, generator, recording), `thread` set to
/// panic 2 s after it starts.
fn serve(name: &str, thread: &str, dir: &std::path::Path, degraded: bool) -> (common::Reaper, u16) {
    let port = common::free_port();
    let mut cmd = common::bin();
    cmd.current_dir(common::repo())
        .args(["serve", "--model", "models/demo", "--stream-name", name, "--markers-name", &format!("{name}-m")])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--record-dir", dir.to_str().unwrap(), "--record"])
        .args(["--set", "preprocessing.settle_s=0.5"])
        .env("MEG_DECODER_FAULT", format!("{thread}:2"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if degraded {
        cmd.args(["--set", "server.on_thread_failure=degraded"]);
    }
    (common::Reaper(cmd.spawn().unwrap()), port)
}

#[test]
fn a_dead_thread_makes_the_service_unhealthy_and_exit_non_zero() {
    common::init_lsl();
    let name = common::unique("fault");
    let _sim = common::Reaper(common::spawn(&[
        "simulate",
        "--name",
        &name,
        "--source-id",
        &name,
        "--model",
        "models/demo",
        "--markers",
        &format!("{name}-m"),
        "--isi",
        "0.5",
    ]));
    std::thread::sleep(Duration::from_millis(500));
    let threads =
        [format!("lsl-{name}"), format!("lsl-{name}-m"), "pipeline".into(), "generator".into(), "recorder".into()];
    let tmp = tempfile::tempdir().unwrap();

    // Default: exit non-zero, naming the thread.
    let mut runs: Vec<(String, common::Reaper)> = threads
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dir = tmp.path().join(format!("exit{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            (t.clone(), serve(&name, t, &dir, false).0)
        })
        .collect();
    for (thread, run) in &mut runs {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = run.0.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{thread}: still running after its thread died");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(run.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{thread}: {status}\n{err}");
        assert!(err.contains(&format!("thread '{thread}' panicked")), "{thread}: {err}");
    }

    // Degraded: keeps running, NOT_SERVING, the cause in GetStatus.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let runs: Vec<(String, common::Reaper, u16)> = threads
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dir = tmp.path().join(format!("degraded{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (r, port) = serve(&name, t, &dir, true);
            (t.clone(), r, port)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    for (thread, mut run, port) in runs {
        assert!(run.0.try_wait().unwrap().is_none(), "{thread}: degraded mode must keep serving");
        rt.block_on(async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            let mut status = None;
            for _ in 0..40 {
                let r = health
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .unwrap()
                    .into_inner();
                status = Some(r.status);
                if r.status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert_eq!(
                status,
                Some(tonic_health::pb::health_check_response::ServingStatus::NotServing as i32),
                "{thread}: health"
            );
            let mut c = proto::decoder_client::DecoderClient::new(ch);
            let st = c.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
            assert!(st.error.contains(&format!("thread '{thread}' panicked")), "{thread}: status error '{}'", st.error);
        });
        drop(run);
    }
}

/// A marker source written with MNE-LSL (no source_id, so liblsl cannot recover it by
/// itself), pushing `prefix_<n>` every 0.5 s for `seconds`.
const MARKER_SOURCE: &str = r#"
import sys, time
from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock
name, prefix, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
out = StreamOutlet(StreamInfo(name, "Markers", 1, 0.0, "string", ""))
print("ready", flush=True)
t0 = local_clock()
n = 0
while local_clock() - t0 < seconds:
    out.push_sample([f"{prefix}_{n}"], local_clock())
    n += 1
    time.sleep(0.5)
"#;

#[test]
fn a_marker_source_that_restarts_is_found_again_and_its_outage_shows() {
    common::init_lsl();
    let (_, lsl_cfg) = common::init_lsl();
    let name = common::unique("mk");
    let markers = format!("{name}-m");
    let _sim = common::Reaper(common::spawn(&["simulate", "--name", &name, "--source-id", &name]));
    let python = common::python();
    let start_markers = |prefix: &str, seconds: &str| {
        let mut c = common::Reaper(
            std::process::Command::new(&python)
                .args(["-c", MARKER_SOURCE, &markers, prefix, seconds])
                .env("LSLAPICFG", lsl_cfg)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(c.0.stdout.take().unwrap()), &mut line).unwrap();
        c
    };
    let mut first = start_markers("a", "6");
    let port = common::free_port();
    let _serve = common::Reaper(
        common::bin()
            .current_dir(common::repo())
            .args(["serve", "--model", "models/demo", "--stream-name", &name, "--markers-name", &markers])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--set", "preprocessing.settle_s=0.5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_port(&format!("127.0.0.1:{port}"));
    let client = common::bin()
        .args(["client", "--addr", &format!("http://127.0.0.1:{port}"), "--json", "--event-locked-only"])
        .args(["--duration", "18"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = first.0.wait();
    // The marker source is gone (its outlet destroyed): the service must say so.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut c =
                proto::decoder_client::DecoderClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();
            c.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner()
        })
    };
    let mut lost_seen = false;
    for _ in 0..40 {
        let st = status(&rt);
        let m = st.streams.iter().find(|s| s.name == markers).expect("marker stream in status");
        if !m.connected {
            lost_seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(lost_seen, "the marker outage never showed in the status");
    let _second = start_markers("b", "8");
    std::thread::sleep(Duration::from_secs(3));
    let st = status(&rt);
    let m = st.streams.iter().find(|s| s.name == markers).unwrap();
    assert!(m.connected && m.reconnects >= 1, "marker stream not found again: {m:?}");
    let out = client.wait_with_output().unwrap();
    let labels: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|d| d["marker"].as_str().map(String::from))
        .collect();
    assert!(labels.iter().any(|l| l.starts_with("a_")), "{labels:?}");
    assert!(labels.iter().filter(|l| l.starts_with("b_")).count() >= 5, "decoding did not resume: {labels:?}");
}

/// Hostile or confused peers on the service's ports: random bytes and HTTP/1 on the gRPC
/// port, a client that sends half the HTTP/2 preface and hangs, 100 idle connections on
/// the metrics port (more than its cap). The service keeps decoding, a real gRPC client
/// still gets its status, and a scrape still succeeds once the idle ones time out.
#[test]
fn garbage_http1_and_idle_floods_on_the_ports_leave_the_service_serving() {
    use std::io::{Read, Write};
    common::init_lsl();
    let name = common::unique("hostile");
    let _sim = common::Reaper(common::spawn(&["simulate", "--name", &name, "--source-id", &name]));
    let (port, mport) = (common::free_port(), common::free_port());
    let (grpc, metrics) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{mport}"));
    let _serve = common::Reaper(
        common::bin()
            .current_dir(common::repo())
            .args(["serve", "--model", "models/demo", "--stream-name", &name, "--no-markers"])
            .args(["--listen", &grpc, "--metrics-listen", &metrics, "--set", "preprocessing.settle_s=0.5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_port(&grpc);
    common::wait_port(&metrics);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let decoded = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut c = proto::decoder_client::DecoderClient::connect(format!("http://{grpc}")).await.unwrap();
            let st = c.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
            st.pipeline.unwrap().decoded
        })
    };
    let t = Instant::now();
    while decoded(&rt) == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no decoding 30 s after start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = decoded(&rt);

    // Random bytes, HTTP/1, a hanging half preface on the gRPC port.
    let mut junk = vec![0u8; 65536];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in junk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut s = std::net::TcpStream::connect(&grpc).unwrap();
    let _ = s.write_all(&junk);
    let mut s = std::net::TcpStream::connect(&grpc).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf);
    let mut half = std::net::TcpStream::connect(&grpc).unwrap();
    let _ = half.write_all(b"PRI * HTTP/2.0\r\n");
    // More idle connections to the metrics port than its cap.
    let idle: Vec<_> = (0..100).filter_map(|_| std::net::TcpStream::connect(&metrics).ok()).collect();

    std::thread::sleep(Duration::from_millis(500));
    assert!(decoded(&rt) > before, "gRPC status unanswered or decoding stopped under the junk");
    let t = Instant::now();
    let scraped = loop {
        let mut s = std::net::TcpStream::connect(&metrics).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 200 OK") {
            break true;
        }
        if t.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(scraped, "no metrics scrape succeeded within 20 s of 100 idle connections");
    let after = decoded(&rt);
    std::thread::sleep(Duration::from_secs(1));
    assert!(decoded(&rt) > after, "decoding stopped");
    drop((idle, half));
}
