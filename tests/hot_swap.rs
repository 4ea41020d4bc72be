//! Model hot-swap on the real binary: `LoadModel` over gRPC (refusals for a caller without
//! the token, a path outside the model root, a corrupt model and a model whose channels
//! the stream lacks; the running model goes on), then a good model, then SIGHUP back to
//! the first: decodings never stop, sequence numbers have no hole, each decoding names
//! its model, and the recording (read by pyxdf) marks both switches.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, Reaper};
use meg_decoder::server::proto::{self, decoder_client::DecoderClient};
use tonic::{metadata::MetadataValue, Code, Request};

/// Copies of the demo model under `root`: a (as is), b (renamed, so another sha),
/// bad-channels (EEG labels), corrupt (not ONNX).
const MAKE_MODELS: &str = r#"
import sys, shutil, os, json, onnx
root, src = sys.argv[1], sys.argv[2]
def copy(name):
    d = os.path.join(root, name)
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("world", "*.log", "*.md", "training.json"))
    return d
def with_meta(dirname, **kv):
    d = copy(dirname)
    m = onnx.load(os.path.join(d, "encoder.onnx"))
    for p in m.metadata_props:
        if p.key in kv:
            p.value = kv[p.key]
    onnx.save(m, os.path.join(d, "encoder.onnx"))
copy("a")
with_meta("b", name="demo-brain-b")
m = onnx.load(os.path.join(src, "encoder.onnx"))
n = len(json.loads([p.value for p in m.metadata_props if p.key == "channel_names"][0]))
with_meta("bad-channels", name="wrong-channels", channel_names=json.dumps(["EEG%03d" % i for i in range(n)]))
d = copy("corrupt")
open(os.path.join(d, "encoder.onnx"), "wb").write(b"not an onnx file" * 100)
"#;

/// What pyxdf finds in the decodings stream: the switch events and each decoding's model.
const READ_SWITCHES: &str = r#"
import sys, json, glob, pyxdf
rows, headers = [], []
for path in sorted(glob.glob(sys.argv[1] + "/**/*.xdf", recursive=True)):
    streams, header = pyxdf.load_xdf(path)
    headers.append(json.loads(header["info"]["meg_decoder"][0])["model"]["name"])
    dec = [s for s in streams if s["info"]["type"][0] == "Decodings"][0]
    rows += [json.loads(x[0]) for x in dec["time_series"]]
events = [r for r in rows if "event" in r]
models = sorted({r["model"] for r in rows if "sequence" in r})
print(json.dumps({"events": events, "models": models, "header_models": headers}))
"#;

fn config(root: &std::path::Path, model: &str, name: &str, port: u16, rec: &std::path::Path) -> String {
    format!(
        "[stream]\nname = \"{name}\"\n[markers]\nname = \"{name}-m\"\n[model]\ndir = \"{}\"\n\
         [preprocessing]\nsettle_s = 1.0\n[server]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n\
         [recording]\ndir = \"{}\"\non_start = true\n",
        root.join(model).display(),
        root.join("token").display(),
        rec.display()
    )
}

type Seen = Arc<Mutex<Vec<(u64, String, Instant)>>>;

