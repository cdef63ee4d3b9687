#!/usr/bin/env node
// Reads the status page's dashboard (GET /) in Debian's headless Chromium and prints ONE JSON line on stdout.
//
//   node status_dashboard.mjs --url http://127.0.0.1:PORT/ [--polls 2] [--timeout 40] [--screenshot page.png]
//                             [--chromium /usr/bin/chromium]
//
// Waits for --polls polls of /status/dashboard (window.__statusPage), then reports: the rows of every table as text,
// the quick links (and which are flagged broken, which offer a player), each chart canvas's drawn pixels (read back
// from the canvas), the dashboard JSON the page drew from, page errors and dialogs; saves a full-page screenshot.
// Used by tests/e2e/test_status_dashboard.py (status_page.mjs, the player half, is used by test_status_page.py).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync"];

async function main() {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      polls: { type: "string", default: "2" },
      timeout: { type: "string", default: "40" },
      screenshot: { type: "string" },
      chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
    },
  });
  const result = { ok: false, reason: "", dialogs: [], pageErrors: [] };
  const userDataDir = await mkdtemp(join(tmpdir(), "gateway-dashboard-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: values.chromium, args: CHROMIUM_ARGS, headless: true, timeout: 30_000,
      viewport: { width: 1280, height: 900 },
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("dialog", (dialog) => { result.dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
    page.on("pageerror", (err) => { result.pageErrors.push(String(err.message || err)); });
    await page.goto(values.url, { waitUntil: "load", timeout: 15_000 });
    const polls = Number(values.polls);
    await page.waitForFunction((n) => window.__statusPage && window.__statusPage.polls >= n, polls,
                               { timeout: Number(values.timeout) * 1000 });
    result.page = await page.evaluate(() => {
      const rows = (id) => [...document.querySelectorAll(`#${id} tr`)].map((tr) => [...tr.children].map((td) => td.textContent));
      const shown = {};
      for (const el of document.querySelectorAll("[data-value]")) shown[el.id] = { text: el.textContent, value: el.dataset.value };
      const canvases = {};
      for (const c of document.querySelectorAll("canvas")) {
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let drawn = 0, colored = 0;  // colored: the series' strokes (axes and labels are grey)
        for (let i = 0; i < data.length; i += 4) {
          if (data[i + 3] === 0) continue;
          drawn += 1;
          if (Math.max(data[i], data[i + 1], data[i + 2]) - Math.min(data[i], data[i + 1], data[i + 2]) > 60) colored += 1;
        }
        canvases[c.id] = { drawn, colored, series: Number(c.dataset.drawn || 0), max: Number(c.dataset.max || 0) };
      }
      return {
        shown, canvases,
        tables: Object.fromEntries(["latency", "busiest", "live-streams", "recent-errors", "audience"].map(
          (id) => [id, rows(id)])),
        quickLinks: [...document.querySelectorAll("#quick-links li")].map((li) => ({
          text: li.textContent.trim(), broken: li.dataset.broken === "1",
          players: li.querySelectorAll("button.quick, a").length })),
        header: document.querySelector("header").textContent,
        dashboard: window.__statusPage.dashboard,
        audience: window.__statusPage.audience,
        audienceStream: document.getElementById("audience-stream").value,
      };
    });
    if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
    result.ok = true;
    return result;
  } finally {
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
