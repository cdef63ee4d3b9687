#!/usr/bin/env node
// Drives the gateway's status page (GET /) in Debian's headless Chromium and prints ONE JSON line on stdout.
//
//   node status_page.mjs --url http://127.0.0.1:PORT/ [--src TEXT --kind auto|hls|dash | --click CSS_SELECTOR]
//                        [--seconds 2] [--timeout 40] [--screenshot page.png] [--video-shot video.png]
//                        [--chromium /usr/bin/chromium]
//
// 1. opens the page and waits for its first poll of /status (window.__statusPage.ready), then reads every number
//    the dashboard shows (elements with data-value), the quick links and the recent-error rows as text;
// 2. starts the built-in player: types --src into the form and clicks Play, or clicks --click (a quick link);
// 3. waits until the video's currentTime >= --seconds, a fatal player error or --timeout;
// 4. saves screenshots (the whole page, and the video element alone).
// It also reports every JavaScript dialog (an executed XSS payload would open one) and page error. It always exits
// 0 once it printed its line: the caller (pytest) decides what is a failure. Used by tests/e2e/test_status_page.py.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
];
const POLL_MS = 200;

async function main() {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      src: { type: "string" },
      kind: { type: "string", default: "auto" },
      click: { type: "string" },
      seconds: { type: "string", default: "2" },
      timeout: { type: "string", default: "40" },
      screenshot: { type: "string" },
      "video-shot": { type: "string" },
      chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
    },
  });
  const started = Date.now();
  const timeoutMs = Number(values.timeout) * 1000;
  const result = { ok: false, reason: "", dialogs: [], pageErrors: [], console: [], failedRequests: [] };
  if (!values.url) {
    result.reason = "usage: node status_page.mjs --url BASE/ [--src TEXT | --click SELECTOR] ...";
    return result;
  }
  const userDataDir = await mkdtemp(join(tmpdir(), "gateway-status-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: values.chromium, args: CHROMIUM_ARGS, headless: true, timeout: 30_000,
      viewport: { width: 1280, height: 900 },
    });
    result.browserVersion = context.browser() ? context.browser().version() : null;
    const page = context.pages()[0] || (await context.newPage());
    page.on("dialog", (dialog) => { result.dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
    page.on("pageerror", (err) => { result.pageErrors.push(String(err.message || err)); });
    page.on("console", (msg) => {
      if ((msg.type() === "error" || msg.type() === "warning") && result.console.length < 50) {
        result.console.push(`${msg.type()}: ${msg.text()}`);
      }
    });
    page.on("requestfailed", (request) => {
      if (result.failedRequests.length < 50) result.failedRequests.push(`${request.url()} ${request.failure()?.errorText}`);
    });

    const response = await page.goto(values.url, { waitUntil: "load", timeout: 15_000 });
    result.pageStatus = response ? response.status() : null;
    result.csp = response ? response.headers()["content-security-policy"] || null : null;
    await page.waitForFunction(() => window.__statusPage && window.__statusPage.ready, null, { timeout: 15_000 });

    result.dashboard = await page.evaluate(() => {
      const shown = {};
      for (const el of document.querySelectorAll("[data-value]")) shown[el.id] = { text: el.textContent, value: el.dataset.value };
      const rows = (id) => [...document.querySelectorAll(`#${id} tr`)].map((tr) => [...tr.children].map((td) => td.textContent));
      return {
        shown,
        statusUsed: window.__statusPage.status,
        quickLinks: [...document.querySelectorAll("#quick-links li")].map((li) => li.textContent.trim()),
        errorRows: rows("recent-errors"),
        liveRows: rows("live-streams"),
        images: document.querySelectorAll("img").length,
        svgs: document.querySelectorAll("svg").length,
        injected: document.querySelectorAll("[id^=xss]").length,
        scripts: [...document.querySelectorAll("script")].map((s) => s.getAttribute("src")),
      };
    });

    if (values.click) {
      await page.click(values.click);
    } else if (values.src !== undefined) {
      await page.fill("#player-src", values.src);
      await page.selectOption("#player-kind", values.kind);
      await page.click("#player-play");
    }
    if (values.click || values.src !== undefined) {
      const seconds = Number(values.seconds);
      let state;
      for (;;) {
        state = await page.evaluate(() => {
          const v = document.getElementById("player-video");
          return { currentTime: v.currentTime, paused: v.paused, videoWidth: v.videoWidth, videoHeight: v.videoHeight,
                   readyState: v.readyState, player: JSON.parse(JSON.stringify(window.__statusPage.player)),
                   shownUrl: document.getElementById("player-url").textContent };
        });
        if (state.player.fatal) { result.reason = "fatal player error"; break; }
        if (state.currentTime >= seconds) { result.ok = true; break; }
        if (Date.now() - started >= timeoutMs) {
          result.reason = `timed out at currentTime ${state.currentTime.toFixed(3)}`;
          break;
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
      result.playback = state;
      if (values["video-shot"]) {
        await page.evaluate(() => document.getElementById("player-video").pause());
        await page.locator("#player-video").screenshot({ path: values["video-shot"] });
      }
    } else {
      result.ok = true;
    }
    if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
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
  out = { ok: false, reason: "harness exception: " + String(e.stack || e), dialogs: [], pageErrors: [] };
}
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
