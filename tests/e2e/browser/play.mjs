#!/usr/bin/env node
// Plays one manifest in Debian's headless Chromium and prints what happened as ONE JSON line on stdout.
//
//   node play.mjs --player http://127.0.0.1:PORT/player.html [--kind hls] [--seconds 3] [--timeout 40]
//                 [--config '{"startLevel":0}'] [--chromium /usr/bin/chromium] [--screenshot PNG]
//                 [--cmcd SESSION_ID [--cmcd-mode query|header]] [--level N] [--throttle URL_SUBSTRING:MS] [--network]
//                 MANIFEST_URL
//
// The page (player.html, served by tests/e2e/browser_player.py) plays MANIFEST_URL with the player library of
// --kind; this script waits until video.currentTime >= --seconds, a fatal player error, the end of the stream, or
// --timeout seconds (counted from this script's start, browser launch included), then reports {ok, currentTime, totalVideoFrames, droppedVideoFrames, errors, levels, audioTracks, duration, ...}.
// It always exits 0 once it has printed its line: the caller (pytest) decides what is a failure.
//
// CMCD and traffic (issue 18's analytics are checked against what the page itself saw on the wire):
//   --cmcd SID      the player sends CMCD with session id SID (player.html cmcd=), --cmcd-mode as query or headers
//   --level N       the player plays only its N-th lowest video rendition (player.html level=); the report's `playing`
//                   is the rendition the player says it plays
//   --throttle S:MS the first request whose URL path contains S is held until playback has started plus MS ms, so the
//                   buffer runs dry and the player's next requests carry bs (CMCD buffer starvation); `throttle` says
//                   what was held and when
//   --network       (implied by the three above) `network`: every request to another origin than the page's (the
//                   gateway) with its path, status, body bytes as received (request.sizes().responseBodySize), the
//                   Content-Length answered (`announced`; `aborted` when the player gave up on the body) and
//                   the CMCD it carried, parsed; `network.bytesByPath` sums the bytes per URL path. Before closing,
//                   the script waits (up to 3 s) until no such request is in flight, so that what the gateway
//                   answered and what the page received can be compared.
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
const QUIET_MS = 3000; // at the end, how long to wait for the requests still in flight
const MAX_REQUESTS = 3000; // requests listed one by one in the report (bytesByPath counts them all)

// One CMCD shard (RFC 8941 dictionary as CTA-5004 writes it) into {key: value}: strings unquoted, numbers as numbers,
// a bare key as true, an inner list "(a b)" as its items. Deliberately small and independent of the gateway's parser.
function parseCmcd(text) {
  const out = {};
  const member = /([a-z0-9_.*-]+)(?:=("(?:[^"\\]|\\.)*"|\([^)]*\)|[^,]*))?(?:,|$)/gy;
  let m;
  while (member.lastIndex < text.length && (m = member.exec(text)) !== null) {
    const raw = m[2];
    let value;
    if (raw === undefined) value = true;
    else if (raw.startsWith('"')) value = raw.slice(1, -1).replace(/\\(.)/g, "$1");
    else if (raw.startsWith("(")) value = raw.slice(1, -1).split(" ").filter(Boolean).map(scalar);
    else value = scalar(raw);
    out[m[1]] = value;
  }
  return out;
}

function scalar(raw) {
  if (raw === "?1") return true;
  if (raw === "?0") return false;
  if (raw.startsWith('"')) return raw.slice(1, -1);
  const n = Number(raw);
  return raw !== "" && Number.isFinite(n) ? n : raw;
}

