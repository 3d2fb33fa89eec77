/*
 * Vigil nurse station: the one way the page talks to the API besides the websocket.
 *
 * Every state-changing request goes through vigilPost: the sign-in cookie is sent, and
 * the CSRF token from the readable `vigil_csrf` cookie goes in the X-CSRF-Token header.
 * Who acts is the signed-in person; the server takes it from the session. A 401 means
 * the sign-in has ended (expired or revoked): the page goes to the sign-in form.
 */
(function () {
  "use strict";

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function answer(response) {
    return response.text().then(function (text) {
      var body = null;
      try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
      if (response.status === 401) {
        var here = window.location.pathname + window.location.search + window.location.hash;
        window.location.assign("/login?next=" + encodeURIComponent(here));
      }
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

  function send(method, url, body) {
    var headers = { "Content-Type": "application/json" };
    var csrf = cookie("vigil_csrf");
    if (csrf) headers["X-CSRF-Token"] = csrf;
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: headers,
      body: JSON.stringify(body || {}),
    }).then(answer);
  }

  window.vigilPost = function (url, body) { return send("POST", url, body); };
  window.vigilPut = function (url, body) { return send("PUT", url, body); };

  window.vigilGet = function (url) {
    return fetch(url, { credentials: "same-origin" }).then(answer);
  };

  // Who is signed in, in the top bar, and the sign-out button (both in every layout).
  window.vigilGet("/api/v1/auth/me").then(function (me) {
    (function show() {
      var who = document.getElementById("signed-in-as");
      if (!who) return setTimeout(show, 200); // Dash renders the layout after this script
      who.textContent = me.display_name + " · " + me.role;
    })();
  }).catch(function () {});
  document.addEventListener("click", function (event) {
    if (event.target && event.target.id === "sign-out") window.vigilSignOut();
  });

  window.vigilSignOut = function () {
    window.vigilPost("/logout", {}).finally(function () {
      window.location.assign("/login");
    });
  };
})();
