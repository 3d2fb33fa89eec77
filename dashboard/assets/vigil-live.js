/*
 * Vigil nurse station: the live link and the grid.
 *
 * Opens the site's websocket, applies the snapshot and the numbered deltas to the
 * tiles, and keeps every value honest about its age:
 *  - a value past its freshness window greys out and shows how old it is;
 *  - a chair whose device has gone quiet says for how long;
 *  - no message for LINK_TIMEOUT_MS (the server sends a heartbeat every 2 s) or a
 *    closed socket raises the full-width banner and greys every tile;
 *  - the socket reconnects forever, backoff doubling up to 30 s, and every
 *    reconnect starts from a fresh snapshot (and re-reads the sparklines);
 *  - a gap in sequence numbers asks the server for a fresh snapshot;
 *  - while the server cannot reach its database (a `status` message), a full-width
 *    banner says so until it is back: values and alarms still arrive, nothing is stored.
 * Values go straight into the tiles' DOM: Dash never re-renders the grid for them.
 */
(function () {
  "use strict";

  var LINK_TIMEOUT_MS = 5000;
  var BACKOFF_MAX_MS = 30000;
  var SPARK_WINDOW_S = 15 * 60;
  var SPARK_BUCKET_S = 5;
  var SPARK_REDRAW_MS = 5000; // sparklines move in 5 s steps: cheap for 30 chairs
  var LATENCY_KEEP = 20000;

  var link = {
    ws: null,
    siteId: null,
    seq: 0,
    lastMessageAt: 0,
    backoffMs: 1000,
    reconnectTimer: null,
    serverOffsetMs: 0, // server clock minus browser clock
    offsetSamples: [],
    chairs: {}, // chair_id -> chair state from the snapshot, updated by deltas
    spark: {}, // chair_id -> {hr: [[t_ms, v]], spo2: [...], pr: [...]} bucket means
    pausedUntil: {}, // session_id -> ms (server clock) when its audio pause ends
    station: { nibp_interval_s: {}, audio_pause_s: 120, device_silent_s: 10 },
    // The protocol's display facts, from the snapshot: freshness, priority order, levels,
    // colours. Nothing here has a default: a missing fact is a bug, logged to the console.
    display: null,
    filters: {},
    sort: "chair",
    latency: [], // receipt by the server → tile painted, ms
    connects: 0,
    database: "ok", // the server's last word on its database: "ok" or "unreachable"
    unstored: {}, // alarm_id -> transitions shown but not yet stored by the server
  };
  window.vigilLive = link; // inspected by the browser tests and the benchmark

  link.takeLatencies = function () {
    var taken = link.latency;
    link.latency = [];
    return taken;
  };

  function serverNow() {
    return Date.now() + link.serverOffsetMs;
  }

  function noteServerTime(iso) {
    // Each message's server_time minus now under-estimates the offset by its transit
    // time, so the largest of the recent estimates is the closest.
    link.offsetSamples.push(Date.parse(iso) - Date.now());
    if (link.offsetSamples.length > 30) link.offsetSamples.shift();
    link.serverOffsetMs = Math.max.apply(null, link.offsetSamples);
  }

  function formatAge(seconds) {
    if (seconds < 60) return Math.max(0, Math.floor(seconds)) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function formatClock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function fmt(value) {
    return String(Math.round(value));
  }

  // A value as alarm texts write it (monitor/alarm_text.py `number`): whole numbers plain,
  // else up to two decimals.
  function numberText(value) {
    if (value === Math.round(value)) return String(Math.round(value));
    return value.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function tileFor(chairId) {
    return document.getElementById("chair-" + chairId);
  }

  function vitalEl(tile, code) {
    return tile.querySelector('.vital[data-vital="' + code + '"]');
  }

  function setVital(tile, code, text, label, receivedTime) {
    var el = vitalEl(tile, code);
    if (!el) return;
    setText(el.querySelector(".value"), text);
    if (label) setText(el.querySelector(".label"), label);
    el.dataset.received = receivedTime || "";
    el.classList.toggle("no-value", !receivedTime);
  }

  var reported = {};
  function missingFact(what) {
    if (reported[what]) return;
    reported[what] = true;
    console.error("vigil: the snapshot's display facts have no " + what);
  }

  function displayFact(table, key) {
    var value = link.display && link.display[table] ? link.display[table][key] : undefined;
    if (value === undefined) missingFact(table + "." + key);
    return value;
  }

  // How old a value of `vital` may be before it is stale, in the chair's phase ("" or
  // undefined: no session). Undefined when the server did not say: never fresh then.
  function freshS(vital, phase) {
    var byPhase = displayFact("fresh_s", vital);
    var key = phase || "no_session";
    var seconds = byPhase ? byPhase[key] : undefined;
    if (byPhase && typeof seconds !== "number") missingFact("fresh_s." + vital + "." + key);
    return seconds;
  }

  function isFresh(entry, limitS) {
    return (serverNow() - Date.parse(entry.received_time)) / 1000 <= limitS;
  }

  // Heart rate from the ECG when it is there, else the oximeter's pulse rate.
  function rateVital(v, phase) {
    return v.hr && isFresh(v.hr, freshS("hr", phase)) ? "hr" : v.pr ? "pr" : "hr";
  }

  // The SpO2 signal-quality mark: the device's flags first, then the perfusion index.
  function signalQuality(v, phase) {
    var q = v.spo2 ? v.spo2.quality || [] : [];
    if (q.indexOf("probe_off") >= 0) return ["poor", "probe off"];
    if (q.indexOf("cuff_inflating") >= 0) return ["poor", "cuff"];
    if (q.indexOf("artifact") >= 0) return ["poor", "artifact"];
    if (q.indexOf("low_perfusion") >= 0) return ["poor", "low signal"];
    if (q.indexOf("questionable") >= 0) return ["poor", "?"];
    if (v.pi && isFresh(v.pi, freshS("pi", phase))) {
      if (v.pi.value <= 0.4) return ["poor", "PI " + v.pi.value.toFixed(1)];
      if (v.pi.value < 1) return ["fair", "PI " + v.pi.value.toFixed(1)];
      return ["good", "PI " + v.pi.value.toFixed(1)];
    }
    return ["", ""];
  }

  function renderChair(chair) {
    var tile = tileFor(chair.chair_id);
    if (!tile) return;
    var session = chair.session;
    setText(tile.querySelector(".patient"), session ? session.patient_initials : "");
    setText(tile.querySelector(".phase"), session ? session.phase.replace("_", " ") : "no session");
    tile.classList.toggle("vacant", !session);
    tile.dataset.phase = session ? session.phase : "";

    var v = chair.vitals;
    var phase = session ? session.phase : "";
    var rate = rateVital(v, phase);
    var r = v[rate];
    setVital(tile, "hr", r ? fmt(r.value) : "---", rate === "pr" ? "PR" : "HR", r && r.received_time);
    // The numeric an alarm on its vital colours (HR or PR, whichever the tile shows).
    vitalEl(tile, "hr").querySelector(".value").dataset.numeric = rate;
    setVital(tile, "spo2", v.spo2 ? fmt(v.spo2.value) : "---", null, v.spo2 && v.spo2.received_time);
    vitalEl(tile, "spo2").querySelector(".value").dataset.numeric = "spo2";
    var sq = signalQuality(v, phase);
    var mark = tile.querySelector(".signal");
    setText(mark, sq[1]);
    mark.className = "signal" + (sq[0] ? " sq-" + sq[0] : "");
    var flagged = v.spo2 && (v.spo2.quality || []).length > 0;
    vitalEl(tile, "spo2").classList.toggle("flagged", !!flagged);
    setNibp(tile, v.nibp_sys, v.nibp_dia, v.nibp_mean);
    refreshAlarmView(chair, tile);
  }

  // NIBP as "sys/dia (mean)", each number its own element so that an alarm on one of them
  // colours that number alone.
  function setNibp(tile, sys, dia, mean) {
    var el = vitalEl(tile, "nibp");
    if (!el) return;
    var value = el.querySelector(".value");
    if (!(sys && dia)) {
      setText(value, "---");
    } else {
      if (!value.querySelector('[data-numeric="nibp_sys"]')) {
        value.innerHTML = '<span data-numeric="nibp_sys"></span>/<span data-numeric="nibp_dia">' +
          '</span><span class="nibp-mean"> (<span data-numeric="nibp_mean"></span>)</span>';
      }
      setText(value.querySelector('[data-numeric="nibp_sys"]'), fmt(sys.value));
      setText(value.querySelector('[data-numeric="nibp_dia"]'), fmt(dia.value));
      setText(value.querySelector('[data-numeric="nibp_mean"]'), mean ? fmt(mean.value) : "");
      value.querySelector(".nibp-mean").hidden = !mean;
    }
    el.dataset.received = (sys && sys.received_time) || "";
    el.classList.toggle("no-value", !(sys && sys.received_time));
  }

  // IEC 60601-1-8: high red flashing ~2 Hz, medium yellow ~0.5 Hz; technical alarms cyan.
  // Orders and levels come from the server (the snapshot's display facts), least urgent first.
  function rankIn(table, name) {
    var order = link.display ? link.display[table] : undefined;
    var rank = order ? order.indexOf(name) : -1;
    if (rank < 0) missingFact(table + " " + name);
    return rank;
  }

  function alarmLevel(alarm) {
    if (alarm.kind === "technical") return "technical";
    return displayFact("priority_level", alarm.priority);
  }

  function orderedAlarms(chair) {
    return (chair.alarms || []).slice().sort(function (a, b) {
      return (b.state === "raised") - (a.state === "raised") ||
        rankIn("priority_order", b.priority) - rankIn("priority_order", a.priority) ||
        Date.parse(b.raised_at) - Date.parse(a.raised_at);
    });
  }

  function severity(chair) {
    var top = orderedAlarms(chair)[0];
    var score = 0;
    if (top) {
      // 20, 30, 40, 50 by level; a raised alarm 5 more than an acknowledged one.
      score = 20 + 10 * rankIn("alarm_levels", alarmLevel(top)) + (top.state === "raised" ? 5 : 0);
    }
    if (chair.disconnected) score = Math.max(score, 15);
    return score;
  }

  // Every alarm of the chair gets a line, most severe first: one per parameter (the server
  // keeps one alarm per alarm group), so a tile never needs "+N more". Lines that do not fit
  // the tile make it denser (fitAlarms).
  function renderAlarms(chair) {
    var tile = tileFor(chair.chair_id);
    if (!tile) return;
    var ordered = orderedAlarms(chair);
    var top = ordered[0];
    tile.classList.remove("alarm-high", "alarm-medium", "alarm-low", "alarm-technical", "alarm-acknowledged");
    if (top) {
      tile.classList.add("alarm-" + alarmLevel(top));
      if (top.state !== "raised") tile.classList.add("alarm-acknowledged");
    }
    tile.dataset.alarmCount = String(ordered.length);
    var status = tile.querySelector(".tile-status");
    status.textContent = "";
    ordered.forEach(function (alarm) {
      var line = document.createElement("div");
      line.className = "alarm-line " + alarm.kind + " " + alarm.priority + " " + alarm.state +
        (alarm.condition_active ? "" : " ended");
      line.dataset.alarmId = alarm.alarm_id;
      status.appendChild(line);
    });
    refreshAlarmView(chair, tile);
    var raised = ordered.filter(function (a) { return a.state === "raised"; });
    tile.querySelector(".ack-button").hidden = raised.length === 0;
    tile.querySelector(".pause-button").hidden =
      raised.length === 0 || raised.every(function (a) { return a.audio_paused; });
    fitAlarms(tile); // last: the buttons take room too
  }

  // An alarm text reads "label value op limit (notes): advice" (monitor/alarm_text.py).
  var ALARM_TEXT = /^(\S+) (\S+) (\S+) (\S+)(?: \(([^)]*)\))?(.*)$/;

  // An alarm's text with the chair's live value in place of the one it was last stored
  // with, and the worst value reached beside it, while its condition lasts and the live
  // value still breaks the tier's limit.
  function alarmLineText(alarm, chair) {
    var text = alarm.text;
    var live = alarm.vital && alarm.condition_active ? chair.vitals[alarm.vital] : null;
    var phase = chair.session ? chair.session.phase : "";
    var parts = live && alarm.value !== null && alarm.limit !== null && !(live.quality || []).length &&
      isFresh(live, freshS(alarm.vital, phase)) ? ALARM_TEXT.exec(text) : null;
    if (parts && parts[2] === numberText(alarm.value) && breaks(parts[3], live.value, alarm.limit)) {
      var lower = parts[3] === "<" || parts[3] === "\u2264";
      var worst = alarm.worst_value === null ? live.value :
        lower ? Math.min(alarm.worst_value, live.value) : Math.max(alarm.worst_value, live.value);
      var notes = (parts[5] ? parts[5].split("; ") : []).filter(function (note) {
        return !/^(lowest|highest) /.test(note);
      });
      if (numberText(worst) !== numberText(live.value)) {
        notes.push((lower ? "lowest " : "highest ") + numberText(worst));
      }
      text = [parts[1], numberText(live.value), parts[3], parts[4]].join(" ") +
        (notes.length ? " (" + notes.join("; ") + ")" : "") + parts[6];
    }
    if (!alarm.condition_active) text += " (ended)";
    if (alarm.state === "acknowledged") text += " (ack " + alarm.acknowledged_by + ")";
    return text;
  }

  function breaks(symbol, value, limit) {
    if (symbol === "<") return value < limit;
    if (symbol === "\u2264") return value <= limit;
    if (symbol === ">") return value > limit;
    if (symbol === "\u2265") return value >= limit;
    return false;
  }

  // Line texts follow the live values; each numeric with an alarm on its vital is drawn in
  // that alarm's priority colour (the snapshot's display facts), the most severe one's.
  function refreshAlarmView(chair, tile) {
    var byId = {};
    var worst = {};
    (chair.alarms || []).forEach(function (alarm) {
      byId[alarm.alarm_id] = alarm;
      if (!alarm.vital || !alarm.condition_active) return;
      var held = worst[alarm.vital];
      if (!held || rankIn("priority_order", alarm.priority) > rankIn("priority_order", held.priority)) {
        worst[alarm.vital] = alarm;
      }
    });
    var lines = tile.querySelectorAll(".alarm-line");
    for (var i = 0; i < lines.length; i++) {
      var alarm = byId[lines[i].dataset.alarmId];
      if (!alarm) continue;
      var text = alarmLineText(alarm, chair);
      setText(lines[i], text);
      if (lines[i].title !== text) lines[i].title = text; // whole, when a dense tile cuts it
    }
    var numerics = tile.querySelectorAll("[data-numeric]");
    for (var j = 0; j < numerics.length; j++) {
      var el = numerics[j];
      var cause = worst[el.dataset.numeric];
      var priority = cause ? cause.priority : "";
      if ((el.dataset.alarmPriority || "") === priority) continue;
      el.dataset.alarmPriority = priority;
      el.classList.toggle("alarm-numeric", !!cause);
      if (cause) el.style.setProperty("--alarm-colour", displayFact("priority_colours", priority));
      else el.style.removeProperty("--alarm-colour");
    }
  }

  // Denser steps until the alarm lines fit inside the tile: no sparklines, then smaller
  // alarm text, then the lines in two columns. A tile is fitted again whenever its vitals
  // or its alarm block change size (a value's age appearing adds a line to the SpO2 cell).
  var DENSEST = 4;
  var resized = typeof ResizeObserver === "function" ? new ResizeObserver(function (entries) {
    var tiles = [];
    entries.forEach(function (entry) {
      var tile = entry.target.closest(".tile");
      if (tile && tiles.indexOf(tile) < 0) tiles.push(tile);
    });
    tiles.forEach(fitAlarms);
  }) : null;

  function fitAlarms(tile) {
    if (resized && !tile.dataset.fitted) {
      tile.dataset.fitted = "watched";
      resized.observe(tile.querySelector(".tile-vitals"));
      resized.observe(tile.querySelector(".tile-alarm"));
    }
    var density = 0;
    tile.dataset.density = "0";
    if (!tile.querySelector(".alarm-line") || tile.offsetParent === null) return;
    while (density < DENSEST && alarmsOverflow(tile)) {
      density += 1;
      tile.dataset.density = String(density);
    }
  }

  function alarmsOverflow(tile) {
    var inner = tile.getBoundingClientRect().bottom - tile.clientTop;
    return tile.querySelector(".tile-alarm").getBoundingClientRect().bottom > inner + 0.5;
  }

  function applyAlarm(msg) {
    var chair = link.chairs[msg.chair_id];
    if (!chair) return requestResync();
    var alarms = (chair.alarms || []).filter(function (a) { return a.alarm_id !== msg.alarm.alarm_id; });
    if (msg.alarm.state !== "cleared") alarms.push(msg.alarm);
    chair.alarms = alarms;
    if (msg.event === "audio_paused") {
      // The server says when the pause ends; older servers did not, hence the default.
      link.pausedUntil[msg.session_id] = msg.audio_paused_until
        ? Date.parse(msg.audio_paused_until)
        : Date.parse(msg.server_time) + link.station.audio_pause_s * 1000;
    } else if (msg.event === "audio_resumed") {
      delete link.pausedUntil[msg.session_id];
    }
    renderAlarms(chair);
    // The tile shows the pause at once, not at the next one-second tick of the clocks.
    refreshChairClock(chair, serverNow());
    if (window.vigilChair) window.vigilChair.onAlarm(msg);
    applyView();
    updateSound();
  }

  // --- sparklines ------------------------------------------------------------------

  function sparkAdd(chairId, vital, tMs, value) {
    var lines = link.spark[chairId] || (link.spark[chairId] = {});
    var line = lines[vital] || (lines[vital] = []);
    var bucket = Math.floor(tMs / 1000 / SPARK_BUCKET_S) * SPARK_BUCKET_S * 1000;
    var last = line[line.length - 1];
    if (last && last[0] === bucket) {
      last[2] += value;
      last[3] += 1;
      last[1] = last[2] / last[3];
    } else if (!last || bucket > last[0]) {
      line.push([bucket, value, value, 1]);
    }
    lines.dirty = true;
  }

  function drawSpark(el, line, now) {
    var from = now - SPARK_WINDOW_S * 1000;
    while (line.length && line[0][0] < from) line.shift();
    var poly = el.firstChild;
    if (!poly) {
      el.innerHTML = '<svg viewBox="0 0 900 40" preserveAspectRatio="none"><polyline points=""/></svg>';
      poly = el.firstChild;
    }
    if (!line.length) {
      poly.firstChild.setAttribute("points", "");
      return;
    }
    var lo = Infinity, hi = -Infinity;
    line.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
    var span = Math.max(hi - lo, el.dataset.spark === "spo2" ? 6 : 20);
    var mid = (hi + lo) / 2;
    lo = mid - span / 2;
    var pts = line.map(function (p) {
      var x = (p[0] - from) / 1000;
      var y = 38 - ((p[1] - lo) / span) * 36;
      return x.toFixed(0) + "," + y.toFixed(1);
    });
    poly.firstChild.setAttribute("points", pts.join(" "));
  }

  function redrawSparks(all) {
    var now = serverNow();
    var from = now - SPARK_WINDOW_S * 1000;
    Object.keys(link.spark).forEach(function (chairId) {
      var lines = link.spark[chairId];
      // Trim every line, drawn or not (a chair shows HR or PR): none may grow for ever.
      ["hr", "pr", "spo2"].forEach(function (vital) {
        var line = lines[vital];
        while (line && line.length && line[0][0] < from) line.shift();
      });
      if (!lines.dirty && !all) return;
      lines.dirty = false;
      var tile = tileFor(chairId);
      if (!tile) return;
      var chair = link.chairs[chairId];
      var rate = chair ? rateVital(chair.vitals) : "hr";
      drawSpark(tile.querySelector('.spark[data-spark="hr"]'), lines[rate] || lines.hr || lines.pr || [], now);
      drawSpark(tile.querySelector('.spark[data-spark="spo2"]'), lines.spo2 || [], now);
    });
  }

  function loadSparklines(siteId) {
    window.vigilGet("/api/v1/sites/" + siteId + "/sparklines?minutes=15&bucket_s=" + SPARK_BUCKET_S)
      .then(function (body) {
        if (String(body.site_id) !== String(link.siteId)) return;
        var live = link.spark;
        link.spark = {};
        body.chairs.forEach(function (chair) {
          var lines = (link.spark[chair.chair_id] = { dirty: true });
          Object.keys(chair.series).forEach(function (vital) {
            var s = chair.series[vital];
            lines[vital] = s.t.map(function (t, i) {
              var at = Math.floor(Date.parse(t) / 1000 / SPARK_BUCKET_S) * SPARK_BUCKET_S * 1000;
              return [at, s.v[i], s.v[i], 1];
            });
          });
        });
        // Buckets that arrived live while the history was on its way stay.
        Object.keys(live).forEach(function (chairId) {
          ["hr", "pr", "spo2"].forEach(function (vital) {
            (live[chairId][vital] || []).forEach(function (p) {
              var lines = link.spark[chairId] || (link.spark[chairId] = {});
              var line = lines[vital] || (lines[vital] = []);
              var last = line[line.length - 1];
              if (!last || p[0] > last[0]) line.push(p.slice());
              lines.dirty = true;
            });
          });
        });
        redrawSparks(true);
      })
      .catch(function () { /* the next snapshot tries again; tiles work without history */ });
  }

  function loadStationState(siteId) {
    window.vigilGet("/api/v1/sites/" + siteId + "/station-state").then(function (body) {
      if (String(body.site_id) !== String(link.siteId)) return;
      link.station = body;
      link.pausedUntil = {};
      Object.keys(body.audio_paused_until).forEach(function (sid) {
        link.pausedUntil[sid] = Date.parse(body.audio_paused_until[sid]);
      });
      refreshAges();
    }).catch(function () { /* defaults stay until the next snapshot */ });
  }

  // --- ages, links, sound and the view ----------------------------------------------

  function lastHeard(chair) {
    var latest = 0;
    Object.keys(chair.vitals).forEach(function (code) {
      latest = Math.max(latest, Date.parse(chair.vitals[code].received_time));
    });
    return latest;
  }

  function refreshChairClock(chair, now) {
    var tile = tileFor(chair.chair_id);
    if (!tile) return;
    var session = chair.session;
    // Infusion time, from the infusion start event.
    var infusion = "";
    if (session && session.infusion_started_at && (session.phase === "infusion" || session.phase === "recovery")) {
      var label = session.phase === "infusion" ? "inf " : "t+";
      infusion = label + formatClock((now - Date.parse(session.infusion_started_at)) / 1000);
    }
    setText(tile.querySelector(".infusion-time"), infusion);

    // A chair whose device has gone quiet says so, and for how long.
    var heard = lastHeard(chair);
    var silentS = heard ? (now - heard) / 1000 : null;
    var disconnected = !!session && heard > 0 && silentS > (link.station.device_silent_s || 10);
    chair.disconnected = disconnected;
    tile.classList.toggle("disconnected", disconnected);
    var linkText = "";
    if (disconnected) linkText = "disconnected for " + formatAge(silentS);
    else if (session && !heard) linkText = "no data from the monitor yet";
    var linkEl = tile.querySelector(".tile-link");
    var refit = (linkEl.textContent === "") !== (linkText === "");
    setText(linkEl, linkText);

    // Next cuff: the session's NIBP interval (set in the chair view; 0: no schedule), else
    // the phase's, after the last reading.
    var next = "";
    var nibp = chair.vitals.nibp_sys;
    var interval = 0;
    if (session && session.nibp_interval_s !== null && session.nibp_interval_s !== undefined) {
      interval = session.nibp_interval_s;
    } else if (session) {
      interval = link.station.nibp_interval_s[session.phase] || 0;
    }
    if (nibp && interval > 0) {
      var due = (Date.parse(nibp.received_time) + interval * 1000 - now) / 1000;
      next = due >= 0 ? "next " + formatClock(due) : "overdue " + formatClock(-due);
    }
    setText(tile.querySelector(".next-cuff"), next);

    // Audio pause: always visible, with the time left.
    var pauseLeft = "";
    var until = session ? link.pausedUntil[session.session_id] : null;
    if (until && until > now) pauseLeft = "audio paused " + formatClock((until - now) / 1000);
    else if (until) delete link.pausedUntil[session.session_id];
    var pauseEl = tile.querySelector(".pause-left");
    refit = refit || (pauseEl.textContent === "") !== (pauseLeft === "");
    setText(pauseEl, pauseLeft);
    tile.classList.toggle("audio-paused", !!pauseLeft);
    if (refit) fitAlarms(tile); // a line came or went: the alarm lines have more or less room
  }

  function refreshAges() {
    var linkUp = link.ws && link.ws.readyState === WebSocket.OPEN &&
      Date.now() - link.lastMessageAt <= LINK_TIMEOUT_MS;
    showLink(linkUp);
    var now = serverNow();
    var vitals = document.querySelectorAll(".vital");
    for (var i = 0; i < vitals.length; i++) {
      var el = vitals[i];
      var received = el.dataset.received;
      var age = el.querySelector(".age");
      if (!received) {
        setText(age, "");
        el.classList.remove("stale");
        continue;
      }
      var seconds = (now - Date.parse(received)) / 1000;
      var code = el.dataset.vital;
      var tile = el.closest(".tile");
      var limitS = freshS(code === "nibp" ? "nibp_sys" : code, tile ? tile.dataset.phase : "");
      // Not "seconds > limitS": without a limit from the server the value is stale.
      el.classList.toggle("stale", !linkUp || !(seconds <= limitS));
      // NIBP ages in whole minutes: the tile's one line also holds the next-cuff countdown.
      var ageText = code !== "nibp" ? formatAge(seconds) :
        seconds < 60 ? Math.max(0, Math.floor(seconds)) + " s ago" : Math.floor(seconds / 60) + " min ago";
      setText(age, ageText);
    }
    Object.keys(link.chairs).forEach(function (id) { refreshChairClock(link.chairs[id], now); });
    applyView();
    updateSound();
  }

  function updateSound() {
    if (!window.vigilSound) return;
    var now = serverNow();
    var levels = [];
    var paused = [];
    Object.keys(link.chairs).forEach(function (id) {
      var chair = link.chairs[id];
      var sid = chair.session ? chair.session.session_id : null;
      var until = sid ? link.pausedUntil[sid] : null;
      var chairPaused = until && until > now;
      if (chairPaused) paused.push(chair.name + " " + formatClock((until - now) / 1000));
      (chair.alarms || []).forEach(function (a) {
        if (a.state === "raised" && !a.audio_paused && !chairPaused) levels.push(alarmLevel(a));
      });
    });
    window.vigilSound.update(levels, paused.length ? "audio paused: " + paused.join(", ") : "");
  }

  function showLink(up) {
    var banner = document.getElementById("link-banner");
    if (banner && banner.hidden !== up) banner.hidden = up;
    var status = document.getElementById("link-status");
    if (status) {
      setText(status, up ? "live" : "NOT LIVE");
      status.classList.toggle("down", !up);
    }
    document.body.classList.toggle("link-down", !up);
  }

  // The server says when it cannot reach its database: the screen keeps working (live
  // values and alarms still come) but must not let anyone think they are being kept.
  var DATABASE_BANNER_TEXT = "Vigil cannot reach its database";
  function showDatabase(state) {
    link.database = state;
    var banner = document.getElementById("database-banner");
    if (!banner && state !== "ok") {
      banner = document.createElement("div");
      banner.id = "database-banner";
      banner.className = "link-banner database-banner";
      banner.setAttribute("role", "alert");
      banner.textContent =
        DATABASE_BANNER_TEXT + ": live values and alarms still show here, but nothing new is " +
        "stored until it is back.";
      var after = document.getElementById("link-banner");
      if (after && after.parentNode) after.parentNode.insertBefore(banner, after.nextSibling);
      else document.body.insertBefore(banner, document.body.firstChild);
    }
    if (banner) banner.hidden = state === "ok";
  }

  function applyAlarmStored(msg) {
    var left = (link.unstored[msg.alarm_id] || 1) - 1;
    if (left > 0) link.unstored[msg.alarm_id] = left;
    else delete link.unstored[msg.alarm_id];
  }

  // Filters and sorting move tiles with CSS (order, a class): the DOM stays put.
  function applyView() {
    var anyFilter = link.filters.alarming || link.filters.disconnected || link.filters.infusion;
    var shown = 0, total = 0;
    Object.keys(link.chairs).forEach(function (id) {
      var chair = link.chairs[id];
      var tile = tileFor(id);
      if (!tile) return;
      total += 1;
      var alarming = (chair.alarms || []).length > 0;
      var infusion = chair.session && chair.session.phase === "infusion";
      var show = !anyFilter ||
        (link.filters.alarming && alarming) ||
        (link.filters.disconnected && chair.disconnected) ||
        (link.filters.infusion && infusion);
      var shownAgain = show && tile.classList.contains("filtered-out");
      tile.classList.toggle("filtered-out", !show);
      if (shownAgain) fitAlarms(tile); // measured while hidden: measure again
      if (show) shown += 1;
      var order = link.sort === "severity" ? String(100 - severity(chair)) : "";
      if (tile.style.order !== order) tile.style.order = order;
    });
    setText(document.getElementById("filter-count"), anyFilter ? shown + " of " + total + " shown" : "");
  }

  function renderOccupancy() {
    var ids = Object.keys(link.chairs);
    var occupied = ids.filter(function (id) { return link.chairs[id].session; }).length;
    setText(document.getElementById("occupancy"), occupied + "/" + ids.length + " chairs");
  }

  function applySnapshot(msg) {
    link.seq = msg.seq;
    link.display = msg.display || null;
    if (!link.display) missingFact("(the snapshot has no display)");
    var colours = link.display ? link.display.level_colours || {} : {};
    Object.keys(colours).forEach(function (level) {
      document.documentElement.style.setProperty("--" + level, colours[level]);
    });
    link.chairs = {};
    msg.chairs.forEach(function (chair) {
      link.chairs[chair.chair_id] = chair;
      renderChair(chair);
      renderAlarms(chair);
    });
    renderOccupancy();
    if (msg.chairs.some(function (c) { return !tileFor(c.chair_id); })) {
      // The site gained a chair since this page was laid out.
      window.location.reload();
      return;
    }
    loadStationState(msg.site_id);
    loadSparklines(msg.site_id);
    if (window.vigilChair) window.vigilChair.onSnapshot();
  }

  var pendingLatency = [];
  function measureOnPaint() {
    var now = serverNow();
    pendingLatency.forEach(function (received) { link.latency.push(now - received); });
    pendingLatency = [];
    if (link.latency.length > LATENCY_KEEP) link.latency.splice(0, link.latency.length - LATENCY_KEEP);
  }

  function applySamples(msg) {
    var chair = link.chairs[msg.chair_id];
    if (!chair) return requestResync();
    msg.samples.forEach(function (s) {
      var current = chair.vitals[s.vital];
      if (!current || Date.parse(current.received_time) <= Date.parse(s.received_time)) chair.vitals[s.vital] = s;
      if (s.vital === "hr" || s.vital === "pr" || s.vital === "spo2") {
        if (!s.quality || !s.quality.length) sparkAdd(msg.chair_id, s.vital, Date.parse(s.received_time), s.value);
      }
    });
    renderChair(chair);
    refreshChairClock(chair, serverNow());
    if (window.vigilChair) window.vigilChair.onSamples(msg);
    // Receipt → tile: measured when the frame with the new value is painted.
    if (!pendingLatency.length) requestAnimationFrame(measureOnPaint);
    pendingLatency.push(Date.parse(msg.samples[0].received_time));
  }

  // A session event on one chair (check-in, phase, rate, note, discharge): that chair's
  // session as it now is; the rest of the screen stays as it was.
  function applySession(msg) {
    var chair = link.chairs[msg.chair_id];
    if (!chair) return requestResync();
    chair.session = msg.session;
    renderChair(chair);
    refreshChairClock(chair, serverNow());
    renderOccupancy();
    applyView();
    updateSound();
    if (window.vigilChair) window.vigilChair.onSession(msg);
  }

  function requestResync() {
    if (link.ws && link.ws.readyState === WebSocket.OPEN) {
      link.ws.send(JSON.stringify({ type: "resync" }));
    }
  }

  function onMessage(event) {
    var msg = JSON.parse(event.data);
    link.lastMessageAt = Date.now();
    if (msg.server_time) noteServerTime(msg.server_time);
    if (msg.type === "snapshot") {
      link.unstored = {}; // what the snapshot holds is what the server has
      applySnapshot(msg);
      refreshAges();
    } else if (
      msg.type === "samples" || msg.type === "alarm" || msg.type === "session" ||
      msg.type === "alarm_stored"
    ) {
      if (msg.seq <= link.seq) return; // already in the snapshot
      if (msg.seq !== link.seq + 1) return requestResync();
      link.seq = msg.seq;
      if (msg.type === "samples") applySamples(msg);
      else if (msg.type === "alarm") {
        var id = msg.alarm.alarm_id;
        if (msg.stored === false) link.unstored[id] = (link.unstored[id] || 0) + 1;
        applyAlarm(msg);
      } else if (msg.type === "alarm_stored") applyAlarmStored(msg);
      else applySession(msg);
    } else if (msg.type === "status") {
      showDatabase(msg.database);
    } else if (msg.type === "heartbeat") {
      if (msg.seq > link.seq) requestResync(); // a delta went missing
    }
    if (document.body.classList.contains("link-down")) refreshAges();
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
      link.connects += 1;
    };
    ws.onmessage = onMessage;
    ws.onclose = function () {
      // The lost link's own banner says more; a new connection is told the database's state.
      showDatabase("ok");
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
      link.chairs = {};
      link.spark = {};
      connect();
    }
  }

  // --- people's actions -------------------------------------------------------------

  function flashError(tile, error) {
    setText(tile.querySelector(".tile-link"), "not done: " + error.message);
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var filter = target.closest("[data-filter]");
    if (filter) {
      var name = filter.dataset.filter;
      link.filters[name] = !link.filters[name];
      filter.classList.toggle("active", link.filters[name]);
      filter.setAttribute("aria-pressed", String(link.filters[name]));
      applyView();
      return;
    }
    var tile = target.closest(".tile");
    if (!tile) return;
    var chair = link.chairs[tile.dataset.chairId];
    if (!chair) return;
    if (target.closest(".ack-button")) {
      (chair.alarms || []).filter(function (a) { return a.state === "raised"; }).forEach(function (a) {
        window.vigilPost("/api/v1/alarms/" + encodeURIComponent(a.alarm_id) + "/acknowledge", {})
          .catch(function (error) { flashError(tile, error); });
      });
    } else if (target.closest(".pause-button")) {
      if (!chair.session) return;
      // No length: the protocol's pause, which every screen counts down from.
      window.vigilPost("/api/v1/sessions/" + chair.session.session_id + "/audio-pause", {})
        .catch(function (error) { flashError(tile, error); });
    } else if (window.vigilChair && chair.session) {
      window.vigilChair.open(chair.chair_id);
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id === "sort-order") {
      link.sort = event.target.value;
      applyView();
    }
  });

  link.chairState = function (chairId) { return link.chairs[chairId]; };
  link.serverNow = serverNow;

  // Watch the document only until Dash has rendered #station, then only #station's
  // children: text changes in the tiles would otherwise wake the observer 30 times a second.
  var pageObserver = new MutationObserver(function () {
    var station = document.getElementById("station");
    if (!station) return;
    pageObserver.disconnect();
    new MutationObserver(watchGrid).observe(station, { childList: true });
    watchGrid();
  });
  pageObserver.observe(document.documentElement, { childList: true, subtree: true });
  setInterval(refreshAges, 1000);
  setInterval(function () { redrawSparks(false); }, SPARK_REDRAW_MS);
  document.addEventListener("DOMContentLoaded", watchGrid);
})();
