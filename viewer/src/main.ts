// meg-decoder's browser viewer: one page, talking to the same megdecoder.v1 service as
// every client, over gRPC-Web (client generated from proto/ by protoc-gen-es).
//
// What it does, loop by loop:
// - subscribe(): one Subscribe stream (images at 256 px, top-5, continuous decodings at
//   most 4/s), reconnecting by itself with backoff and saying so;
// - pollStatus(): GetStatus every second (stream health, pipeline, recording);
// - pollSignal(): GetSignal every 500 ms (the butterfly plot, markers on it).
// Gallery images (top-k, shown stimuli) are fetched once each with GetGalleryImage.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Decoder, Mode, type Decoding, type Signal, type Status } from "./gen/megdecoder/v1/decoder_pb";

const TOKEN_KEY = "megdecoder.token";
let token = sessionStorage.getItem(TOKEN_KEY) ?? "";

const withToken: Interceptor = (next) => async (req) => {
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const client = createClient(
  Decoder,
  createGrpcWebTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [withToken] }),
);

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const PLACEHOLDER =
  "data:image/svg+xml;utf8," +
  encodeURIComponent(
    "<svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'><rect width='64' height='64' fill='#222'/>" +
      "<path d='M8 8L56 56M56 8L8 56' stroke='#555' stroke-width='3'/></svg>",
  );

// ---- state shown by the page (read by the browser test through window.viewer) --------
const view = {
  decodings: 0,
  eventLocked: 0,
  missed: 0,
  images: 0,
  reconnects: 0,
  connected: false,
  lastSequence: -1,
  scored: 0,
  top1: 0,
  top5: 0,
  statusOk: false,
  signalDraws: 0,
  // Segment breaks (gaps, source clock resets) in the last signal drawn.
  segmentBreaks: 0,
  placeholders: 0,
  errors: [] as string[],
};
(window as unknown as { viewer: typeof view }).viewer = view;
// Anything the page did not handle is kept (and checked by the browser tests).
window.addEventListener("error", (e) => view.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => view.errors.push(String(e.reason)));

function describe(e: unknown): string {
  const c = ConnectError.from(e);
  return c.rawMessage || Code[c.code] || String(e);
}

// ---- auth --------------------------------------------------------------------------
function needToken(why: string) {
  $("token-form").hidden = false;
  $("token-msg").textContent = why;
}
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $<HTMLInputElement>("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-msg").textContent = "";
  restartSubscription();
});

// ---- gallery images (one fetch each; misses remembered; placeholder on failure) -------
// url: the image (null when it cannot be had); inGallery: the id is one of the gallery's.
type GalleryEntry = { url: string | null; inGallery: boolean };
const gallery = new Map<string, Promise<GalleryEntry>>();
function galleryImage(id: string): Promise<GalleryEntry> {
  let p = gallery.get(id);
  if (!p) {
    p = client
      .getGalleryImage({ imageId: id })
      .then((g) => ({ url: URL.createObjectURL(new Blob([g.png as BlobPart], { type: "image/png" })), inGallery: true }))
      .catch((e) => {
        const c = ConnectError.from(e);
        // NOT_FOUND: not a gallery id; FAILED_PRECONDITION: a gallery id without an image
        // file (or no gallery). Anything else (server away) is tried again later.
        if (c.code !== Code.NotFound && c.code !== Code.FailedPrecondition) gallery.delete(id);
        return { url: null, inGallery: c.code === Code.FailedPrecondition };
      });
    if (gallery.size > 2000) gallery.clear();
    gallery.set(id, p);
  }
  return p;
}
function showGallery(img: HTMLImageElement, id: string) {
  img.dataset.want = id;
  galleryImage(id).then(({ url }) => {
    if (img.dataset.want !== id) return;
    img.src = url ?? PLACEHOLDER;
    if (!url) view.placeholders++;
  });
}

// ---- decodings ---------------------------------------------------------------------
const latencies: number[] = [];
const encoderTimes: number[] = [];
let generatedUrl = "";
type Trial = { marker: string; retrieved: string; hit1: boolean; hit5: boolean };
const trials: Trial[] = [];

