// vividhead stream page: sends audio over a WebSocket, plays the fMP4 chunks with MediaSource.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { chunks: 0, errors: [], done: false, framesShown: 0, firstFrameMs: null, mime: null };
window.vividhead = state;   // read by tests and handy in the console

class Player {
  constructor(video, mime) {
    this.video = video;
    this.queue = [];
    this.ended = false;
    this.source = new MediaSource();
    video.src = URL.createObjectURL(this.source);
    this.ready = new Promise((resolve) => this.source.addEventListener("sourceopen", () => {
      this.buffer = this.source.addSourceBuffer(mime);
      this.buffer.mode = "sequence";            // each chunk is its own segment; play them back to back
      this.buffer.addEventListener("updateend", () => this.pump());
      resolve();
    }, { once: true }));
  }
  async append(data) { await this.ready; this.queue.push(data); this.pump(); }
  finish() { this.ended = true; this.pump(); }
  pump() {
    if (!this.buffer || this.buffer.updating) return;
    if (this.queue.length) {
      this.buffer.appendBuffer(this.queue.shift());
      if (this.video.paused) this.video.play().catch(() => {});
    } else if (this.ended && this.source.readyState === "open") {
      this.source.endOfStream();
    }
  }
}

class Stream {
  constructor() {
    const token = new URLSearchParams(location.search).get("token");   // required when served off loopback
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    this.ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${query}`);
    this.ws.binaryType = "arraybuffer";
    this.started = performance.now();
    this.opened = new Promise((resolve) => { this.onReady = resolve; });
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onclose = (event) => setStatus(state.done ? "done" : `closed${event.reason ? ` (${event.reason})` : ""}`);
  }
  receive(data) {
    if (data instanceof ArrayBuffer) { this.player.append(data); return; }
    const msg = JSON.parse(data);
    if (msg.type === "ready") {
      state.mime = msg.mime;
      if (!window.MediaSource || !MediaSource.isTypeSupported(msg.mime)) {
        logError(`this browser cannot play ${msg.mime} with MediaSource`);
      }
      this.player = new Player($("video"), msg.mime);
      setStatus(`connected (${msg.variant}, ${msg.width}x${msg.height} @ ${msg.fps} fps)`);
      this.onReady();
    } else if (msg.type === "chunk") {
      state.chunks += 1;
      $("chunks").textContent = state.chunks;
      $("latency").textContent = `${msg.latency_ms.toFixed(0)} ms`;
      $("first").textContent = msg.first_frame_ms == null ? "–" : `${msg.first_frame_ms.toFixed(0)} ms`;
      $("fps").textContent = msg.fps.toFixed(1);
    } else if (msg.type === "error") {
      logError(`${msg.code}: ${msg.message}`);
    } else if (msg.type === "done") {
      state.done = true;
      state.stats = msg.stats;
      this.player.finish();
      setStatus("done");
    }
  }
  send(data) { if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data); }
}

function setStatus(text) { $("status").textContent = text; }
function logError(text) { state.errors.push(text); $("log").textContent += text + "\n"; }

async function streamFile() {
  const file = $("file").files[0];
  if (!file) { logError("choose an audio file first"); return; }
  const stream = new Stream();
  await stream.opened;
  const bytes = new Uint8Array(await file.arrayBuffer());
  stream.send(JSON.stringify({ type: "upload", size: bytes.length, name: file.name }));
  for (let i = 0; i < bytes.length; i += 128 * 1024) {
    stream.send(bytes.slice(i, i + 128 * 1024));
    await new Promise((r) => setTimeout(r, 25));     // stay under the server's message rate
  }
  const audio = $("audio");
  audio.src = URL.createObjectURL(file);
  $("video").addEventListener("playing", () => { audio.currentTime = $("video").currentTime; audio.play().catch(() => {}); }, { once: true });
  watchFrames(stream.started);
  setStatus("streaming file");
}

async function streamMic() {
  const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const context = new AudioContext({ sampleRate: 16000 });
  const input = context.createMediaStreamSource(media);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const stream = new Stream();
  await stream.opened;
  stream.send(JSON.stringify({ type: "start", format: "f32" }));
  processor.onaudioprocess = (e) => stream.send(new Float32Array(e.inputBuffer.getChannelData(0)).buffer);
  input.connect(processor); processor.connect(context.destination);
  $("stop").disabled = false;
  $("stop").onclick = () => {
    processor.disconnect(); media.getTracks().forEach((t) => t.stop());
    stream.send(JSON.stringify({ type: "end" }));
    $("stop").disabled = true;
  };
  watchFrames(stream.started);
  setStatus("streaming microphone");
}

function watchFrames(started) {
  const video = $("video");
  let last = { t: performance.now(), frames: 0 };
  const tick = () => {
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    const frames = quality ? quality.totalVideoFrames : 0;
    if (frames > 0 && state.firstFrameMs === null) {
      state.firstFrameMs = performance.now() - started;
      $("firstPage").textContent = `${state.firstFrameMs.toFixed(0)} ms`;
    }
    state.framesShown = frames;
    $("shown").textContent = frames;
    const now = performance.now();
    if (now - last.t >= 1000) {
      $("playFps").textContent = ((frames - last.frames) * 1000 / (now - last.t)).toFixed(1);
      last = { t: now, frames };
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

$("upload").onclick = () => streamFile().catch((e) => logError(String(e)));
$("mic").onclick = () => streamMic().catch((e) => logError(String(e)));
