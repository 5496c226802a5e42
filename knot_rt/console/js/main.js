// The console's start: the login, then the views the user's permissions open (as /login/check says).
import { ApiError, Session } from "./api.js";
import { Feed } from "./feed.js";
import { Inbox } from "./inbox.js";
import { NetworkView } from "./network.js";
import { $, clearNotice, notice, showError } from "./ui.js";

const session = new Session();
let feed = null;
let network = null;
let inbox = null;
let config = { map_library: false, tiles: null };

const FEED_TEXT = { live: "Feed: live", connecting: "Feed: connecting…", reconnecting: "Feed: reconnecting…", off: "Feed: off" };
const NETWORK_KEYS = ["stations", "maintenance", "clusters"];

function setFeedState(state) {
  const badge = $("feed-state");
  badge.dataset.state = state;
  badge.textContent = FEED_TEXT[state] || state;
}

function show(id) {
  for (const view of ["login-view", "view-empty", "view-network", "view-support"]) $(view).hidden = view !== id;
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.setAttribute("aria-current", `view-${tab.dataset.view}` === id ? "page" : "false");
  }
  if (id === "view-network" && network) network.shown();
}

function showLogin(message = "") {
  $("tabs").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-form").hidden = false;
  $("mfa-form").hidden = true;
  $("login-error").textContent = message;
  $("login-password").value = "";
  show("login-view");
  $("login-email").focus();
}

function teardown() {
  if (feed) feed.stop();
  if (network) network.destroy();
  if (inbox) inbox.destroy();
  feed = network = inbox = null;
  setFeedState("off");
}

async function enter() {
  try {
    await session.loadPermissions();
  } catch (error) {
    if (session.token) showError(error);
    return;
  }
  clearNotice();
  $("who").textContent = session.email || `user ${session.userId}`;
  $("logout").hidden = false;
  feed = new Feed(session, setFeedState);
  session.onToken = (token) => feed && feed.reauth(token);
  feed.start();
  const seesNetwork = NETWORK_KEYS.some((key) => session.can(key));
  const seesInbox = session.can("support");
  $("tab-network").hidden = !seesNetwork;
  $("tab-support").hidden = !seesInbox;
  $("tabs").hidden = !(seesNetwork || seesInbox);
  if (seesNetwork) network = new NetworkView(session, feed, config);
  if (seesInbox) inbox = new Inbox(session, feed);
  if (seesNetwork) {
    show("view-network");
    await network.start();
  } else if (seesInbox) {
    show("view-support");
  } else {
    show("view-empty");
  }
  if (inbox) await inbox.start();
}

function onExpired() {
  teardown();
  showLogin("Your session has expired. Log in again.");
  notice("Your session has expired. Log in again.");
}

async function submitLogin(event) {
  event.preventDefault();
  const button = $("login-submit");
  button.disabled = true;
  $("login-error").textContent = "";
  try {
    const { mfa } = await session.login($("login-email").value.trim(), $("login-password").value);
    if (mfa) {
      $("login-form").hidden = true;
      $("mfa-form").hidden = false;
      $("mfa-code").value = "";
      $("mfa-code").focus();
      return;
    }
    await enter();
  } catch (error) {
    $("login-error").textContent = loginMessage(error);
  } finally {
    button.disabled = false;
  }
}

function loginMessage(error) {
  if (!(error instanceof ApiError)) return String(error.message || error);
  if (error.status === 401) return "Wrong email or password.";
  if (error.status === 403 && error.code === 13) return "This account has no access to the console.";
  if (error.status === 429) return "Too many attempts; wait a moment and try again.";
  if (error.status === 503) return "The service is unavailable right now; try again shortly.";
  return error.explain();
}

async function submitSecondFactor(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await session.secondFactor($("mfa-code").value.trim());
    await enter();
  } catch (error) {
    $("login-error").textContent = error.status === 401 || error.status === 400
      ? "Wrong code; try the current one." : loginMessage(error);
    $("mfa-code").select();
  }
}

async function logout() {
  try {
    await session.logout();
  } catch { /* the session is gone either way */ }
  teardown();
  showLogin("");
  notice("Logged out.", "info");
}

async function boot() {
  try {
    const response = await fetch("/console/config.json");
    config = await response.json();
  } catch { /* the defaults */ }
  session.onExpired = onExpired;
  $("login-form").addEventListener("submit", submitLogin);
  $("mfa-form").addEventListener("submit", submitSecondFactor);
  $("mfa-cancel").addEventListener("click", () => showLogin(""));
  $("logout").addEventListener("click", logout);
  $("notice-close").addEventListener("click", clearNotice);
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => show(`view-${tab.dataset.view}`));
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") clearNotice();
  });
  if (session.restore()) {
    await enter();
    if (!session.token) showLogin("Your session has expired. Log in again.");
  } else {
    showLogin("");
  }
  document.body.dataset.ready = "true";
}

boot();
