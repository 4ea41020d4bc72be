//! The browser viewer, in a real browser: Debian's chromium (headless, driven through
//! chromedriver by tests/common/browser.py) loads the page from `serve --http-listen`,
//! which talks gRPC-Web to the service while `simulate` streams a session over LSL.
//! Also the HTTP server's own hygiene (HEAD, split requests, 404, idle connections, the
//! connection cap) and the read-only rule without a token, over raw TCP.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use meg_decoder::server::proto;
use serde_json::Value;

/// The browser remote control (tests/common/browser.py) over its stdin/stdout.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Self {
        let mut child = Command::new(common::python())
            .arg(common::repo().join("tests/common/browser.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python for the browser driver (run `make venv`)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut b = Self { child, stdin, stdout };
        let ready = b.answer();
        assert_eq!(ready["value"], "ready", "chromium did not start: {ready}");
        b
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("browser driver said {line:?}: {e}"))
    }

    fn cmd(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap();
        let a = self.answer();
        assert_eq!(a["ok"], true, "browser: {line}: {a}");
        a["value"].clone()
    }

    fn eval(&mut self, js: &str) -> Value {
        self.cmd(&format!("eval {js}"))
    }

    fn text(&mut self, id: &str) -> String {
        self.eval(&format!("document.getElementById('{id}').innerText")).as_str().unwrap_or_default().to_string()
    }

    /// Waits until the JavaScript condition holds; panics with `what` and the page's state.
    fn wait_for(&mut self, js: &str, limit: Duration, what: &str) {
        let t = Instant::now();
        while self.eval(js) != Value::Bool(true) {
            if t.elapsed() > limit {
                let state = self.eval("JSON.stringify(window.viewer)");
                let conn = self.text("conn");
                panic!("{what} within {limit:?} (page state {state}, connection '{conn}')");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The page's counters plus what it shows.
    fn state(&mut self) -> Value {
        let mut v: Value = serde_json::from_str(self.eval("JSON.stringify(window.viewer)").as_str().unwrap()).unwrap();
        v["generated_src"] = self.eval("document.getElementById('generated').src");
        v["hitrate"] = Value::String(self.text("hitrate"));
        v
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` for the demo world with the viewer on `http`.
fn serve(name: &str, grpc: &str, http: &str, extra: &[&str]) -> common::Reaper {
    let markers = format!("{name}-m");
    let mut args = vec![
        "serve",
        "--stream-name",
        name,
        "--markers-name",
        &markers,
        "--listen",
        grpc,
        "--http-listen",
        http,
        "--set",
        "preprocessing.settle_s=0.5",
    ];
    if !extra.contains(&"--model") {
        args.extend_from_slice(&["--model", "models/demo-brain"]);
    }
    args.extend_from_slice(extra);
    let child = common::bin()
        .current_dir(common::repo())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_port(grpc);
    common::wait_port(http);
    common::Reaper(child)
}

fn simulate(name: &str) -> common::Reaper {
    let markers = format!("{name}-m");
    common::Reaper(common::spawn(&[
        "simulate",
        "--model",
        "models/demo",
        "--name",
        name,
        "--source-id",
        name,
        "--markers",
        &markers,
    ]))
}

#[test]
fn the_viewer_shows_decodings_hit_rates_health_and_signal_in_a_real_browser_and_survives_a_restart() {
    common::init_lsl();
    let name = common::unique("viewer");
    let _sim = simulate(&name);
    let (grpc, http) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let mut server = serve(&name, &grpc, &http, &[]);
    let mut b = Browser::start();
    b.cmd(&format!("open http://{http}/"));
    b.wait_for(
        "window.viewer && viewer.images > 0 && viewer.statusOk && viewer.signalDraws > 0 && viewer.scored > 0",
        Duration::from_secs(60),
        "no generated image, status, signal and scored stimulus on the page",
    );
    let before = b.state();
    std::thread::sleep(Duration::from_secs(10));
    let after = b.state();
    eprintln!("page before: {before}\npage after 10 s: {after}");
    let n = |v: &Value, k: &str| v[k].as_f64().unwrap_or(-1.0);
    assert!(n(&after, "decodings") > n(&before, "decodings"), "no new decodings on the page");
    assert!(n(&after, "images") > n(&before, "images"), "the generated image did not change");
    assert_ne!(after["generated_src"], before["generated_src"], "the generated image did not change");
    assert!(n(&after, "scored") > n(&before, "scored"), "no new stimuli scored");
    assert_ne!(after["hitrate"], before["hitrate"], "the hit rate did not change");
    assert!(after["hitrate"].as_str().unwrap().contains("top-5"), "{}", after["hitrate"]);
    assert_eq!(n(&after, "missed"), 0.0, "a lone viewer missed decodings");
    assert_eq!(after["errors"], serde_json::json!([]), "errors on the page");
    // The health panel: the stream's channel count and its measured rate.
    let health = b.text("streams");
    assert!(health.contains("306 ch"), "no channel count in the health panel: {health}");
    let rate: f64 = health
        .split(" Hz measured")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no measured rate in the health panel: {health}"));
    assert!((rate - 1000.0).abs() < 50.0, "measured rate {rate} Hz, the source runs at 1000 Hz");
    let signal = b.text("signal-info");
    assert!(signal.contains("306 channels at 120 Hz"), "signal panel: {signal}");
    // The screenshot, for the README and for a person to look at.
    let shot = common::repo().join("out/viewer.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    b.cmd(&format!("screenshot {}", shot.display()));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 50_000, "screenshot {} bytes", png.len());

    // The server restarts under the open page: it says so, and reconnects by itself.
    common::sigterm_and_wait(&mut server.0);
    b.wait_for(
        "!viewer.connected && /disconnected|reconnecting/.test(document.getElementById('conn').textContent)",
        Duration::from_secs(10),
        "the page did not say it lost the server",
    );
    b.wait_for(
        "!document.getElementById('status-msg').hidden && /unavailable/.test(document.getElementById('status-msg').textContent)",
        Duration::from_secs(10),
        "the health panel did not say its values are stale",
    );
    let _server = serve(&name, &grpc, &http, &[]);
    b.wait_for(
        "viewer.connected && viewer.reconnects >= 1 && /reconnected/.test(document.getElementById('conn').textContent)",
        Duration::from_secs(60),
        "the page did not reconnect to the restarted server",
    );
    let d0 = n(&b.state(), "decodings");
    b.wait_for(&format!("viewer.decodings > {d0}"), Duration::from_secs(20), "no decodings after the reconnect");
}

#[test]
fn with_a_token_and_tls_the_viewers_recording_button_is_refused_without_the_token_and_works_with_it() {
    common::init_lsl();
    let name = common::unique("viewer-token");
    let _sim = simulate(&name);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-viewer-token\n").unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let (ca, cert_path, key_path) = common::self_signed_localhost(dir.path());
    let (gport, hport) = (common::free_port(), common::free_port());
    let (grpc, http) = (format!("127.0.0.1:{gport}"), format!("127.0.0.1:{hport}"));
    let _server = serve(
        &name,
        &grpc,
        &http,
        &[
            "--token-file",
            token_file.to_str().unwrap(),
            "--record-dir",
            rec.to_str().unwrap(),
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    // Plain HTTP is not answered on the TLS port.
    let plain = exchange(&http, &[b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
    assert!(!plain.starts_with("HTTP/1.1 200"), "plain HTTP answered on the TLS port: {plain:.200}");
    let mut b = Browser::start();
    b.cmd(&format!("open https://localhost:{hport}/"));
    b.wait_for(
        "!document.getElementById('token-form').hidden",
        Duration::from_secs(20),
        "the page did not ask for the token",
    );
    assert_eq!(b.eval("viewer.decodings"), 0, "decodings reached a page without the token");
    b.cmd("click #rec-start");
    b.wait_for(
        "/refused/.test(document.getElementById('rec-msg').textContent)",
        Duration::from_secs(10),
        "the recording button was not refused without the token",
    );
    let refused = b.text("rec-msg");
    assert!(refused.contains("token") || refused.contains("Unauthenticated"), "{refused}");
    assert!(common::xdf_files(&rec).is_empty(), "a recording started without the token");

    b.cmd("type #token s3cret-viewer-token");
    b.cmd("click #token-form button");
    b.wait_for("viewer.statusOk && viewer.decodings > 0", Duration::from_secs(30), "no data with the token");
    b.cmd("click #rec-start");
    b.wait_for(
        "/^started/.test(document.getElementById('rec-msg').textContent)",
        Duration::from_secs(10),
        "the recording did not start with the token",
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let recording = rt.block_on(async {
        let ch = common::tls_channel(&ca, gport).await;
        let mut req = tonic::Request::new(proto::GetStatusRequest {});
        req.metadata_mut().insert("authorization", "Bearer s3cret-viewer-token".parse().unwrap());
        proto::decoder_client::DecoderClient::new(ch).get_status(req).await.unwrap().into_inner().recording.unwrap()
    });
    assert!(recording.recording, "the server is not recording: {recording:?}");
    assert_eq!(common::xdf_files(&rec).len(), 1);
    b.wait_for(
        "/recording to/.test(document.getElementById('rec-state').textContent)",
        Duration::from_secs(10),
        "the page does not show the recording",
    );
    b.cmd("click #rec-stop");
    b.wait_for(
        "/^stopped/.test(document.getElementById('rec-msg').textContent)",
        Duration::from_secs(10),
        "the recording did not stop",
    );
}

/// A body as sent with `Transfer-Encoding: chunked` (or as is, when it is not).
fn decode_chunked(body: &str) -> String {
    let chunked = body.split_once("\r\n").is_some_and(|(size, _)| usize::from_str_radix(size.trim(), 16).is_ok());
    if !chunked {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return body.to_string() };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// One raw HTTP/1.1 exchange: the request in pieces (with pauses), the whole answer.
fn exchange(addr: &str, pieces: &[&[u8]]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for p in pieces {
        s.write_all(p).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_http_server_speaks_proper_http_caps_connections_and_is_read_only_without_a_token() {
    common::init_lsl();
    // Quotes and a backslash in the name: label values must be escaped in /metrics.
    let name = format!("{}\"q\\z", common::unique("viewer-http"));
    let _sim = simulate(&name);
    let (grpc, http) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let _server = serve(
        &name,
        &grpc,
        &http,
        &["--set", "http.max_connections=8", "--set", "http.header_timeout_s=1", "--record-dir", "/tmp"],
    );
    // The page, its HEAD (no body), a request split across writes, an unknown path.
    let page = exchange(&http, &[b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<title>meg-decoder viewer</title>"), "{page:.300}");
    let head = exchange(&http, &[b"HEAD /viewer.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/javascript"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD answered with a body: {head:.400}");
    let split = exchange(&http, &[b"GET /metr", b"ics HTTP/1.1\r\nHo", b"st: x\r\nConnection: close\r\n", b"\r\n"]);
    assert!(split.starts_with("HTTP/1.1 200") && split.contains("megdecoder_samples_total"), "{split:.300}");
    assert!(split.contains("application/openmetrics-text") && split.trim_end().ends_with("# EOF"), "{split:.300}");
    // The page parses with the Prometheus project's own OpenMetrics parser, quotes and
    // backslashes in the stream's name included.
    let body = split.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    let parse = "import sys, json, prometheus_client.openmetrics.parser as p\n\
        fams = list(p.text_string_to_metric_families(sys.stdin.read()))\n\
        names = [s.labels.get('stream') for f in fams for s in f.samples if f.name == 'megdecoder_samples']\n\
        print(json.dumps({'families': len(fams), 'streams': names}))";
    let mut py = Command::new(common::python())
        .args(["-c", parse])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(decode_chunked(&body).as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(parsed["families"].as_u64().unwrap() >= 20, "{parsed}");
    assert_eq!(parsed["streams"], serde_json::json!([name, format!("{name}-m")]), "{parsed}");
    let missing = exchange(&http, &[b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // Without a token, the gRPC-Web port is read-only: StopRecording is refused
    // (PERMISSION_DENIED, gRPC status 7) and GetStatus answers.
    let grpc_web = |method: &str| {
        let req = format!(
            "POST /megdecoder.v1.Decoder/{method} HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        );
        exchange(&http, &[req.as_bytes(), b"\0\0\0\0\0"])
    };
    let refused = grpc_web("StopRecording");
    assert!(refused.starts_with("HTTP/1.1 200") && refused.contains("grpc-status: 7"), "{refused:.500}");
    assert!(refused.contains("read-only"), "{refused:.500}");
    let status = grpc_web("GetStatus");
    assert!(status.contains("grpc-status:0") || status.contains("grpc-status: 0"), "{status:.500}");

    // Idle connections are closed after the header timeout, and beyond the cap new ones
    // are closed at once; the server serves again once they are gone.
    let mut idle = std::net::TcpStream::connect(&http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(5), "an idle connection was held {waited:?} (header timeout 1 s)");
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "idle answer: {:?}", &buf[..n]);
    // A connection that sends part of the HTTP/2 preface and leaves, or stays: each slot
    // comes back within the header timeout (8 of them would fill the cap for good).
    for _ in 0..8 {
        let mut s = std::net::TcpStream::connect(&http).unwrap();
        s.write_all(b"P").unwrap();
    }
    let mut partial = std::net::TcpStream::connect(&http).unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    partial.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let _ = partial.read(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(5), "a partial HTTP/2 preface held its connection {:?}", t.elapsed());
    // An HTTP/2 connection with nothing in flight, and a request body trickled a byte at
    // a time, are closed too.
    let mut h2 = std::net::TcpStream::connect(&http).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    let mut sink = Vec::new();
    let _ = h2.read_to_end(&mut sink);
    assert!(t.elapsed() < Duration::from_secs(6), "an idle HTTP/2 connection was held {:?}", t.elapsed());
    let mut slow = std::net::TcpStream::connect(&http).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    slow.write_all(b"POST /megdecoder.v1.Decoder/GetStatus HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) && slow.write_all(b"\0").is_ok() {
        std::thread::sleep(Duration::from_millis(300));
        let mut probe = [0u8; 1];
        slow.set_nonblocking(true).unwrap();
        let closed = slow.read(&mut probe).is_ok();
        slow.set_nonblocking(false).unwrap();
        if closed {
            break;
        }
    }
    assert!(t.elapsed() < Duration::from_secs(6), "a trickled request body held its connection {:?}", t.elapsed());
    // Subscribers that stop reading (a stalled tab, a hostile client) lose their
    // connections once their writes have been blocked for the timeout.
    let stalled: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            use prost::Message;
            let req = proto::SubscribeRequest {
                include_images: true,
                include_embedding: true,
                image_size: 2048,
                ..Default::default()
            }
            .encode_to_vec();
            let mut s = std::net::TcpStream::connect(&http).unwrap();
            let head = format!(
                "POST /megdecoder.v1.Decoder/Subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: {}\r\n\r\n",
                5 + req.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&[0]).unwrap();
            s.write_all(&(req.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&req).unwrap();
            s
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let subscribers = || {
        rt.block_on(async {
            let mut c = proto::decoder_client::DecoderClient::connect(format!("http://{grpc}")).await.unwrap();
            c.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner().subscribers.len()
        })
    };
    let t = Instant::now();
    while subscribers() < 3 {
        assert!(t.elapsed() < Duration::from_secs(10), "the stalled subscriptions never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    while subscribers() > 0 {
        assert!(t.elapsed() < Duration::from_secs(40), "subscribers that stopped reading kept their connections");
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stalled);
    let flood: Vec<_> = (0..20).filter_map(|_| std::net::TcpStream::connect(&http).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(flood);
    let t = Instant::now();
    loop {
        let ok = exchange(&http, &[b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
        if ok.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no answer after a flood: {ok}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_the_viewer_the_http_port_serves_only_metrics_and_health() {
    common::init_lsl();
    let name = common::unique("viewer-off");
    let _sim = simulate(&name);
    let (grpc, http) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let _server = serve(&name, &grpc, &http, &["--no-viewer"]);
    let page = exchange(&http, &[b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
    assert!(page.starts_with("HTTP/1.1 404"), "{page:.200}");
    let req = "POST /megdecoder.v1.Decoder/GetStatus HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
    let rpc = exchange(&http, &[req.as_bytes(), b"\0\0\0\0\0"]);
    assert!(rpc.starts_with("HTTP/1.1 404"), "{rpc:.200}");
    let metrics = exchange(&http, &[b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics:.200}");
}

#[test]
fn get_signal_returns_the_preprocessed_span_with_picks_and_markers_and_rejects_bad_requests() {
    common::init_lsl();
    let name = common::unique("viewer-signal");
    let _sim = simulate(&name);
    let (grpc, http) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let _server = serve(&name, &grpc, &http, &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = proto::decoder_client::DecoderClient::connect(format!("http://{grpc}")).await.unwrap();
        let signal = |seconds: f64, picks: &[&str]| {
            let req = proto::GetSignalRequest { seconds, picks: picks.iter().map(|p| p.to_string()).collect() };
            let mut c = c.clone();
            async move { c.get_signal(req).await }
        };
        // Wait until the pipeline holds 5 s of samples and a marker.
        let t = Instant::now();
        let full = loop {
            let s = signal(0.0, &[]).await.unwrap().into_inner();
            if s.times.len() >= 595 && !s.markers.is_empty() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no 5 s of signal with a marker: {} samples", s.times.len());
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(full.sample_rate_hz, 120.0);
        assert_eq!(full.channels.len(), 306);
        assert_eq!(full.units.iter().filter(|u| *u == "T/m").count(), 204, "Neuromag gradiometers");
        assert_eq!(full.units.iter().filter(|u| *u == "T").count(), 102, "Neuromag magnetometers");
        assert!((595..=605).contains(&full.times.len()), "{} samples for 5 s at 120 Hz", full.times.len());
        assert_eq!(full.data.len(), full.channels.len() * full.times.len());
        let steps: Vec<f64> = full.times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(steps.iter().all(|d| (d - 1.0 / 120.0).abs() < 1e-3), "sample times off the 120 Hz grid");
        assert!(full.data.iter().all(|v| v.is_finite()));
        let first: Vec<f32> = full.data[..full.times.len()].to_vec();
        let mean = first.iter().sum::<f32>() / first.len() as f32;
        let sd = (first.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / first.len() as f32).sqrt();
        assert!(sd > 1e-15 && sd < 1e-9, "channel 0's SD {sd} is not MEG in T/m");
        let (t0, t1) = (full.times[0], *full.times.last().unwrap());
        assert!(full.markers.iter().all(|m| m.time >= t0 && m.time <= t1 + 1.0 && m.text.starts_with("img_")));
        assert!(full.taken_at >= t1 && full.taken_at - t1 < 1.0, "copy at {} for samples up to {t1}", full.taken_at);

        let picked = signal(2.0, &["MEG01*", "MEG2443"]).await.unwrap().into_inner();
        assert!(picked.channels.iter().all(|c| c.starts_with("MEG01") || c == "MEG2443"), "{:?}", picked.channels);
        assert_eq!(picked.channels.len(), 1 + full.channels.iter().filter(|c| c.starts_with("MEG01")).count());
        assert!((238..=242).contains(&picked.times.len()), "{} samples for 2 s", picked.times.len());
        assert_eq!(picked.data.len(), picked.channels.len() * picked.times.len());

        for (seconds, picks, says) in [
            (f64::NAN, vec![], "seconds"),
            (-1.0, vec![], "seconds"),
            (1e300, vec![], "1e300"),
            (0.0, vec![""], "pick"),
            (0.0, vec!["*"], "pick"),
            (0.0, vec!["NOPE*"], "matches none"),
        ] {
            let e = signal(seconds, &picks).await.expect_err("bad GetSignal accepted");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{seconds} {picks:?}: {e:?}");
            assert!(e.message().contains(says), "{seconds} {picks:?}: {}", e.message());
        }
        let many: Vec<String> = (0..5000).map(|i| format!("X{i}")).collect();
        let req = proto::GetSignalRequest { seconds: 1.0, picks: many };
        let e = c.get_signal(req).await.expect_err("5000 picks accepted");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    });
}

#[test]
fn gallery_images_without_files_show_placeholders_and_are_still_scored() {
    common::init_lsl();
    let name = common::unique("viewer-gallery");
    let _sim = simulate(&name);
    // The demo model with the image files of every odd-numbered gallery image removed.
    let dir = tempfile::tempdir().unwrap();
    let (src, model) = (common::repo().join("models/demo-brain"), dir.path().join("model"));
    std::fs::create_dir_all(model.join("gallery/images")).unwrap();
    for f in ["encoder.onnx", "generator.onnx", "gallery/embeddings.npy", "gallery/ids.txt"] {
        std::os::unix::fs::symlink(src.join(f).canonicalize().unwrap(), model.join(f)).unwrap();
    }
    let mut kept = 0;
    for e in std::fs::read_dir(src.join("gallery/images")).unwrap().flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let n: u32 = file.trim_start_matches("img_").trim_end_matches(".png").parse().unwrap();
        if n.is_multiple_of(2) {
            std::os::unix::fs::symlink(e.path().canonicalize().unwrap(), model.join("gallery/images").join(&file))
                .unwrap();
            kept += 1;
        }
    }
    let images = std::fs::read_to_string(src.join("gallery/ids.txt")).unwrap().lines().count();
    assert_eq!(kept, images / 2);
    let (grpc, http) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let _server = serve(&name, &grpc, &http, &["--model", model.to_str().unwrap()]);
    let mut b = Browser::start();
    b.cmd(&format!("open http://{http}/"));
    b.wait_for(
        "viewer.placeholders > 0 && viewer.scored >= 4 && viewer.images > 0",
        Duration::from_secs(60),
        "no placeholders for the missing images, or no scored stimuli",
    );
    let state = b.state();
    assert_eq!(state["errors"], serde_json::json!([]), "errors on the page: {state}");
    // Every image on the page shows a picture or the placeholder, never a broken link (an
    // image of a decoding that arrived just now has no src until its fetch is answered).
    let broken = b.eval(
        "[...document.querySelectorAll('img')].filter(i => i.getAttribute('src') && !i.src.startsWith('blob:') && !i.src.startsWith('data:image/svg')).length",
    );
    assert_eq!(broken, 0, "images without a picture or placeholder: {broken}");
}