#[test]
fn load_model_and_sighup_switch_models_without_losing_a_decoding() {
    common::init_lsl();
    let root = tempfile::tempdir().unwrap();
    let rec = tempfile::tempdir().unwrap();
    let out = Command::new(common::python())
        .args(["-c", MAKE_MODELS, root.path().to_str().unwrap()])
        .arg(common::repo().join("models/demo-brain"))
        .output()
        .expect("python with onnx (make venv)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(root.path().join("token"), "swap-token\n").unwrap();
    let name = common::unique("swap");
    let port = free_port();
    let cfg_path = root.path().join("meg-decoder.toml");
    std::fs::write(&cfg_path, config(root.path(), "a", &name, port, rec.path())).unwrap();

    let _sim =
        Reaper(common::spawn(&["simulate", "--name", &name, "--source-id", &name, "--markers", &format!("{name}-m")]));
    let mut serve = Reaper(common::spawn(&["serve", "--config", cfg_path.to_str().unwrap()]));
    common::wait_port(&format!("127.0.0.1:{port}"));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seen: Seen = Arc::default();
    let (first, status) = rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let token: MetadataValue<_> = "Bearer swap-token".parse().unwrap();
        let authed = move |mut r: Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        };
        let mut client = DecoderClient::with_interceptor(channel.clone(), authed);
        let mut stream = client
            .subscribe(proto::SubscribeRequest { max_age_s: 60.0, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(d)) = stream.message().await {
                seen2.lock().unwrap().push((d.sequence, d.model, Instant::now()));
            }
        });
        let wait_for = |n: usize| {
            let seen = seen.clone();
            async move {
                let t = Instant::now();
                while seen.lock().unwrap().len() < n {
                    assert!(t.elapsed() < Duration::from_secs(30), "only {} decodings", seen.lock().unwrap().len());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        wait_for(40).await;

        let load = |m: &str| proto::LoadModelRequest { model: m.into() };
        // Without the token: refused before anything is loaded.
        let e = DecoderClient::new(channel.clone()).load_model(load("b")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let refusals = [
            ("/etc", Code::PermissionDenied, "inside the server's model root"),
            ("../../etc", Code::PermissionDenied, "without '..'"),
            ("no-such-model", Code::NotFound, "no model directory"),
            ("corrupt", Code::FailedPrecondition, "not a usable ONNX model"),
            ("bad-channels", Code::FailedPrecondition, "the stream lacks 306 of the model's 306 channels"),
        ];
        for (m, code, why) in refusals {
            let e = client.load_model(load(m)).await.unwrap_err();
            assert_eq!(e.code(), code, "{m}: {e:?}");
            assert!(e.message().contains(why), "{m}: {}", e.message());
            let root_path = root.path().canonicalize().unwrap().display().to_string();
            assert!(!e.message().contains(&root_path), "{m}: a server path in {}", e.message());
        }
        let before = client.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner().model.unwrap();
        assert!(before.id.starts_with("demo-brain-module-v2@") && before.switches == 0, "{before:?}");

        let r = client.load_model(load("b")).await.unwrap().into_inner();
        assert_eq!(r.previous, before.id);
        let now = r.model.unwrap();
        assert!(now.id.starts_with("demo-brain-b@") && now.name == "demo-brain-b" && now.switches == 1, "{now:?}");
        assert!(now.dir.ends_with("/b"), "{}", now.dir);
        // A recording started now names the running model in its header.
        client.stop_recording(proto::StopRecordingRequest {}).await.unwrap();
        let started =
            client.start_recording(proto::StartRecordingRequest { subject: "02".into(), ..Default::default() }).await;
        assert!(started.unwrap().into_inner().recording);
        let n = seen.lock().unwrap().len();
        wait_for(n + 40).await;

        // SIGHUP: the configuration file still names model a, which is not running now.
        let _ = Command::new("kill").arg("-HUP").arg(serve.0.id().to_string()).status();
        let t = Instant::now();
        let status = loop {
            let s = client.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
            if s.model.as_ref().unwrap().switches == 2 {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "SIGHUP did not switch: {:?}", s.model);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let n = seen.lock().unwrap().len();
        wait_for(n + 40).await;
        (r.first_sequence, status)
    });
    let m = status.model.unwrap();
    assert!(m.id.starts_with("demo-brain-module-v2@") && m.dir.ends_with("/a"), "{m:?}");

    // Decodings went on: no sequence number missing, none late, each model in its span.
    let seen = seen.lock().unwrap().clone();
    let seqs: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(seqs, (seqs[0]..seqs[0] + seqs.len() as u64).collect::<Vec<_>>(), "a decoding was lost");
    let gap = seen.windows(2).map(|w| w[1].2 - w[0].2).max().unwrap();
    assert!(gap < Duration::from_millis(500), "decodings stopped for {gap:?} around a switch");
    let models: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    let switch_at = seqs.iter().position(|&s| s == first).expect("the new model's first decoding was received");
    assert!(models[..switch_at].iter().all(|m| m.starts_with("demo-brain-module-v2@")));
    assert!(models[switch_at].starts_with("demo-brain-b@"));
    assert!(models.last().unwrap().starts_with("demo-brain-module-v2@"), "SIGHUP's model never decoded");
    assert_eq!(models.windows(2).filter(|w| w[0] != w[1]).count(), 2, "models switched exactly twice");

    // The recording marks both switches; its decodings name both models.
    let _ = Command::new("kill").arg("-TERM").arg(serve.0.id().to_string()).status();
    assert!(serve.0.wait().unwrap().success());
    let out =
        Command::new(common::python()).args(["-c", READ_SWITCHES, rec.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{v}");
    assert_eq!(events[0]["event"], "model_switch");
    assert!(events[0]["to"].as_str().unwrap().starts_with("demo-brain-b@"));
    assert_eq!(events[0]["first_sequence"].as_u64(), Some(first));
    assert!(events[1]["to"].as_str().unwrap().starts_with("demo-brain-module-v2@"));
    assert_eq!(v["models"].as_array().unwrap().len(), 2, "{v}");
    // sub-01's file started with model a, sub-02's (after LoadModel) with model b.
    assert_eq!(v["header_models"], serde_json::json!(["demo-brain-module-v2", "demo-brain-b"]), "{v}");
}
