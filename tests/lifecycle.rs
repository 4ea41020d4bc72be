//! No silent death: a panic in any long-lived thread (acquisition, markers, pipeline,
//! generator, recorder) makes the service unhealthy at once (standard health service
//! NOT_SERVING, the cause in GetStatus) and, by default, stops it with a non-zero exit so
//! systemd or Kubernetes restart it. Faults are injected with MEG_DECODER_FAULT.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use meg_decoder::server::proto;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `serve` with every thread running (markers, generator, recording), `thread` set to
/// panic 2 s after it starts.
fn serve(name: &str, thread: &str, dir: &std::path::Path, degraded: bool) -> (common::Reaper, u16) {
    let port = free_port();
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
