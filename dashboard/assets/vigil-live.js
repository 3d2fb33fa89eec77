/*
 * Vigil nurse station: the live link.
 *
 * Opens the site's websocket, applies the snapshot and the numbered deltas to the
 * tiles, and keeps every value honest about its age:
 *  - a value past its freshness window greys out and shows how old it is;
 *  - no message for LINK_TIMEOUT_MS (the server sends a heartbeat every 2 s) or a
 *    closed socket raises the full-width banner and greys every tile;
 *  - the socket reconnects forever, backoff doubling up to 30 s, and every
 *    reconnect starts from a fresh snapshot;
 *  - a gap in sequence numbers asks the server for a fresh snapshot.
 */
(function () {
  "use strict";

  var LINK_TIMEOUT_MS = 5000;
  var BACKOFF_MAX_MS = 30000;
  var FRESH_S = { hr: 10, pr: 10, spo2: 10, nibp: 20 * 60 };

  var link = {
    ws: null,
    siteId: null,
    seq: 0,
    lastMessageAt: 0,
    backoffMs: 1000,
    reconnectTimer: null,
    serverOffsetMs: 0, // server clock minus browser clock
    chairs: {}, // chair_id -> chair state from the snapshot, updated by deltas
  };
  window.vigilLive = link; // inspected by the browser tests

  function serverNow() {
    return Date.now() + link.serverOffsetMs;
  }

  function formatAge(seconds) {
    if (seconds < 60) return Math.max(0, Math.floor(seconds)) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function fmt(value) {
    return String(Math.round(value));
  }

  function tileFor(chairId) {
    return document.querySelector('.tile[data-chair-id="' + chairId + '"]');
  }

  function setVital(tile, code, text, label, receivedTime) {
    var el = tile.querySelector('.vital[data-vital="' + code + '"]');
    if (!el) return;
    el.querySelector(".value").textContent = text;
    if (label) el.querySelector(".label").textContent = label;
    el.dataset.received = receivedTime || "";
    el.classList.toggle("no-value", !receivedTime);
  }

  function renderChair(chair) {
    var tile = tileFor(chair.chair_id);
    if (!tile) return;
    var session = chair.session;
    tile.querySelector(".patient").textContent = session ? session.patient_initials : "";
    tile.querySelector(".phase").textContent = session ? session.phase.replace("_", " ") : "no session";
    tile.classList.toggle("vacant", !session);

    var v = chair.vitals;
    // Heart rate from the ECG when it is there, else the oximeter's pulse rate.
    var rate = v.hr && isFresh(v.hr, FRESH_S.hr) ? ["hr", "HR"] : v.pr ? ["pr", "PR"] : ["hr", "HR"];
    var r = v[rate[0]];
    setVital(tile, "hr", r ? fmt(r.value) : "---", rate[1], r && r.received_time);
    setVital(tile, "spo2", v.spo2 ? fmt(v.spo2.value) : "---", null, v.spo2 && v.spo2.received_time);
    var sys = v.nibp_sys, dia = v.nibp_dia, mean = v.nibp_mean;
    var nibp = sys && dia ? fmt(sys.value) + "/" + fmt(dia.value) + (mean ? " (" + fmt(mean.value) + ")" : "") : "---";
    setVital(tile, "nibp", nibp, null, sys && sys.received_time);
    renderAlarms(tile, chair.alarms || []);
  }

  // IEC 60601-1-8: high red flashing ~2 Hz, medium yellow ~0.5 Hz; technical alarms cyan.
  var RANK = { crisis: 4, high: 3, medium: 2, low: 1 };

  function renderAlarms(tile, alarms) {
    var ordered = alarms.slice().sort(function (a, b) {
      return (b.state === "raised") - (a.state === "raised") ||
        RANK[b.priority] - RANK[a.priority] || Date.parse(b.raised_at) - Date.parse(a.raised_at);
    });
    var top = ordered[0];
    tile.classList.remove("alarm-high", "alarm-medium", "alarm-low", "alarm-technical", "alarm-acknowledged");
    if (top) {
      var level = top.kind === "technical" ? "technical" : top.priority === "crisis" ? "high" : top.priority;
      tile.classList.add("alarm-" + level);
      if (top.state !== "raised") tile.classList.add("alarm-acknowledged");
    }
    tile.dataset.alarmCount = String(ordered.length);
    var status = tile.querySelector(".tile-status");
    status.textContent = "";
    ordered.slice(0, 3).forEach(function (alarm) {
      var line = document.createElement("div");
      line.className = "alarm-line " + alarm.kind + " " + alarm.priority + " " + alarm.state;
      line.dataset.alarmId = alarm.alarm_id;
      line.textContent = alarm.text + (alarm.state === "acknowledged" ? " (ack " + alarm.acknowledged_by + ")" : "");
      status.appendChild(line);
    });
    if (ordered.length > 3) {
      var more = document.createElement("div");
      more.className = "alarm-more";
      more.textContent = "+" + (ordered.length - 3) + " more";
      status.appendChild(more);
    }
  }

  function applyAlarm(msg) {
    var chair = link.chairs[msg.chair_id];
    if (!chair) return requestResync();
    var alarms = (chair.alarms || []).filter(function (a) { return a.alarm_id !== msg.alarm.alarm_id; });
    if (msg.alarm.state !== "cleared") alarms.push(msg.alarm);
    chair.alarms = alarms;
    renderChair(chair);
  }

  function isFresh(entry, limitS) {
    return (serverNow() - Date.parse(entry.received_time)) / 1000 <= limitS;
  }

  function refreshAges() {
    var linkUp = link.ws && link.ws.readyState === WebSocket.OPEN &&
      Date.now() - link.lastMessageAt <= LINK_TIMEOUT_MS;
    showLink(linkUp);
    var now = serverNow();
    document.querySelectorAll(".vital").forEach(function (el) {
      var received = el.dataset.received;
      var age = el.querySelector(".age");
      if (!received) {
        age.textContent = "";
        el.classList.remove("stale");
        return;
      }
      var seconds = (now - Date.parse(received)) / 1000;
      var stale = !linkUp || seconds > FRESH_S[el.dataset.vital];
      el.classList.toggle("stale", stale);
      age.textContent = formatAge(seconds) + (el.dataset.vital === "nibp" ? " ago" : "");
    });
  }

  function showLink(up) {
    var banner = document.getElementById("link-banner");
    if (banner) banner.hidden = up;
    var status = document.getElementById("link-status");
    if (status) {
      status.textContent = up ? "live" : "NOT LIVE";
      status.classList.toggle("down", !up);
    }
    document.body.classList.toggle("link-down", !up);
  }

  function applySnapshot(msg) {
    link.seq = msg.seq;
    link.chairs = {};
    var occupied = 0;
    msg.chairs.forEach(function (chair) {
      link.chairs[chair.chair_id] = chair;
      if (chair.session) occupied += 1;
      renderChair(chair);
    });
    var occupancy = document.getElementById("occupancy");
    if (occupancy) occupancy.textContent = occupied + "/" + msg.chairs.length + " chairs";
    if (msg.chairs.some(function (c) { return !tileFor(c.chair_id); })) {
      // The site gained a chair since this page was laid out.
      window.location.reload();
    }
  }

  function applySamples(msg) {
    var chair = link.chairs[msg.chair_id];
    if (!chair) return requestResync();
    msg.samples.forEach(function (s) {
      chair.vitals[s.vital] = s;
    });
    renderChair(chair);
  }

  function requestResync() {
    if (link.ws && link.ws.readyState === WebSocket.OPEN) {
      link.ws.send(JSON.stringify({ type: "resync" }));
    }
  }

  function onMessage(event) {
    var msg = JSON.parse(event.data);
    link.lastMessageAt = Date.now();
    if (msg.server_time) link.serverOffsetMs = Date.parse(msg.server_time) - Date.now();
    if (msg.type === "snapshot") {
      applySnapshot(msg);
    } else if (msg.type === "samples" || msg.type === "alarm") {
      if (msg.seq <= link.seq) return; // already in the snapshot
      if (msg.seq !== link.seq + 1) return requestResync();
      link.seq = msg.seq;
      if (msg.type === "samples") applySamples(msg);
      else applyAlarm(msg);
    } else if (msg.type === "heartbeat") {
      if (msg.seq > link.seq) requestResync(); // a delta went missing
    }
    refreshAges();
  }

  function connect() {
    clearTimeout(link.reconnectTimer);
    if (link.ws) {
      link.ws.onclose = null;
      link.ws.close();
    }
    if (link.siteId === null) return;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + window.location.host + "/ws/sites/" + link.siteId);
    link.ws = ws;
    ws.onopen = function () {
      link.backoffMs = 1000;
    };
    ws.onmessage = onMessage;
    ws.onclose = function () {
      refreshAges();
      link.reconnectTimer = setTimeout(connect, link.backoffMs);
      link.backoffMs = Math.min(link.backoffMs * 2, BACKOFF_MAX_MS);
    };
  }

  // Dash renders the grid after load and again on site changes: follow it.
  function watchGrid() {
    var grid = document.getElementById("grid");
    var siteId = grid ? grid.dataset.siteId : null;
    if (siteId !== link.siteId) {
      link.siteId = siteId;
      link.seq = 0;
      link.backoffMs = 1000;
      connect();
    }
  }

  new MutationObserver(watchGrid).observe(document.documentElement, { childList: true, subtree: true });
  setInterval(refreshAges, 1000);
  document.addEventListener("DOMContentLoaded", watchGrid);
})();
