// The gateway's status page (gateway/ops/status_page.py): fills the numbers from /status and /status/dashboard every
// 2 s, draws the charts of /status/dashboard's per-second series on <canvas>, and runs the test player (hls.js or
// dash.js, both served from /static/ by the gateway itself).
//
// Everything that comes from the server is written with textContent, never as HTML: paths, error messages and
// stream names are chosen by clients and publishers. window.__statusPage exposes the page's state to the e2e test.
"use strict";
(function () {
  const POLL_MS = 2000;
  const version = document.body.dataset.version || "";
  const AUDIENCE_EVERY = 5;  // polls between two /status/audience reads (per-minute series: every 10 s is plenty)
  const state = { ready: false, polls: 0, status: null, dashboard: null, audience: null,
                  player: { kind: null, url: null, errors: [], fatal: false, started: false } };
  window.__statusPage = state;

  function $(id) { return document.getElementById(id); }

  function show(id, value, raw) {
    const el = $(id);
    if (!el) return;
    el.textContent = String(value);
    el.dataset.value = String(raw === undefined ? value : raw);
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let x = Number(n) || 0;
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i += 1; }
    return (i ? x.toFixed(1) : String(x)) + " " + units[i];
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (className) td.className = className;
    row.appendChild(td);
  }

  function renderStatus(s) {
    const c = s.segment_cache || {};
    const lookups = (c.hits || 0) + (c.misses || 0) + (c.coalesced || 0);
    const ratio = lookups ? c.hits / lookups : null;
    show("cache-hit-ratio", ratio === null ? "–" : (100 * ratio).toFixed(1) + " %", ratio === null ? "" : ratio);
    for (const k of ["hits", "misses", "coalesced", "evictions", "entries"]) show("cache-" + k, c[k] || 0);
    show("cache-bytes", bytes(c.bytes), c.bytes || 0);
    show("cache-capacity", bytes(c.capacity), c.capacity || 0);
    const m = s.metadata_cache || {};
    show("meta-hits", m.hits || 0);
    show("meta-misses", m.misses || 0);
    show("meta-entries", m.entries || 0);
    const r = s.requests || {};
    for (const k of ["2xx", "3xx", "4xx", "5xx"]) show("req-" + k, r[k] || 0);
    show("uptime", duration(s.uptime_seconds || 0), s.uptime_seconds || 0);
  }

  function cells(tbodyId, rows) {
    const body = $(tbodyId);
    body.replaceChildren();
    for (const values of rows) {
      const row = document.createElement("tr");
      for (const v of values) {
        if (Array.isArray(v)) cell(row, v[0], v[1]); else cell(row, v === null || v === undefined ? "–" : v);
      }
      body.appendChild(row);
    }
  }

  function sum(a) { let t = 0; for (const x of a) t += x; return t; }

  // ---- charts: drawn by hand on <canvas> (no library, no CDN); y from 0 to the series' max, x = the last 10 min ----

  const COLORS = ["#1f6feb", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f"];

  function chart(id, series, opts) {
    const canvas = $(id);
    if (!canvas) return;
    if (canvas.clientWidth && canvas.width !== canvas.clientWidth) canvas.width = canvas.clientWidth;  // no stretching
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, left = 76, bottom = 16, top = 6;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    let max = opts.max || 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    if (!max) max = 1;
    // axes and the max label
    ctx.strokeStyle = "#dde2e7";
    ctx.fillStyle = "#6b7480";
    ctx.beginPath();
    ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - 4, h - bottom);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(opts.format(max), left - 4, top + 10);
    ctx.fillText(opts.format(0), left - 4, h - bottom);
    ctx.textAlign = "left";
    ctx.fillText("-" + Math.round(opts.span / 60) + " min", left + 2, h - 3);
    ctx.textAlign = "right";
    ctx.fillText("now", w - 4, h - 3);
    const n = opts.points;
    const x = function (i) { return left + (w - 4 - left) * (n <= 1 ? 1 : i / (n - 1)); };
    const y = function (v) { return h - bottom - (h - bottom - top) * v / max; };
    series.forEach(function (s, k) {
      ctx.strokeStyle = s.color || COLORS[k % COLORS.length];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      const offset = n - s.values.length;  // a shorter series ends at "now"
      ctx.fillStyle = ctx.strokeStyle;
      s.values.forEach(function (v, i) {
        if (v === null) { pen = false; return; }
        if (pen) ctx.lineTo(x(i + offset), y(v)); else ctx.moveTo(x(i + offset), y(v));
        const next = s.values[i + 1];
        const alone = !pen && (next === null || next === undefined);
        if (alone) ctx.fillRect(x(i + offset) - 2, y(v) - 2, 4, 4);  // a lone point: a dot
        pen = true;
      });
      ctx.stroke();
      if (s.label) {
        ctx.fillStyle = ctx.strokeStyle;
        ctx.textAlign = "left";
        ctx.fillText(s.label, left + 6 + 150 * k, top + 10);
      }
    });
    canvas.dataset.drawn = String(series.length);
    canvas.dataset.max = String(max);
  }

  function bits(n) {
    const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    let i = 0, x = Number(n) || 0;
    while (x >= 1000 && i < units.length - 1) { x /= 1000; i += 1; }
    return (i ? x.toFixed(1) : String(Math.round(x))) + " " + units[i];
  }

  function renderCharts(d) {
    const s = d.series || {};
    const req = s.requests || [], out = s.bytes || [], hits = s.hits || [], misses = s.misses || [];
    const span = req.length;
    chart("chart-requests", [{ values: req }, { values: s.errors || [], color: COLORS[1] }],
          { points: span, span: span, format: function (v) { return String(Math.round(v)); } });
    chart("chart-egress", [{ values: out.map(function (b) { return b * 8; }) }],
          { points: span, span: span, format: bits });
    const ratio = [];  // 10-second bins: one second holds too few lookups to say much
    for (let i = 0; i + 10 <= hits.length; i += 10) {
      const h = sum(hits.slice(i, i + 10)), m = sum(misses.slice(i, i + 10));
      ratio.push(h + m ? 100 * h / (h + m) : null);
    }
    chart("chart-hit-ratio", [{ values: ratio }],
          { points: ratio.length, span: span, max: 100, format: function (v) { return Math.round(v) + " %"; } });
    show("rate-now", sum(req.slice(-11, -1)) / 10 + " req/s", sum(req.slice(-11, -1)) / 10);
    show("egress-now", bits(sum(out.slice(-11, -1)) * 8 / 10), sum(out.slice(-11, -1)) * 8 / 10);
    show("dash-worker", d.worker + " (pid " + d.pid + ")", d.worker);  // --workers N: each has its own numbers
    show("win-requests", sum(req));
    show("win-errors", sum(s.errors || []));
    show("win-bytes", bytes(sum(out)), sum(out));
    const live = (d.live || []).filter(function (st) { return st.ingest && st.ingest.bps.length; });
    chart("chart-ingest", live.map(function (st) { return { values: st.ingest.bps, label: st.stream }; }),
          { points: span, span: span, format: bits });
  }

  function renderDashboard(d) {
    cells("live-streams", (d.live || []).map(function (st) {
      return [st.stream, st.publishing ? "yes" : "no", st.rtmp_players, st.hls_viewers, st.dash_viewers,
        Object.entries(st.qualities || {}).map(function (e) { return e[0] + ": " + e[1]; }).join(", "),
        Object.entries(st.transcode || {}).map(function (e) {
          return e[0] + ": " + Math.round(e[1] * 100) + "%";
        }).join(", "),
        st.publisher, st.encoder, st.uptime === null || st.uptime === undefined ? null : duration(st.uptime),
        [st.video_codec, st.audio_codec].filter(Boolean).join(" + "),
        st.width && st.height ? st.width + "x" + st.height : null,
        st.bitrate === null || st.bitrate === undefined ? null : bits(st.bitrate)];
    }));
    $("live-none").hidden = (d.live || []).length > 0;
    cells("recent-errors", (d.errors || []).map(function (e) {
      return [new Date(e.time * 1000).toISOString().slice(11, 19), [e.status, e.status >= 500 ? "error" : ""],
        [e.method + " " + e.url, "path"], e.message, e.code];
    }));
    $("errors-none").hidden = (d.errors || []).length > 0;
    cells("latency", Object.entries(d.latency || {}).map(function (e) {
      return [e[0], e[1].count, e[1].p50_ms, e[1].p95_ms];
    }));
    cells("busiest", (d.busiest || []).map(function (b) { return [[b.entry, "path"], b.count]; }));
    renderCharts(d);
  }

  // ---- audience: the players' CMCD reports per stream and minute (/status/audience, docs/analytics.md) ----

  function renderAudience(d) {
    const streams = d.streams || [];
    $("audience-none").hidden = streams.length > 0;
    cells("audience", streams.map(function (s) {
      const players = {};
      for (const m of s.minutes) for (const p in m.by_player) players[p] = Math.max(players[p] || 0, m.by_player[p]);
      return [[s.stream, "path"], s.totals.sessions, bytes(s.totals.bytes), s.totals.rebuffer_events,
        Object.entries(players).map(function (e) { return e[0] + ": " + e[1]; }).join(", ")];
    }));
    const select = $("audience-stream");
    const chosen = select.value;
    while (select.firstChild) select.removeChild(select.firstChild);
    for (const s of streams) {
      const option = document.createElement("option");
      option.value = s.stream;
      option.textContent = s.stream;  // chosen by whoever named the file or stream: text only
      select.appendChild(option);
    }
    if (streams.some(function (s) { return s.stream === chosen; })) select.value = chosen;
    const stream = streams.find(function (s) { return s.stream === select.value; }) || streams[0];
    const bucket = d.bucket_seconds || 60, n = Math.max(1, Math.round((d.to - d.from) / bucket));
    const times = [];
    for (let i = 0; i < n; i++) times.push(d.from + i * bucket);
    const byT = {};
    for (const m of (stream ? stream.minutes : [])) byT[m.t] = m;
    const pick = function (f, missing) { return times.map(function (t) { return byT[t] ? f(byT[t]) : missing; }); };
    const opts = function (format, max) { return { points: n, span: n * bucket, format: format, max: max }; };
    const count = function (v) { return String(Math.round(v)); };
    chart("chart-viewers", [{ values: pick(function (m) { return m.sessions; }, 0) }], opts(count));
    const renditions = {};
    for (const t in byT) for (const r in byT[t].by_rendition) renditions[r] = (renditions[r] || 0) + byT[t].by_rendition[r];
    const top = Object.keys(renditions).sort(function (a, b) { return renditions[b] - renditions[a]; }).slice(0, 6);
    chart("chart-quality", top.map(function (r) {
      return { label: r, values: pick(function (m) { return m.by_rendition[r] || 0; }, 0) };
    }), opts(count));
    chart("chart-rebuffer", [{ values: pick(function (m) {
      return m.rebuffer.ratio === null ? null : 100 * m.rebuffer.ratio; }, null) }],
      opts(function (v) { return v.toFixed(1) + " %"; }));
    chart("chart-startup", [{ values: pick(function (m) { return m.startup_seconds.p50; }, null) }],
      opts(function (v) { return v.toFixed(2) + " s"; }));
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return response.json();
  }

  async function poll() {
    try {
      const audience = state.polls % AUDIENCE_EVERY === 0 ? getJSON("/status/audience") : null;
      const both = await Promise.all([getJSON("/status"), getJSON("/status/dashboard")]);
      renderStatus(both[0]);
      renderDashboard(both[1]);
      if (audience) {
        state.audience = await audience;
        renderAudience(state.audience);
      }
      state.status = both[0];
      state.dashboard = both[1];
      state.polls += 1;
      state.ready = true;
      $("poll-error").textContent = "";
    } catch (e) {
      $("poll-error").textContent = "update failed: " + e.message;
    }
    setTimeout(poll, POLL_MS);
  }

  // ---- the test player ----

  const video = $("player-video");
  let current = null; // { destroy() } of the running player

  function loadScript(name) {
    return new Promise(function (resolve, reject) {
      if (document.querySelector('script[data-lib="' + name + '"]')) return resolve();
      const s = document.createElement("script");
      s.src = "/static/" + name + "?v=" + encodeURIComponent(version);
      s.dataset.lib = name;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("could not load " + name)); };
      document.head.appendChild(s);
    });
  }

  function playerError(err) {
    state.player.errors.push(err);
    if (err.fatal) state.player.fatal = true;
    $("player-status").textContent = (err.fatal ? "error: " : "warning: ") + err.source + " " + err.details +
      (err.message ? " (" + err.message + ")" : "");
  }

  // A store path becomes the gateway URL of its master playlist / MPD; a URL is used as it is (http/https only).
  function resolveSource(text, kind) {
    text = text.trim();
    if (!text) throw new Error("enter a store path or a URL");
    let url;
    if (/^[a-z][a-z0-9+.-]*:/i.test(text) || text.startsWith("/")) {
      url = new URL(text, location.href);
      if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("only http(s) URLs can be played");
    } else {
      const path = text.split("/").map(function (s) { return encodeURIComponent(s).replace(/%2C/gi, ","); }).join("/");
      url = new URL(kind === "dash" ? "/dash/" + path + "/manifest.mpd" : "/hls/" + path + "/master.m3u8", location.href);
    }
    if (kind === "auto") kind = /\.mpd$/i.test(url.pathname) || /\/format\/mpegdash\//.test(url.pathname) ? "dash" : "hls";
    return { url: url.href, kind: kind };
  }

  function startPlayback() {
    const p = video.play();
    if (p && p.catch) p.catch(function (e) { playerError({ source: "video", details: "play() rejected", message: e.message, fatal: false }); });
  }

  async function playHls(url) {
    await loadScript("hls.min.js");
    if (!window.Hls || !Hls.isSupported()) {
      if (video.canPlayType("application/vnd.apple.mpegurl")) { video.src = url; startPlayback(); return { destroy: function () { video.removeAttribute("src"); video.load(); } }; }
      throw new Error("this browser has no Media Source Extensions");
    }
    const hls = new Hls();
    hls.on(Hls.Events.ERROR, function (event, data) {
      playerError({ source: "hls.js", type: data.type, details: data.details, fatal: !!data.fatal });
    });
    hls.on(Hls.Events.MANIFEST_PARSED, function (event, data) {
      $("player-status").textContent = data.levels.length + " level(s)";
      startPlayback();
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    return { destroy: function () { hls.destroy(); } };
  }

  async function playDash(url) {
    await loadScript("dash.all.min.js");
    const player = dashjs.MediaPlayer().create();
    player.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING } });
    player.on(dashjs.MediaPlayer.events.ERROR, function (e) {
      const err = e.error || {};
      playerError({ source: "dash.js", details: "code " + err.code, message: String(err.message || ""), fatal: true });
    });
    player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, function () {
      $("player-status").textContent = player.getTracksFor("video").length + " video track(s)";
    });
    player.initialize(video, url, true);
    return { destroy: function () { player.reset(); } };
  }

  async function play(text, kind) {
    if (current) { try { current.destroy(); } catch (e) { /* already gone */ } current = null; }
    Object.assign(state.player, { kind: null, url: null, errors: [], fatal: false, started: false });
    $("player-status").textContent = "";
    let source;
    try {
      source = resolveSource(text, kind);
    } catch (e) {
      playerError({ source: "page", details: "bad source", message: e.message, fatal: true });
      return;
    }
    state.player.kind = source.kind;
    state.player.url = source.url;
    $("player-url").textContent = source.url;
    try {
      current = source.kind === "dash" ? await playDash(source.url) : await playHls(source.url);
      state.player.started = true;
    } catch (e) {
      playerError({ source: "page", details: e.name || "Error", message: String(e.message || e), fatal: true });
    }
  }

  video.addEventListener("error", function () {
    const e = video.error;
    if (state.player.url) playerError({ source: "video", details: e ? "MEDIA_ERR_" + e.code : "unknown", message: e ? e.message : "", fatal: true });
  });

  $("audience-stream").addEventListener("change", function () {
    if (state.audience) renderAudience(state.audience);
  });
  $("player-form").addEventListener("submit", function (event) {
    event.preventDefault();
    play($("player-src").value, $("player-kind").value);
  });
  for (const button of document.querySelectorAll("button.quick")) {
    button.addEventListener("click", function () {
      $("player-src").value = button.dataset.src;
      $("player-kind").value = button.dataset.kind;
      play(button.dataset.src, button.dataset.kind);
    });
  }

  poll();
})();
