//! deploy/ stays valid: the example configuration parses and validates (paths swapped for
//! this checkout), the k8s manifests are well-formed YAML whose embedded config parses,
//! the Dockerfile runs the Makefile's steps, and check-config reports errors by line/key.

mod common;

use std::process::Command;

use meg_decoder::config::Config;

#[test]
fn example_config_parses_and_validates() {
    let text = std::fs::read_to_string(common::repo().join("deploy/meg-decoder.example.toml")).unwrap();
    let cfg = Config::from_toml(&text, "deploy/meg-decoder.example.toml").unwrap();
    assert_eq!(cfg, Config { model: cfg.model.clone(), ..Config::default() }, "the example shows the defaults");
    let local = text.replace("/opt/meg-decoder/models/demo", common::repo().join("models/demo").to_str().unwrap());
    Config::from_toml(&local, "x").unwrap().validate("x").unwrap();
}

#[test]
fn k8s_manifests_parse_and_embed_a_valid_config() {
    let python = std::env::var("MEG_DECODER_PYTHON")
        .unwrap_or_else(|_| common::repo().join(".venv/bin/python").display().to_string());
    let script = r#"
import sys, yaml, json
docs = list(yaml.safe_load_all(open(sys.argv[1])))
print(json.dumps({"kinds": [d["kind"] for d in docs], "toml": docs[0]["data"]["meg-decoder.toml"],
                  "host_network": docs[1]["spec"]["template"]["spec"]["hostNetwork"]}))
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(common::repo().join("deploy/k8s/meg-decoder.yaml"))
        .output()
        .expect("python with PyYAML");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kinds"], serde_json::json!(["ConfigMap", "Deployment", "Service"]));
    assert_eq!(v["host_network"], true);
    let cfg = Config::from_toml(v["toml"].as_str().unwrap(), "configmap").unwrap();
    assert_eq!(cfg.server.listen.port(), 50051);
    assert_eq!(cfg.http_server(), Some(("0.0.0.0:9464".to_string(), false)), "metrics on, viewer off in production");
}

#[test]
fn dockerfile_uses_the_makefile_steps() {
    let docker = std::fs::read_to_string(common::repo().join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains("./tools/fetch-native.sh") && docker.contains("cargo build --release --locked"));
    let make = std::fs::read_to_string(common::repo().join("Makefile")).unwrap();
    assert!(make.contains("./tools/fetch-native.sh") && make.contains("cargo build --release --locked"));
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("lab.toml");
    std::fs::write(&bad, "[stream]\nname = \"MEG\"\n[pipeline]\nhop = 0.1\n").unwrap();
    let out = common::bin().args(["check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("lab.toml") && err.contains("line 4") && err.contains("hop"), "{err}");
    std::fs::write(&bad, "[model]\ndir = \"/nonexistent\"\n").unwrap();
    let out = common::bin().args(["check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.dir"));
    // Flags override the file, and the effective configuration is printed.
    std::fs::write(&bad, format!("[model]\ndir = \"{}\"\n", common::repo().join("models/demo").display())).unwrap();
    let out = common::bin()
        .args(["check-config", "--config", bad.to_str().unwrap(), "--hop", "0.05", "--listen", "127.0.0.1:6000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("hop_s = 0.05") && text.contains("127.0.0.1:6000"), "{text}");
}