function onDecoding(d: Decoding) {
  view.decodings++;
  view.missed += Number(d.missed);
  view.lastSequence = Number(d.sequence);
  latencies.push(d.latencyMs);
  encoderTimes.push(d.encoderMs);
  if (latencies.length > 300) latencies.shift();
  if (encoderTimes.length > 300) encoderTimes.shift();
  $("missed").textContent = view.missed ? `${view.missed} decodings missed (slow page)` : "";
  if (d.imagePng.length) {
    if (generatedUrl) URL.revokeObjectURL(generatedUrl);
    generatedUrl = URL.createObjectURL(new Blob([d.imagePng as BlobPart], { type: "image/png" }));
    $<HTMLImageElement>("generated").src = generatedUrl;
    $("gen-seq").textContent = `from #${d.imageSequence}`;
    view.images++;
  }
  // A model trained for continuous use says whose on-screen image it decodes; one locked
  // to onsets decodes "as if an image had appeared at d.onset".
  const mode =
    d.mode === Mode.EVENT_LOCKED
      ? `event-locked to '${d.marker}'`
      : d.onScreenAt !== 0
        ? `continuous: on screen ${(d.windowEnd - d.onScreenAt).toFixed(2)} s before the window's end`
        : `continuous: as if an image appeared ${(d.windowEnd - d.onset).toFixed(2)} s before the window's end`;
  $("decoding-info").textContent =
    `#${d.sequence} ${mode} | latency ${d.latencyMs.toFixed(1)} ms | encoder ${d.encoderMs.toFixed(1)} ms | ` +
    `age ${d.ageMs.toFixed(0)} ms | ${d.model}${d.repaired ? " | repaired NaN/Inf" : ""}`;
  const top = d.topK.map((h) => h.imageId);
  $("topk-of").textContent = `of #${d.sequence}`;
  const box = $("topk");
  box.replaceChildren(
    ...d.topK.map((h) => {
      const div = document.createElement("div");
      div.className = "thumb" + (d.mode === Mode.EVENT_LOCKED && h.imageId === d.marker ? " match" : "");
      const img = document.createElement("img");
      img.alt = h.imageId;
      showGallery(img, h.imageId);
      div.append(img, `${h.imageId} ${h.score.toFixed(2)}`);
      return div;
    }),
  );
  if (d.mode === Mode.EVENT_LOCKED) {
    view.eventLocked++;
    // Progressive decoding: earlier stages are shown as they come; the model's own window
    // (the last stage) is what is scored.
    if (d.stage === d.stages) scoreTrial(d.marker, top);
  }
}

// An event-locked decoding whose marker names a gallery image is scored against it.
function scoreTrial(marker: string, top: string[]) {
  if (!top.length) return; // no gallery: nothing to score
  galleryImage(marker).then(({ url, inGallery }) => {
    if (!inGallery && url === null) return; // the marker does not name a gallery image
    const t: Trial = { marker, retrieved: top[0] ?? "", hit1: top[0] === marker, hit5: top.slice(0, 5).includes(marker) };
    view.scored++;
    view.top1 += t.hit1 ? 1 : 0;
    view.top5 += t.hit5 ? 1 : 0;
    trials.push(t);
    if (trials.length > 12) trials.shift();
    $<HTMLImageElement>("shown").src = url ?? PLACEHOLDER;
    $("shown-id").textContent = marker;
    const hit = $("hit");
    hit.textContent = t.hit1 ? "top-1 hit" : t.hit5 ? "top-5 hit" : "miss";
    hit.className = t.hit5 ? "hit" : "miss";
    const pct = (n: number) => ((100 * n) / view.scored).toFixed(0);
    $("hitrate").textContent =
      `top-1 ${view.top1}/${view.scored} (${pct(view.top1)}%)   top-5 ${view.top5}/${view.scored} (${pct(view.top5)}%)`;
    $("strip").replaceChildren(
      ...trials.map((x) => {
        const cell = document.createElement("div");
        cell.className = "cell " + (x.hit5 ? "hit" : "miss");
        const shown = document.createElement("img");
        const got = document.createElement("img");
        got.className = "retrieved";
        showGallery(shown, x.marker);
        if (x.retrieved) showGallery(got, x.retrieved);
        cell.append(shown, got, x.hit1 ? "hit" : x.hit5 ? "top-5" : "miss");
        return cell;
      }),
    );
  });
}

