/*
 * Vigil nurse station: the chair view.
 *
 * Clicking a tile opens the last 60 minutes of the chair's session: trends with alarms
 * and events marked, the active limits, the alarm list and buttons to record events.
 * The history is read once (GET /api/v1/sessions/{id}/trend); after that new samples from
 * the websocket are appended with the graph's extendData, never by redrawing it.
 */
(function () {
  "use strict";

  var WINDOW_MIN = 60;
  var MAX_POINTS = 4000; // an hour at 1 Hz, with room
  // Trace order in the figure: extendData addresses traces by index.
  var TRACES = ["hr", "pr", "spo2", "nibp_sys", "nibp_dia", "nibp_mean"];
  var STYLE = {
    hr: { name: "HR", color: "#3fb950", axis: "y" },
    pr: { name: "PR", color: "#7ee787", axis: "y" },
    spo2: { name: "SpO2", color: "#58a6ff", axis: "y2" },
    nibp_sys: { name: "SBP", color: "#e3b341", axis: "y", marker: "triangle-down" },
    nibp_dia: { name: "DBP", color: "#e3b341", axis: "y", marker: "triangle-up" },
    nibp_mean: { name: "MAP", color: "#d29922", axis: "y", marker: "circle" },
  };
  // Alarm colours come from the server (the snapshot's display facts); none are kept here.
  function colourOf(table, key) {
    var display = window.vigilLive ? window.vigilLive.display : null;
    var colour = display && display[table] ? display[table][key] : undefined;
    if (colour === undefined) console.error("vigil: the snapshot's display facts have no " + table + "." + key);
    return colour;
  }
  var EVENT_LABEL = {
    check_in: "check-in", baseline_start: "baseline", infusion_start: "infusion start",
    rate_change: "rate", infusion_pause: "pause", infusion_resume: "resume",
    infusion_stop: "infusion stop", bp_medication: "BP med", note: "note", discharge: "discharge",
  };

  var view = { chairId: null, sessionId: null, trend: null, loading: false, extended: 0 };
  window.vigilChair = view;

  // Plotly shows date strings as given: send local wall-clock time, as the nurse reads it.
  function localIso(ms) {
    var d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 23);
  }

  function setProps(id, props) {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props(id, props);
    }
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function figure(trend) {
    var data = TRACES.map(function (code) {
      var series = trend.series[code] || { t: [], v: [] };
      var style = STYLE[code];
      var trace = {
        type: "scatter",
        name: style.name,
        x: series.t.map(function (t) { return localIso(Date.parse(t)); }),
        y: series.v,
        yaxis: style.axis,
        line: { color: style.color, width: 1.5 },
        hovertemplate: style.name + " %{y:.0f}<extra>%{x|%H:%M:%S}</extra>",
      };
      if (style.marker) {
        trace.mode = "markers";
        trace.marker = { symbol: style.marker, size: 9, color: style.color };
      } else {
        trace.mode = "lines";
      }
      return trace;
    });
    var shapes = [], annotations = [];
    trend.alarms.forEach(function (alarm) {
      var x = localIso(Date.parse(alarm.raised_at));
      var color = alarm.kind === "technical" ? colourOf("level_colours", "technical") :
        colourOf("priority_colours", alarm.priority);
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color: color, width: 2 } });
      annotations.push({ x: x, y: 1, xref: "x", yref: "paper", text: alarm.text, showarrow: false,
        textangle: -90, xanchor: "right", yanchor: "top", font: { color: color, size: 10 } });
    });
    trend.events.forEach(function (event) {
      var x = localIso(Date.parse(event.at));
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color: "#c9d1d9", width: 1, dash: "dot" } });
      annotations.push({ x: x, y: 0, xref: "x", yref: "paper", showarrow: false, yanchor: "bottom",
        text: EVENT_LABEL[event.kind] + (event.value !== null ? " " + event.value + (event.unit ? " " + event.unit : "") : ""),
        font: { color: "#c9d1d9", size: 10 }, bgcolor: "#161b22" });
    });
    trend.limits.forEach(function (limit) {
      if (limit.vital !== "spo2" || limit.priority === "crisis") return;
      shapes.push({ type: "line", xref: "paper", yref: "y2", x0: 0, x1: 1, y0: limit.limit, y1: limit.limit,
        line: { color: colourOf("priority_colours", limit.priority), width: 1, dash: "dash" } });
    });
    var now = Date.parse(trend.server_time);
    return {
      data: data,
      layout: {
        template: "plotly_dark",
        paper_bgcolor: "#0d1117",
        plot_bgcolor: "#0d1117",
        margin: { l: 50, r: 50, t: 10, b: 30 },
        height: 380,
        showlegend: true,
        legend: { orientation: "h", y: 1.08 },
        xaxis: { type: "date", range: [localIso(now - WINDOW_MIN * 60000), localIso(now + 60000)] },
        yaxis: { title: { text: "/min · mmHg" }, range: [30, 210], dtick: 20, tickmode: "linear" },
        yaxis2: { title: { text: "SpO2 %" }, overlaying: "y", side: "right", range: [70, 101],
          dtick: 5, tickmode: "linear", showgrid: false },
        shapes: shapes,
        annotations: annotations,
        uirevision: "chair-" + trend.session_id,
      },
    };
  }

  function renderLists(trend) {
    var alarms = document.getElementById("chair-alarms");
    alarms.textContent = "";
    trend.alarms.slice().reverse().forEach(function (alarm) {
      var when = new Date(Date.parse(alarm.raised_at)).toLocaleTimeString();
      var who = alarm.acknowledged_by ? ", ack " + alarm.acknowledged_by : "";
      alarms.appendChild(el("li", "alarm-item " + alarm.state + " " + alarm.priority,
        when + "  " + alarm.text + " (" + alarm.state + who + ")"));
    });
    if (!trend.alarms.length) alarms.appendChild(el("li", "muted", "no alarms in the last hour"));

    var limits = document.getElementById("chair-limits");
    limits.textContent = "";
    var ops = { "<=": "≤", "<": "<", ">=": "≥", ">": ">" };
    trend.limits.forEach(function (limit) {
      var row = el("tr", limit.limit !== limit.protocol_limit ? "overridden" : "");
      row.appendChild(el("td", "", limit.vital.replace("nibp_", "").toUpperCase()));
      row.appendChild(el("td", "", ops[limit.op] + " " + (limit.relative_to_baseline ? "baseline + " : "") + limit.limit));
      row.appendChild(el("td", limit.priority, limit.priority));
      limits.appendChild(row);
    });

    var events = document.getElementById("chair-events");
    events.textContent = "";
    trend.events.slice().reverse().forEach(function (event) {
      var when = new Date(Date.parse(event.at)).toLocaleTimeString();
      var what = EVENT_LABEL[event.kind] + (event.value !== null ? " " + event.value + " " + (event.unit || "") : "") +
        (event.note ? " — " + event.note : "");
      events.appendChild(el("li", "", when + "  " + what + " (" + event.recorded_by + ")"));
    });
  }

  function load() {
    if (view.sessionId === null) return;
    var sessionId = view.sessionId;
    view.loading = true;
    window.vigilGet("/api/v1/sessions/" + sessionId + "/trend?minutes=" + WINDOW_MIN).then(function (trend) {
      view.loading = false;
      if (view.sessionId !== sessionId) return;
      view.trend = trend;
      view.extended = 0;
      setProps("chair-trend", { figure: figure(trend) });
      renderLists(trend);
      var panel = document.getElementById("chair-view");
      panel.dataset.loaded = String(sessionId);
      setText("chair-view-phase", trend.phase.replace("_", " "));
    }).catch(function (error) {
      view.loading = false;
      setText("event-result", "could not load the trend: " + error.message);
    });
  }

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  // --- The session's NIBP interval: shown as it stands, changed only after a confirmation.

  function minutes(seconds) {
    return seconds > 0 ? seconds / 60 + " min" : "none (manual readings only)";
  }

  function nibpIntervalLabel(value) {
    var select = document.getElementById("nibp-interval-select");
    for (var i = 0; select && i < select.options.length; i++) {
      if (select.options[i].value === value) return select.options[i].textContent;
    }
    return value;
  }

  function showNibpInterval(session) {
    var select = document.getElementById("nibp-interval-select");
    if (!select || !session || view.nibpConfirming) return;
    // The default's label says what the phase's default is.
    var station = window.vigilLive && window.vigilLive.station ? window.vigilLive.station : null;
    var phaseDefault = station && station.nibp_interval_s ? station.nibp_interval_s[session.phase] : undefined;
    select.options[0].textContent = "protocol default" +
      (phaseDefault !== undefined ? " (" + minutes(phaseDefault) + ")" : "");
    var own = session.nibp_interval_s;
    select.value = own === null || own === undefined ? "default" : String(own);
    select.dataset.current = select.value;
  }

  function askNibpInterval() {
    var select = document.getElementById("nibp-interval-select");
    if (select.value === select.dataset.current) {
      return setText("nibp-interval-result", "already " + nibpIntervalLabel(select.value));
    }
    view.nibpConfirming = true;
    setText("nibp-interval-result", "");
    var chair = window.vigilLive.chairState(view.chairId);
    setText("nibp-interval-question", "NIBP every " + nibpIntervalLabel(select.value) + " for " +
      (chair ? chair.name : "this chair") + "? Set the monitor to the same.");
    document.getElementById("nibp-interval-confirm").hidden = false;
  }

  function endNibpQuestion() {
    view.nibpConfirming = false;
    document.getElementById("nibp-interval-confirm").hidden = true;
  }

  function setNibpInterval() {
    var select = document.getElementById("nibp-interval-select");
    var value = select.value;
    var seconds = value === "default" ? null : parseFloat(value);
    var sessionId = view.sessionId;
    endNibpQuestion();
    setText("nibp-interval-result", "setting…");
    window.vigilPut("/api/v1/sessions/" + sessionId + "/nibp-interval", { seconds: seconds }).then(function () {
      if (view.sessionId !== sessionId) return;
      select.dataset.current = value;
      setText("nibp-interval-result", "set: " + nibpIntervalLabel(value));
    }).catch(function (error) {
      setText("nibp-interval-result", "not set: " + error.message);
      var chair = window.vigilLive.chairState(view.chairId);
      if (chair) showNibpInterval(chair.session);
    });
  }

  view.open = function (chairId) {
    var chair = window.vigilLive.chairState(chairId);
    if (!chair || !chair.session) return;
    view.chairId = chair.chair_id;
    view.sessionId = chair.session.session_id;
    var panel = document.getElementById("chair-view");
    panel.dataset.chairId = String(chair.chair_id);
    panel.dataset.loaded = "";
    panel.hidden = false;
    setText("chair-view-title", chair.name + " · " + chair.session.patient_initials);
    setText("chair-view-phase", chair.session.phase.replace("_", " "));
    setText("event-result", "");
    setText("nibp-interval-result", "");
    endNibpQuestion();
    showNibpInterval(chair.session);
    load();
  };

  view.close = function () {
    view.chairId = null;
    view.sessionId = null;
    view.trend = null;
    document.getElementById("chair-view").hidden = true;
  };

  view.onSamples = function (msg) {
    if (msg.chair_id !== view.chairId || !view.trend || view.loading) return;
    if (msg.session_id !== view.sessionId) return view.close(); // another patient now
    var x = [], y = [], indexes = [];
    TRACES.forEach(function (code, index) {
      var xs = [], ys = [];
      msg.samples.forEach(function (s) {
        if (s.vital === code && !(s.quality && s.quality.length)) {
          xs.push(localIso(Date.parse(s.received_time)));
          ys.push(s.value);
        }
      });
      if (xs.length) { x.push(xs); y.push(ys); indexes.push(index); }
    });
    if (!indexes.length) return;
    view.extended += 1;
    setProps("chair-trend", { extendData: [{ x: x, y: y }, indexes, MAX_POINTS] });
  };

  view.onAlarm = function (msg) {
    // Alarms are rare: re-read the window, which marks the new one on the graph.
    if (msg.chair_id === view.chairId && !view.loading) load();
  };

  view.onSession = function (msg) {
    // An event on the open chair: re-read the window, which lists it and shows the phase.
    if (msg.chair_id !== view.chairId) return;
    if (!msg.session || msg.session.session_id !== view.sessionId) return view.close();
    setText("chair-view-phase", msg.session.phase.replace("_", " "));
    showNibpInterval(msg.session);
    if (!view.loading) load();
  };

  view.onSnapshot = function () {
    // After a reconnect or a session change: the full state again.
    if (view.chairId === null) return;
    var chair = window.vigilLive.chairState(view.chairId);
    if (!chair || !chair.session || chair.session.session_id !== view.sessionId) return view.close();
    load();
  };

  function recordEvent(button) {
    var body = { kind: button.dataset.kind };
    if (button.dataset.value) body.value = parseFloat(button.dataset.value);
    if (button.dataset.unit) body.unit = button.dataset.unit;
    if (button.dataset.note) body.note = button.dataset.note;
    if (body.kind === "note") {
      var input = document.getElementById("event-note-text");
      if (!input.value.trim()) return setText("event-result", "type the note first");
      body.note = input.value.trim();
    }
    setText("event-result", "recording " + button.textContent + "…");
    window.vigilPost("/api/v1/sessions/" + view.sessionId + "/events", body).then(function () {
      setText("event-result", "recorded: " + button.textContent);
      if (body.kind === "note") document.getElementById("event-note-text").value = "";
    }).catch(function (error) {
      setText("event-result", "not recorded: " + error.message);
    });
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("#chair-view-close")) return view.close();
    if (view.sessionId !== null) {
      if (event.target.closest("#nibp-interval-set")) return askNibpInterval();
      if (event.target.closest("#nibp-interval-yes")) return setNibpInterval();
      if (event.target.closest("#nibp-interval-no")) {
        endNibpQuestion();
        var chair = window.vigilLive.chairState(view.chairId);
        return showNibpInterval(chair ? chair.session : null);
      }
    }
    var preset = event.target.closest(".event-preset[data-kind]");
    if (preset && view.sessionId !== null) recordEvent(preset);
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && view.chairId !== null) view.close();
  });
})();
