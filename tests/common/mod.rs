//! Shared set-up for the integration tests: loopback-only LSL with a SessionID unique to
//! this test process, and helpers to run the real `meg-decoder` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

static SESSION: OnceLock<(String, PathBuf)> = OnceLock::new();

/// Loads the loopback LSL config (from deploy/lsl_api.loopback.cfg) with a SessionID
/// unique to this process, and writes it to a file child processes get as LSLAPICFG.
pub fn init_lsl() -> &'static (String, PathBuf) {
    SESSION.get_or_init(|| {
        let base = std::fs::read_to_string(repo().join("deploy/lsl_api.loopback.cfg")).expect("loopback cfg");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let session = format!("meg-decoder-test-{}-{nanos}", std::process::id());
        let text = base.replace("SessionID = meg-decoder-test", &format!("SessionID = {session}"));
        assert!(text.contains(&session), "loopback cfg has no SessionID line to replace");
        let path = std::env::temp_dir().join(format!("{session}.cfg"));
        std::fs::write(&path, &text).unwrap();
        meg_decoder::lsl::set_config_content(&text).expect("liblsl loads (run `make native`)");
        (session, path)
    })
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A unique stream name for one test.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// The meg-decoder binary with this process's LSL config.
pub fn bin() -> Command {
    let (_, cfg) = init_lsl();
    let mut c = Command::new(env!("CARGO_BIN_EXE_meg-decoder"));
    c.env("LSLAPICFG", cfg).env("MEG_DECODER_LOG", "warn");
    c
}

/// Starts the binary with `args`, output discarded (or inherited when MEG_TEST_VERBOSE).
pub fn spawn(args: &[&str]) -> Child {
    let verbose = std::env::var_os("MEG_TEST_VERBOSE").is_some();
    let out = || {
        if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    bin().args(args).stdout(out()).stderr(out()).spawn().expect("spawn meg-decoder")
}

/// Kills a child on drop, so a failing test leaves nothing behind.
pub struct Reaper(pub Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python with the field's tools (pyxdf, MNE, MNE-LSL, onnx, scipy): `make venv`'s.
pub fn python() -> PathBuf {
    std::env::var_os("MEG_DECODER_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (up to 30 s) until `addr` accepts TCP connections.
pub fn wait_port(addr: &str) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "server at {addr} did not come up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every `.xdf` file below `dir`.
pub fn xdf_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xdf") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// SIGTERM through `kill`, then wait up to 15 s for the process to end (a clean stop
/// closes streams and writes the recording's footers); panics if it does not.
pub fn sigterm_and_wait(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the process did not stop on SIGTERM");
}

/// A self-signed certificate for "localhost", written to `dir` as cert.pem and key.pem:
/// (the certificate's PEM, for clients to trust; cert path; key path).
pub fn self_signed_localhost(dir: &std::path::Path) -> (String, PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert.cert.pem(), cert_path, key_path)
}

/// A gRPC channel over TLS to localhost:`port`, trusting `ca_pem`.
pub async fn tls_channel(ca_pem: &str, port: u16) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{port}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}
