// The gateway's status page (gateway/ops/status_page.py): fills the numbers from /status and /status/dashboard every
// 2 s, and runs the test player (hls.js or dash.js, both served from /static/ by the gateway itself).
//
// Everything that comes from the server is written with textContent, never as HTML: paths, error messages and
// stream names are chosen by clients and publishers. window.__statusPage exposes the page's state to the e2e test.
"use strict";
(function () {
  const POLL_MS = 2000;
  const version = document.body.dataset.version || "";
  const state = { ready: false, polls: 0, status: null, dashboard: null,
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

  function renderDashboard(d) {
    const live = $("live-streams");
    live.replaceChildren();
    for (const st of d.live || []) {
      const row = document.createElement("tr");
      cell(row, st.stream);
      cell(row, st.publishing ? "yes" : "no");
      cell(row, st.rtmp_players);
      cell(row, st.hls_viewers);
      cell(row, st.dash_viewers);
      cell(row, Object.entries(st.qualities || {}).map(function (e) { return e[0] + ": " + e[1]; }).join(", "));
      cell(row, Object.entries(st.transcode || {}).map(function (e) {
        return e[0] + ": " + Math.round(e[1] * 100) + "%";
      }).join(", "));
      live.appendChild(row);
    }
    $("live-none").hidden = (d.live || []).length > 0;
    const errors = $("recent-errors");
    errors.replaceChildren();
    for (const e of d.errors || []) {
      const row = document.createElement("tr");
      cell(row, new Date(e.time * 1000).toISOString().slice(11, 19));
      cell(row, e.status, e.status >= 500 ? "error" : "");
      cell(row, e.method + " " + e.path, "path");
      cell(row, e.message);
      errors.appendChild(row);
    }
    $("errors-none").hidden = (d.errors || []).length > 0;
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return response.json();
  }

  async function poll() {
    try {
      const both = await Promise.all([getJSON("/status"), getJSON("/status/dashboard")]);
      renderStatus(both[0]);
      renderDashboard(both[1]);
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
