/*
 * Vigil nurse station: the one way the page talks to the API besides the websocket.
 *
 * Every state-changing request goes through vigilPost, so sign-in (issue 6) needs one
 * change: same-origin cookies are sent, and the CSRF token from the readable `vigil_csrf`
 * cookie goes in the X-CSRF-Token header. Until then the body names who acts (`by`,
 * `recorded_by`); once the server takes the person from the session it ignores them.
 */
(function () {
  "use strict";

  var ACTOR = "nurse station";

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function answer(response) {
    return response.text().then(function (text) {
      var body = null;
      try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
      if (!response.ok) {
        var detail = body && body.detail ? body.detail : response.statusText;
        if (typeof detail !== "string") detail = JSON.stringify(detail);
        var error = new Error(response.status + ": " + detail);
        error.status = response.status;
        throw error;
      }
      return body;
    });
  }

  window.vigilPost = function (url, body) {
    var headers = { "Content-Type": "application/json" };
    var csrf = cookie("vigil_csrf");
    if (csrf) headers["X-CSRF-Token"] = csrf;
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: headers,
      body: JSON.stringify(body || {}),
    }).then(answer);
  };

  window.vigilGet = function (url) {
    return fetch(url, { credentials: "same-origin" }).then(answer);
  };

  window.vigilActor = ACTOR;
})();
