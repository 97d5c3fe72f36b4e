"use strict";

// The demo page of `oidc-bff demo`. Plain JavaScript, no build step.
// Every call to the gateway sends `X-CSRF: 1`; the session cookie is HttpOnly
// and never visible here.

const $ = (id) => document.getElementById(id);
const CSRF = { "X-CSRF": "1" };

let user = null;     // the last answer of /bff/user
let skew = 0;        // server clock minus browser clock, in seconds
let autoTimer = null;

function now() {
  return Date.now() / 1000 + skew;
}

function clockTime(unix) {
  return new Date((unix - skew) * 1000).toLocaleTimeString();
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

async function loadUser() {
  const response = await fetch("/bff/user", { headers: CSRF, cache: "no-store" });
  $("loading").hidden = true;
  if (response.status === 401) {
    user = null;
    $("signed-in").hidden = true;
    $("signed-out").hidden = false;
    stopAuto();
    return;
  }
  if (!response.ok) {
    throw new Error(`GET /bff/user answered ${response.status}`);
  }
  user = await response.json();
  skew = (user.sessionExpiresAt - user.sessionExpiresIn) - Date.now() / 1000;
  render();
  await loadSessions();
}

function render() {
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  const claims = user.claims || {};
  $("user-name").textContent = claims.name || claims.preferred_username || user.sub;
  $("logout").href = user.logoutUrl;

  const body = $("claims").tBodies[0];
  body.replaceChildren();
  for (const [name, value] of Object.entries(claims).sort()) {
    const row = body.insertRow();
    row.insertCell().textContent = name;
    const shown = typeof value === "object" ? JSON.stringify(value) : String(value);
    const isTime = ["iat", "exp", "auth_time", "nbf"].includes(name) && typeof value === "number";
    row.insertCell().textContent = isTime ? `${shown} (${clockTime(value)})` : shown;
  }
  renderClock();
}

function renderClock() {
  if (!user) return;
  const left = Math.round(user.accessTokenExpiresAt - now());
  $("token-expires").textContent =
    left > 0 ? `${left} s (at ${clockTime(user.accessTokenExpiresAt)})` : "expired — renewed on the next API call";
  $("token-expires").className = left > 10 ? "" : "warn";
  $("token-refreshed").textContent = user.tokensRefreshedAt
    ? `${clockTime(user.tokensRefreshedAt)} (${Math.max(0, Math.round(now() - user.tokensRefreshedAt))} s ago)`
    : "not yet — the token is the one from sign-in";
  $("refresh-count").textContent = String(user.refreshCount ?? 0);
  const session = Math.round(user.sessionExpiresAt - now());
  $("session-expires").textContent = `${Math.floor(session / 3600)} h ${Math.floor((session % 3600) / 60)} min`;
}

async function loadSessions() {
  const response = await fetch("/bff/sessions", { headers: CSRF, cache: "no-store" });
  if (!response.ok) return;
  const { sessions } = await response.json();
  const body = $("sessions").tBodies[0];
  body.replaceChildren();
  for (const session of sessions) {
    const row = body.insertRow();
    row.insertCell().textContent = session.userAgent || "unknown browser";
    row.insertCell().textContent = clockTime(session.createdAt);
    row.insertCell().textContent = clockTime(session.lastUsed);
    row.insertCell().textContent = new Date((session.expiresAt - skew) * 1000).toLocaleString();
    const action = row.insertCell();
    if (session.current) {
      action.textContent = "this browser";
      action.className = "muted";
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = "End";
      button.addEventListener("click", () => endSession(session.id, button));
      action.append(button);
    }
  }
}

async function endSession(id, button) {
  button.disabled = true;
  const response = await fetch(`/bff/sessions/${encodeURIComponent(id)}/end`, {
    method: "POST",
    headers: CSRF,
    cache: "no-store",
  });
  if (!response.ok && response.status !== 404) {
    showError(`POST /bff/sessions/…/end answered ${response.status}`);
  }
  await loadSessions();
}

async function callApi() {
  const button = $("call-api");
  button.disabled = true;
  $("api-status").textContent = "Calling…";
  const started = performance.now();
  try {
    const response = await fetch("/api/hello", { headers: CSRF, cache: "no-store" });
    const ms = Math.round(performance.now() - started);
    const text = await response.text();
    let shown = text;
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) { /* not JSON: show as is */ }
    $("api-status").textContent = `${response.status} ${response.statusText} in ${ms} ms — at ${new Date().toLocaleTimeString()}`;
    const result = $("api-result");
    result.textContent = shown;
    result.className = response.ok ? "ok" : "fail";
    result.hidden = false;
    await loadUser(); // shows a refresh the call may have caused
  } catch (err) {
    $("api-status").textContent = `Failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

function stopAuto() {
  if (autoTimer) clearInterval(autoTimer);
  autoTimer = null;
  $("auto-call").checked = false;
}

$("call-api").addEventListener("click", callApi);
$("reload-sessions").addEventListener("click", () => loadSessions().catch((err) => showError(err.message)));
$("auto-call").addEventListener("change", (event) => {
  if (event.target.checked) {
    callApi();
    autoTimer = setInterval(callApi, 5000);
  } else {
    stopAuto();
  }
});
setInterval(renderClock, 1000);

loadUser().catch((err) => {
  $("loading").hidden = true;
  showError(err.message);
});