// ---- the subscription, reconnecting by itself ---------------------------------------
let subscription: AbortController | null = null;
function setConn(state: "ok" | "bad" | "wait", text: string) {
  const c = $("conn");
  c.className = `pill ${state}`;
  c.textContent = text;
}
// Wakes the subscription loop from its backoff sleep (set while it sleeps).
let wakeFromBackoff: (() => void) | null = null;
function restartSubscription() {
  subscription?.abort();
  // A new token: try at once, not after the rest of the backoff.
  wakeFromBackoff?.();
}
async function subscribe() {
  let backoff = 500;
  let everConnected = false;
  for (;;) {
    subscription = new AbortController();
    try {
      const stream = client.subscribe(
        { includeImages: true, imageSize: 256, topK: 5, maxRateHz: 4, maxAgeS: 5 },
        { signal: subscription.signal },
      );
      for await (const d of stream) {
        if (!view.connected) {
          view.connected = true;
          if (everConnected) view.reconnects++;
          everConnected = true;
          backoff = 500;
          setConn("ok", view.reconnects ? `connected (reconnected ${view.reconnects}x)` : "connected");
        }
        onDecoding(d);
      }
      throw new ConnectError("the server ended the stream", Code.Unavailable);
    } catch (e) {
      view.connected = false;
      const c = ConnectError.from(e);
      if (c.code === Code.Canceled) {
        setConn("wait", "connecting");
        continue; // restarted on purpose (new token)
      }
      if (c.code === Code.Unauthenticated) needToken("this server needs its bearer token");
      setConn("bad", `disconnected: ${describe(e)}; retrying in ${(backoff / 1000).toFixed(1)} s`);
      const woken = await new Promise<boolean>((r) => {
        wakeFromBackoff = () => r(true);
        setTimeout(() => r(false), backoff);
      });
      wakeFromBackoff = null;
      backoff = woken ? 500 : Math.min(backoff * 2, 5000);
      setConn("wait", "reconnecting");
    }
  }
}

