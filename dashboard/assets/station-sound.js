/*
 * Vigil nurse station: alarm sound in the browser (WebAudio).
 *
 * IEC 60601-1-8-like patterns: high priority a 10-pulse burst (3+2, 3+2) repeated every
 * 10 s; medium a 3-pulse burst every 20 s; low and technical alarms 1 or 2 pulses every
 * 30 s. Browsers only start audio after a gesture, so sound stays off until someone
 * presses "Enable sound", and the page says so in red: never silent suppression.
 * An audio pause is shown with the time left.
 */
(function () {
  "use strict";

  var PATTERNS = {
    // pulse start offsets in ms, pulse length, pitch, repeat period
    high: { starts: [0, 150, 300, 600, 750, 1500, 1650, 1800, 2100, 2250], pulseMs: 110, hz: 880, everyMs: 10000 },
    medium: { starts: [0, 250, 500], pulseMs: 180, hz: 660, everyMs: 20000 },
    low: { starts: [0], pulseMs: 250, hz: 520, everyMs: 30000 },
    technical: { starts: [0, 300], pulseMs: 200, hz: 440, everyMs: 30000 },
  };
  // Which level is more urgent: the server's order (the snapshot's display facts).
  function rank(level) {
    var display = window.vigilLive ? window.vigilLive.display : null;
    var found = display && display.alarm_levels ? display.alarm_levels.indexOf(level) : -1;
    if (found < 0) console.error("vigil: the snapshot's display facts have no alarm level " + level);
    return found;
  }

  var sound = {
    enabled: false,
    context: null,
    level: null, // the pattern sounding now, or null
    lastPlayedAt: {},
    played: [], // [{level, at, test}] for the self-test display and the browser tests
    pausedText: "",
  };
  window.vigilSound = sound;

  function play(level, isTest) {
    var pattern = PATTERNS[level];
    sound.played.push({ level: level, at: Date.now(), test: !!isTest });
    if (sound.played.length > 200) sound.played.shift();
    if (!sound.context) return;
    var start = sound.context.currentTime + 0.05;
    pattern.starts.forEach(function (offsetMs) {
      var osc = sound.context.createOscillator();
      var gain = sound.context.createGain();
      var t0 = start + offsetMs / 1000;
      var t1 = t0 + pattern.pulseMs / 1000;
      osc.type = "square";
      osc.frequency.value = pattern.hz;
      // Short ramps: a click-free pulse.
      gain.gain.setValueAtTime(0, t0);
      gain.gain.linearRampToValueAtTime(0.15, t0 + 0.01);
      gain.gain.setValueAtTime(0.15, t1 - 0.01);
      gain.gain.linearRampToValueAtTime(0, t1);
      osc.connect(gain).connect(sound.context.destination);
      osc.start(t0);
      osc.stop(t1 + 0.02);
    });
  }

  function showStatus() {
    var status = document.getElementById("sound-status");
    var button = document.getElementById("sound-enable");
    if (!status) return;
    var text, cls;
    if (!sound.enabled) {
      text = "SOUND OFF";
      cls = "off";
    } else if (sound.level) {
      text = "Sounding: " + sound.level;
      cls = "sounding";
    } else {
      text = "Sound on";
      cls = "on";
    }
    if (sound.pausedText) {
      text += " · " + sound.pausedText;
      cls += " paused";
    }
    if (status.textContent !== text) status.textContent = text;
    status.className = "sound-status " + cls;
    if (button) button.hidden = sound.enabled;
  }

  /* Called by the live script about once a second and on every alarm change.
     sounding: the levels of raised, unacknowledged, not paused alarms;
     pausedText: "" or what is paused and for how long. */
  sound.update = function (sounding, pausedText) {
    var top = null;
    sounding.forEach(function (level) {
      if (!top || rank(level) > rank(top)) top = level;
    });
    if (top !== sound.level) sound.lastPlayedAt = {}; // a new top level sounds at once
    sound.level = top;
    sound.pausedText = pausedText;
    if (top && sound.enabled) {
      var last = sound.lastPlayedAt[top] || 0;
      if (Date.now() - last >= PATTERNS[top].everyMs) {
        sound.lastPlayedAt[top] = Date.now();
        play(top, false);
      }
    }
    showStatus();
  };

  sound.enable = function () {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (Context && !sound.context) sound.context = new Context();
    if (sound.context && sound.context.state === "suspended") sound.context.resume();
    sound.enabled = true;
    sound.lastPlayedAt = {};
    showStatus();
  };

  sound.selfTest = function () {
    // Every pattern in turn, highest first, so a nurse hears that each one works.
    if (!sound.enabled) sound.enable();
    var status = document.getElementById("sound-status");
    ["high", "medium", "technical", "low"].forEach(function (level, i) {
      setTimeout(function () {
        play(level, true);
        if (status) status.textContent = "Self-test: " + level;
      }, i * 3500);
    });
    setTimeout(showStatus, 4 * 3500);
  };

  document.addEventListener("click", function (event) {
    if (event.target.closest("#sound-enable")) sound.enable();
    else if (event.target.closest("#sound-test")) sound.selfTest();
  });
})();