// The CMCD a request carries: {mode, text, values} or null.
function cmcdOf(request) {
  const url = new URL(request.url());
  const query = url.searchParams.get("CMCD");
  if (query !== null) return { mode: "query", text: query, values: parseCmcd(query) };
  const headers = request.headers();
  const shards = ["cmcd-object", "cmcd-request", "cmcd-session", "cmcd-status"].map((h) => headers[h]).filter(Boolean);
  if (!shards.length) return null;
  const text = shards.join(",");
  return { mode: "header", text, values: parseCmcd(text) };
}

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
      cmcd: { type: "string" },
      "cmcd-mode": { type: "string", default: "query" },
      level: { type: "string" },
      throttle: { type: "string" },
      network: { type: "boolean", default: false },
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
  if (values.cmcd) {
    page_url.searchParams.set("cmcd", JSON.stringify({ sid: values.cmcd, mode: values["cmcd-mode"] }));
    result.cmcdSessionId = values.cmcd;
    result.cmcdMode = values["cmcd-mode"];
  }
  if (values.level !== undefined) page_url.searchParams.set("level", values.level);
  let throttle = null;
  if (values.throttle) {
    const cut = values.throttle.lastIndexOf(":");
    throttle = { match: values.throttle.slice(0, cut), ms: Number(values.throttle.slice(cut + 1)), url: null,
                 heldAt: null, playingAt: null, releasedAt: null, error: null };
    if (cut <= 0 || !(throttle.ms >= 0)) {
      result.reason = "usage: --throttle URL_SUBSTRING:MS";
      result.errors.push({ source: "harness", type: "usage", details: result.reason, fatal: true });
      return result;
    }
    result.throttle = throttle;
  }
  const watchNetwork = values.network || !!values.cmcd || values.level !== undefined || !!throttle;

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

    // playback started (the poll loop below sees currentTime move): what a --throttle hold waits for
    let markPlaying;
    const playing = new Promise((resolve) => { markPlaying = resolve; });
    const t0 = Date.now();
    const network = watchNetwork ? { requests: [], bytesByPath: {}, failed: [], inFlight: 0, listed: 0 } : null;
    const pending = new Set();
    const blockedRequests = new WeakSet(); // aborted by the harness while closing, never sent
    if (network) {
      result.network = network;
      const pageOrigin = page_url.origin;
      const entries = new Map();
      page.on("request", (request) => {
        const url = new URL(request.url());
        if (url.origin === pageOrigin || !url.protocol.startsWith("http")) return;
        const entry = { path: url.pathname, method: request.method(), t: Date.now() - t0, status: null, bytes: null,
                        cmcd: cmcdOf(request) };
        entries.set(request, entry);
        network.inFlight += 1;
        if (network.requests.length < MAX_REQUESTS) network.requests.push(entry);
        network.listed += 1;
      });
      const finish = async (request, failed) => {
        const entry = entries.get(request);
        if (!entry) return;
        entries.delete(request);
        try {
          // a request the player abandoned mid-body (dash.js's abandon rule on a slow download) had an answer too:
          // its status and Content-Length are kept (`aborted`), its bytes are not counted as received
          const response = await request.response();
          entry.status = response ? response.status() : null;
          const announced = response ? Number(response.headers()["content-length"]) : NaN;
          if (Number.isFinite(announced)) entry.announced = announced;
          entry.bytes = failed ? 0 : (await request.sizes()).responseBodySize;
          // Chromium's memory cache answered (no request went out): responseBodySize is then 0 minus the headers
          if (entry.bytes < 0) {
            entry.bytes = 0;
            entry.fromCache = true;
          }
        } catch (e) {
          entry.error = String(e.message || e);
        }
        if (failed) {
          entry.error = (request.failure() || {}).errorText || "failed";
          if (blockedRequests.has(request)) entry.blocked = true;
          else network.failed.push(entry);
          if (entry.status !== null && !entry.blocked) entry.aborted = true;
        } else if (entry.bytes) {
          network.bytesByPath[entry.path] = (network.bytesByPath[entry.path] || 0) + entry.bytes;
        }
        network.inFlight -= 1;
      };
      const track = (request, failed) => {
        const p = finish(request, failed);
        pending.add(p);
        p.finally(() => pending.delete(p));
      };
      page.on("requestfinished", (request) => track(request, false));
      page.on("requestfailed", (request) => track(request, true));
    }
    if (throttle) {
      await page.route("**/*", async (route) => {
        const url = route.request().url();
        // the path only: a CMCD query names the next object (nor), which must not match
        if (throttle.url !== null || !new URL(url).pathname.includes(throttle.match)) {
          return route.continue().catch(() => {});
        }
        throttle.url = url;
        throttle.heldAt = Date.now() - t0;
        await playing;
        throttle.playingAt = Date.now() - t0;
        await new Promise((r) => setTimeout(r, throttle.ms));
        throttle.releasedAt = Date.now() - t0;
        await route.continue().catch((e) => { throttle.error = String(e.message || e); });
      });
    }

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
      if (state.currentTime > 0 && !state.paused) markPlaying();
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
      appended: p.appended || [],
      subtitleTracks: p.subtitleTracks || [],
      textTracks: p.textTracks || [],
      bufferedStart: p.bufferedStart ?? null,
      drm: p.drm || null,
      latency: p.latency || [],
      clock: p.clock || null,  // player.html?clock=1 (gateway bench live)
    });
    if (watchNetwork) result.playing = p.playing || null;
    if (result.network) {
      // From here on no new request leaves the page (the player may go on asking: a live playlist, the next segment):
      // each is aborted before it is sent and listed in `blocked`, so the gateway never sees it. The ones in flight
      // are let finish, so both sides count the same requests. (The newest route handler runs first.)
      result.network.blocked = [];
      await page.route("**/*", (route) => {
        const url = new URL(route.request().url());
        if (url.origin === page_url.origin) return route.continue().catch(() => {});
        result.network.blocked.push(url.pathname);
        blockedRequests.add(route.request());
        return route.abort("aborted").catch(() => {});
      });
      markPlaying();  // a hold still waiting for playback is let go
      const quietBy = Date.now() + QUIET_MS;
      while ((result.network.inFlight > 0 || pending.size) && Date.now() < quietBy) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await Promise.allSettled([...pending]);
      result.network.inFlightAtClose = result.network.inFlight;
      delete result.network.inFlight;
    }
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
