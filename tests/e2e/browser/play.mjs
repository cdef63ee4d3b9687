#!/usr/bin/env node
// Plays one manifest in Debian's headless Chromium and prints what happened as ONE JSON line on stdout.
//
//   node play.mjs --player http://127.0.0.1:PORT/player.html [--kind hls] [--seconds 3] [--timeout 40]
//                 [--config '{"startLevel":0}'] [--chromium /usr/bin/chromium] [--screenshot PNG] MANIFEST_URL
//
// The page (player.html, served by tests/e2e/browser_player.py) plays MANIFEST_URL with the player library of
// --kind; this script waits until video.currentTime >= --seconds, a fatal player error, the end of the stream, or
// --timeout seconds (counted from this script's start, browser launch included), then reports {ok, currentTime, totalVideoFrames, droppedVideoFrames, errors, levels, audioTracks, duration, ...}.
// It always exits 0 once it has printed its line: the caller (pytest) decides what is a failure.
//
// The browser is the system's Chromium, driven by playwright-core: no browser is ever downloaded.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];
const POLL_MS = 200;
const AFTER_FATAL_MS = 500; // let the errors that follow a fatal one arrive before reporting

function finiteOrNull(x) {
  return typeof x === "number" && Number.isFinite(x) ? x : null;
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      player: { type: "string" },
      kind: { type: "string", default: "hls" },
      seconds: { type: "string", default: "3" },
      timeout: { type: "string", default: "40" },
      config: { type: "string" },
      text: { type: "boolean", default: false },
      chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
      screenshot: { type: "string" },
    },
  });
  const src = positionals[0];
  const seconds = Number(values.seconds);
  const timeoutMs = Number(values.timeout) * 1000;
  const started = Date.now();
  const result = {
    ok: false,
    reason: "",
    currentTime: 0,
    totalVideoFrames: 0,
    droppedVideoFrames: 0,
    errors: [],
    levels: 0,
    audioTracks: 0,
    duration: null,
    kind: values.kind,
    src: src || null,
  };
  if (!src || !values.player || !(seconds >= 0) || !(timeoutMs > 0)) {
    result.reason = "usage: node play.mjs --player PLAYER_URL [--kind hls] [--seconds N] [--timeout S] MANIFEST_URL";
    result.errors.push({ source: "harness", type: "usage", details: result.reason, fatal: true });
    return result;
  }

  const page_url = new URL(values.player);
  page_url.searchParams.set("src", src);
  page_url.searchParams.set("kind", values.kind);
  if (values.config) page_url.searchParams.set("config", values.config);
  if (values.text) page_url.searchParams.set("text", "1");

  const userDataDir = await mkdtemp(join(tmpdir(), "gateway-e2e-chromium-"));
  let context;
  try {
    try {
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: values.chromium,
        args: CHROMIUM_ARGS,
        headless: true,
        timeout: 30_000,
      });
    } catch (e) {
      result.reason = "could not launch Chromium";
      result.errors.push({ source: "harness", type: "launch", details: values.chromium, message: String(e.message || e),
                           fatal: true });
      return result;
    }
    result.browserVersion = context.browser() ? context.browser().version() : null;
    const page = context.pages()[0] || (await context.newPage());
    const consoleLines = [];
    page.on("console", (msg) => {
      if (msg.type() === "error" || msg.type() === "warning") {
        if (consoleLines.length < 50) consoleLines.push(`${msg.type()}: ${msg.text()}`);
      }
    });
    page.on("pageerror", (err) => {
      result.errors.push({ source: "page", type: "pageerror", details: err.name, message: err.message, fatal: false });
    });
    result.console = consoleLines;

    try {
      const response = await page.goto(page_url.href, { waitUntil: "load", timeout: Math.min(timeoutMs, 15_000) });
      if (!response || !response.ok()) throw new Error(`player page answered ${response ? response.status() : "nothing"}`);
    } catch (e) {
      result.reason = "could not open the player page";
      result.errors.push({ source: "harness", type: "playerPage", details: page_url.href, message: String(e.message || e),
                           fatal: true });
      return result;
    }

    let state = null;
    let fatalSince = null;
    for (;;) {
      state = await page.evaluate(() => {
        const v = document.getElementById("video");
        const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
        const p = window.__player || {};
        return {
          currentTime: v.currentTime,
          duration: v.duration,
          totalVideoFrames: q ? q.totalVideoFrames : 0,
          droppedVideoFrames: q ? q.droppedVideoFrames : 0,
          videoWidth: v.videoWidth,
          videoHeight: v.videoHeight,
          paused: v.paused,
          ended: v.ended,
          // Chromium's decoded byte counters: non-zero audio proves the audio track was decoded, not only video.
          videoDecodedBytes: v.webkitVideoDecodedByteCount || 0,
          audioDecodedBytes: v.webkitAudioDecodedByteCount || 0,
          readyState: v.readyState,
          player: JSON.parse(JSON.stringify(p)),
        };
      });
      const now = Date.now();
      if (state.player.fatal) {
        if (fatalSince === null) fatalSince = now;
        else if (now - fatalSince >= AFTER_FATAL_MS) {
          result.reason = "fatal player error";
          break;
        }
      } else if (state.currentTime >= seconds) {
        result.ok = true;
        break;
      } else if (state.ended) {
        result.reason = `the stream ended at ${state.currentTime.toFixed(3)} s, before ${seconds} s`;
        break;
      }
      if (now - started >= timeoutMs) {
        result.reason = `timed out after ${values.timeout} s at currentTime ${state.currentTime.toFixed(3)}`;
        break;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }

    const p = state.player;
    Object.assign(result, {
      currentTime: state.currentTime,
      totalVideoFrames: state.totalVideoFrames,
      droppedVideoFrames: state.droppedVideoFrames,
      errors: [...(p.errors || []), ...result.errors],
      levels: p.levels || 0,
      levelInfo: p.levelInfo || [],
      audioTracks: p.audioTracks || 0,
      duration: finiteOrNull(state.duration),
      live: state.duration === Infinity,
      videoWidth: state.videoWidth,
      videoHeight: state.videoHeight,
      paused: state.paused,
      ended: state.ended,
      videoDecodedBytes: state.videoDecodedBytes,
      audioDecodedBytes: state.audioDecodedBytes,
      readyState: state.readyState,
      support: p.support || null,
      events: p.events || [],
      subtitleTracks: p.subtitleTracks || [],
      textTracks: p.textTracks || [],
      bufferedStart: p.bufferedStart ?? null,
      drm: p.drm || null,
      latency: p.latency || [],
      clock: p.clock || null,  // player.html?clock=1 (gateway bench live)
    });
    if (values.screenshot && state.videoWidth) {
      // What a viewer sees, from the compositor: a canvas cannot read EME-decrypted frames back. Paused first, so
      // the frame on screen is the one at the reported time.
      try {
        result.screenshotTime = await page.evaluate(() => {
          const v = document.getElementById("video");
          v.pause();
          return v.currentTime;
        });
        await page.locator("#video").screenshot({ path: values.screenshot, timeout: 10_000 });
        result.screenshot = values.screenshot;
      } catch (e) {
        result.screenshotError = String(e.message || e);
      }
    }
    return result;
  } finally {
    result.elapsed = (Date.now() - started) / 1000;
    if (context) await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
}

let out;
try {
  out = await main();
} catch (e) {
  out = { ok: false, reason: "harness exception", currentTime: 0, totalVideoFrames: 0, droppedVideoFrames: 0,
          errors: [{ source: "harness", type: "exception", details: e.name || "Error", message: String(e.stack || e),
                     fatal: true }],
          levels: 0, audioTracks: 0, duration: null };
}
// exit once the line is flushed: to a pipe, an exit right after write() cuts it at 64 KiB (a long clock=1 run)
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