// ---- status: health, pipeline, recording --------------------------------------------
function rows(table: HTMLElement, entries: [string, string][]) {
  table.replaceChildren(
    ...entries.map(([k, v]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td");
      const b = document.createElement("td");
      a.textContent = k;
      b.textContent = v;
      tr.append(a, b);
      return tr;
    }),
  );
}
let statusAt = "";
function showStatus(s: Status) {
  view.statusOk = true;
  statusAt = new Date().toLocaleTimeString();
  $("health").classList.remove("stale");
  $("status-msg").hidden = true;
  $("model").textContent = s.model ? `${s.model.id} (${s.model.embeddingSpace}, ${s.model.galleryImages} gallery images)` : "";
  const streams: [string, string][] = [];
  for (const st of s.streams) {
    streams.push([st.name, `${st.type || "(no type)"}, ${st.connected ? "connected" : "NOT CONNECTED"}`]);
    if (st.channels > 1 || st.nominalRateHz > 0) {
      streams.push(["  channels, rate", `${st.channels} ch, ${st.measuredRateHz.toFixed(1)} Hz measured (${st.nominalRateHz} nominal)`]);
      streams.push(["  lag, ring fill", `${st.lagMs.toFixed(1)} ms, ${(100 * st.ringFill).toFixed(0)}%`]);
    }
    streams.push(["  gaps, missing", `${st.gaps} gaps, ${st.missingSamples} samples missing`]);
    streams.push(["  reconnects, NaN/Inf", `${st.reconnects}, ${st.nonFiniteSamples}`]);
  }
  rows($("streams"), streams);
  const p = s.pipeline;
  if (p) {
    const reasons = Object.entries(p.skippedByReason)
      .filter(([, n]) => Number(n) > 0)
      .map(([r, n]) => `${r} ${n}`)
      .join(", ");
    rows($("pipeline"), [
      ["decoded", `${p.decoded} (${p.decodedEventLocked} event-locked)`],
      ["skipped", `${p.skipped}${reasons ? ` (${reasons})` : ""}`],
      ["latency p50/p90/p99", `${p.latencyP50Ms.toFixed(1)} / ${p.latencyP90Ms.toFixed(1)} / ${p.latencyP99Ms.toFixed(1)} ms`],
      ["encoder p50/p99", `${p.encoderP50Ms.toFixed(1)} / ${p.encoderP99Ms.toFixed(1)} ms`],
      ["images, subscribers", `${p.imagesGenerated}, ${s.subscribers.length}`],
      ["service", s.error ? `FAILING: ${s.error}` : "healthy"],
    ]);
  }
  const r = s.recording;
  $("rec-state").textContent = !r
    ? "recording not configured"
    : r.recording
      ? `recording to ${r.path} (${(Number(r.bytesWritten) / 1e6).toFixed(1)} MB)`
      : r.error
        ? `stopped on an error: ${r.error}`
        : r.path
          ? `not recording (last: ${r.path})`
          : "not recording";
  $<HTMLButtonElement>("rec-start").disabled = !!r?.recording;
  $<HTMLButtonElement>("rec-stop").disabled = !r?.recording;
}
async function pollStatus() {
  for (;;) {
    try {
      showStatus(await client.getStatus({}));
    } catch (e) {
      view.statusOk = false;
      if (ConnectError.from(e).code === Code.Unauthenticated) needToken("this server needs its bearer token");
      $("health").classList.add("stale");
      const msg = $("status-msg");
      msg.hidden = false;
      msg.textContent = `status unavailable: ${describe(e)}${statusAt ? ` (below: as of ${statusAt})` : ""}`;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- recording controls ------------------------------------------------------------
async function recording(start: boolean) {
  const msg = $("rec-msg");
  msg.textContent = start ? "starting..." : "stopping...";
  try {
    const r = start
      ? await client.startRecording({ subject: $<HTMLInputElement>("rec-subject").value.trim() })
      : await client.stopRecording({});
    msg.textContent = start ? `started: ${r.path}` : `stopped: ${r.path}`;
  } catch (e) {
    const c = ConnectError.from(e);
    if (c.code === Code.Unauthenticated) needToken("recording needs the server's bearer token");
    msg.textContent = `refused: ${describe(e)}`;
  }
}
$("rec-start").addEventListener("click", () => recording(true));
$("rec-stop").addEventListener("click", () => recording(false));

// ---- histograms ---------------------------------------------------------------------
function quantile(sorted: number[], q: number) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN;
}
function drawHistogram(canvas: HTMLCanvasElement, values: number[], unit: string) {
  const g = canvas.getContext("2d");
  if (!g) return;
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  if (!values.length) return;
  const sorted = [...values].sort((a, b) => a - b);
  const hi = Math.max(quantile(sorted, 0.99) * 1.2, 1e-3);
  const bins = new Array(40).fill(0);
  for (const v of values) bins[Math.min(39, Math.floor((v / hi) * 40))]++;
  const top = Math.max(...bins);
  g.fillStyle = "#58a6ff";
  bins.forEach((n, i) => {
    const bh = ((h - 18) * n) / top;
    g.fillRect((i * w) / 40 + 1, h - 14 - bh, w / 40 - 2, bh);
  });
  g.fillStyle = "#8a93a0";
  g.font = "11px system-ui";
  g.fillText(`0`, 2, h - 2);
  g.fillText(`${hi.toFixed(1)} ${unit}`, w - 60, h - 2);
  g.fillText(`p50 ${quantile(sorted, 0.5).toFixed(1)}  p99 ${quantile(sorted, 0.99).toFixed(1)} ${unit}`, 4, 12);
}

// ---- the butterfly plot ---------------------------------------------------------------
function std(xs: Float32Array | number[], from: number, n: number) {
  let m = 0;
  for (let i = 0; i < n; i++) m += xs[from + i];
  m /= n || 1;
  let v = 0;
  for (let i = 0; i < n; i++) v += (xs[from + i] - m) ** 2;
  return Math.sqrt(v / (n || 1));
}
function drawSignal(s: Signal) {
  const canvas = $<HTMLCanvasElement>("butterfly");
  const g = canvas.getContext("2d");
  if (!g) return;
  const n = s.times.length;
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  if (!n || !s.channels.length) {
    $("signal-info").textContent = "no samples yet";
    return;
  }
  // Samples are placed by their index (the newest at the right edge): the times are
  // continuous within a segment only, and a gap or a source clock reset starts a new one.
  const t1 = s.times[n - 1];
  const span = Math.max((n - 1) / s.sampleRateHz, 1 / s.sampleRateHz);
  const xi = (i: number) => w - ((n - 1 - i) / s.sampleRateHz / span) * (w - 40) - 2;
  const starts = [0, ...s.segmentStarts.filter((i) => i > 0 && i < n)];
  const isStart = new Set(starts);
  // Where a time falls: the newest segment whose samples span it.
  const indexOf = (t: number) => {
    for (let k = starts.length - 1; k >= 0; k--) {
      const a = starts[k];
      const b = (k + 1 < starts.length ? starts[k + 1] : n) - 1;
      if (t >= s.times[a] - 0.5 / s.sampleRateHz && t <= s.times[b] + 0.5 / s.sampleRateHz) {
        return a + (t - s.times[a]) * s.sampleRateHz;
      }
    }
    return undefined;
  };
  // One panel per unit (magnetometers and gradiometers differ by orders of magnitude).
  const units = [...new Set(s.units)];
  const ph = h / units.length;
  const flagged: string[] = [];
  units.forEach((unit, u) => {
    const idx = s.channels.map((_, c) => c).filter((c) => s.units[c] === unit);
    const sds = idx.map((c) => std(s.data, c * n, n));
    const med = [...sds].sort((a, b) => a - b)[Math.floor(sds.length / 2)] || 1e-30;
    const scale = (ph / 2 - 4) / (4 * med);
    const y0 = u * ph + ph / 2;
    idx.forEach((c, k) => {
      const bad = sds[k] < med * 0.05 || sds[k] > med * 8;
      if (bad) flagged.push(`${s.channels[c]} (${sds[k] < med * 0.05 ? "flat" : "noisy"})`);
      g.strokeStyle = bad ? "rgba(248,81,73,0.9)" : "rgba(88,166,255,0.25)";
      g.lineWidth = bad ? 1.5 : 1;
      g.beginPath();
      const off = c * n;
      let m = 0;
      for (let i = 0; i < n; i++) m += s.data[off + i];
      m /= n;
      for (let i = 0; i < n; i++) {
        const yy = Math.max(u * ph, Math.min((u + 1) * ph, y0 - (s.data[off + i] - m) * scale));
        if (isStart.has(i)) g.moveTo(xi(i), yy);
        else g.lineTo(xi(i), yy);
      }
      g.stroke();
    });
    g.fillStyle = "#8a93a0";
    g.font = "11px system-ui";
    g.fillText(`${idx.length} ch ${unit || "(unit?)"}, median SD ${med.toExponential(1)}`, 4, u * ph + 12);
  });
  g.font = "11px system-ui";
  for (const b of starts.slice(1)) {
    g.strokeStyle = "#8a93a0";
    g.setLineDash([3, 3]);
    g.beginPath();
    g.moveTo(xi(b), 0);
    g.lineTo(xi(b), h);
    g.stroke();
    g.setLineDash([]);
    g.fillStyle = "#8a93a0";
    g.fillText("break", xi(b) + 2, 24);
  }
  for (const mk of s.markers) {
    const at = indexOf(mk.time);
    if (at === undefined) continue;
    const mx = xi(at);
    g.strokeStyle = "#d29922";
    g.beginPath();
    g.moveTo(mx, 0);
    g.lineTo(mx, h);
    g.stroke();
    g.fillStyle = "#d29922";
    g.fillText(mk.text.slice(0, 16), mx + 2, h - 4);
  }
  for (let t = 0; t <= span; t += 1) {
    g.fillStyle = "#8a93a0";
    g.fillText(`-${t.toFixed(0)} s`, xi(n - 1 - t * s.sampleRateHz) - 14, h / 2);
  }
  const breaks = starts.length - 1;
  view.segmentBreaks = breaks;
  const stalled = s.takenAt - t1 > 1 ? ` | STALLED: newest sample ${(s.takenAt - t1).toFixed(1)} s old` : "";
  $("signal-info").textContent =
    `${s.channels.length} channels at ${s.sampleRateHz} Hz, model ${s.model}${stalled}` +
    (breaks ? ` | ${breaks} break${breaks > 1 ? "s" : ""} (gap or source clock reset)` : "") +
    (flagged.length ? ` | check: ${flagged.slice(0, 8).join(", ")}${flagged.length > 8 ? ", ..." : ""}` : "");
  view.signalDraws++;
}
async function pollSignal() {
  for (;;) {
    try {
      drawSignal(await client.getSignal({ seconds: 5 }));
    } catch (e) {
      $("signal-info").textContent = `no signal: ${describe(e)}`;
    }
    drawHistogram($<HTMLCanvasElement>("latency-hist"), latencies, "ms");
    drawHistogram($<HTMLCanvasElement>("encoder-hist"), encoderTimes, "ms");
    await new Promise((r) => setTimeout(r, 500));
  }
}

$<HTMLImageElement>("generated").src = PLACEHOLDER;
$<HTMLImageElement>("shown").src = PLACEHOLDER;
void subscribe();
void pollStatus();
void pollSignal();
