// The page: wires the forms and lists to the model and the connection.
// Every text that came from a user or the server is put in the page with
// textContent (never innerHTML), so nothing a peer sends is interpreted.

import { Connection, Disconnected, MSG, register, socketUrl } from "./connection.js";
import { Model } from "./model.js";
import * as saved from "./storage.js";
import * as view from "./view.js";
import { NOT_CONNECTED, errorText, statusText } from "./words.js";

const { showAuthView, showError, hideError } = view;

const $ = (id) => document.getElementById(id);
const URL = socketUrl(window.location);
/** The server's default frame limit; a longer message would cost the
 *  connection (errno 8 and a close), so the page refuses it first. */
const MAX_FRAME_BYTES = 65536;
/** DELIVERED is batched: at most one every this many ms. */
const DELIVERED_EVERY_MS = 250;
const HISTORY_PAGE = 50;

let conn = null;
let model = null;
/** The open conversation's key, or null. */
let active = null;
/** Password of a login in progress: kept in memory until the token comes. */
let password = null;
/** The highest inbox seq held, and the last one confirmed. */
let lastSeq = 0;
let confirmedSeq = 0;
let persistTimer = null;

// ---- start-up ---------------------------------------------------------

function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("register-form").addEventListener("submit", onRegister);
  $("logout").addEventListener("click", onLogout);
  $("add-friend-form").addEventListener("submit", onAddFriend);
  $("create-group-form").addEventListener("submit", onCreateGroup);
  $("join-group-form").addEventListener("submit", onJoinGroup);
  $("composer").addEventListener("submit", onSend);
  $("compose-text").addEventListener("keydown", onComposeKey);
  $("older").addEventListener("click", () => loadHistory(activeConv()));
  $("messages").addEventListener("scroll", onScroll);
  $("back").addEventListener("click", onBack);
  $("error-close").addEventListener("click", hideError);
  $("sidebar").addEventListener("click", onConvClick);
  // A reload or a closed tab must not lose the seq and counts of the last
  // quarter second.
  window.addEventListener("pagehide", persist);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") markRead();
  });

  const s = saved.session();
  if (s) {
    model = new Model({ id: s.id, name: s.name });
    model.restoreUnread(saved.unread(s.id));
    model.restoreOutbox(saved.outbox(s.id));
    view.showChatView(model.me);
    startConnection(s.id);
  } else {
    showAuthView();
  }
}

// ---- session ------------------------------------------------------------

function startConnection(id) {
  if (conn) conn.stop();
  lastSeq = saved.seq(id);
  confirmedSeq = lastSeq;
  conn = new Connection(
    URL,
    { status: onStatus, loggedIn: onLoggedIn, loginRefused: onLoginRefused, frame: onFrame },
    () => {
      const s = saved.session();
      const since = lastSeq;
      if (password !== null) return { id, password, since };
      return { id, token: s ? s.token : "", since };
    },
  );
  conn.start();
}

function onStatus(status, detail) {
  document.body.dataset.status = status;
  $("status").textContent = statusText(status, detail);
}

function onLoggedIn(ack) {
  const firstLogin = !model || model.me.id !== ack.id;
  if (firstLogin) {
    model = new Model({ id: ack.id, name: ack.name });
    model.restoreUnread(saved.unread(ack.id));
    model.restoreOutbox(saved.outbox(ack.id));
  }
  model.applyLogin(ack);
  const token = ack.token || (saved.session() || {}).token;
  if (token) saved.saveSession(ack.id, ack.name, token);
  password = null;
  if (Number.isInteger(ack.seq) && ack.seq < lastSeq) {
    // The server holds fewer messages than we think we saw (its
    // database was replaced): start over from what it has.
    lastSeq = ack.seq;
    confirmedSeq = ack.seq;
    saved.saveSeq(ack.id, ack.seq);
  }
  view.showChatView(model.me);
  for (const pending of [...model.outbox]) sendChat(pending);
  const conv = activeConv();
  if (conv && conv.more === null) loadHistory(conv);
  renderAll();
}

function onLoginRefused(ack) {
  const usedToken = password === null;
  password = null;
  if (usedToken) {
    if (model) saved.forget(model.me.id);
    showError(ack.errno === 1 ? "Your session has ended. Please log in again." : errorText(ack.errno, "login"));
  } else {
    showError(errorText(ack.errno, "login"));
  }
  model = null;
  active = null;
  showAuthView();
}

function onLogin(event) {
  event.preventDefault();
  hideError();
  const id = parseId($("login-id").value);
  if (id === null) {
    showError("A user id is a whole number, as shown when you registered.");
    return;
  }
  password = $("login-password").value;
  $("login-password").value = "";
  model = null;
  active = null;
  startConnection(id);
}

async function onRegister(event) {
  event.preventDefault();
  hideError();
  const name = $("register-name").value;
  const pw = $("register-password").value;
  const button = event.submitter || $("register-form").querySelector("button");
  button.disabled = true;
  try {
    const reply = await register(URL, name, pw);
    if (reply.errno === 0) {
      $("register-result").textContent =
        `Registered. Your user id is ${reply.id}: log in with it and your password.`;
      $("login-id").value = String(reply.id);
      $("register-password").value = "";
      $("login-password").focus();
    } else {
      showError(errorText(reply.errno, "register"));
    }
  } catch {
    showError("Could not reach the server. Try again in a moment.");
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  if (conn) {
    try {
      await conn.request({ msgid: MSG.LOGOUT });
    } catch {
      // Offline: the token stays valid until it expires, but this
      // browser forgets it.
    }
    conn.stop();
    conn = null;
  }
  if (model) saved.forget(model.me.id);
  model = null;
  active = null;
  lastSeq = 0;
  confirmedSeq = 0;
  showAuthView();
  onStatus("offline");
  $("login-id").focus();
}

// ---- frames pushed by the server -------------------------------------

function onFrame(frame) {
  if (frame.msgid === MSG.ONE_CHAT || frame.msgid === MSG.GROUP_CHAT) {
    const { conv, added } = model.addChat(frame);
    if (added && frame.id !== model.me.id && !isWatched(conv)) conv.unread += 1;
    if (Number.isInteger(frame.seq) && frame.seq > lastSeq) lastSeq = frame.seq;
    schedulePersist();
    scheduleRender();
  } else if (frame.msgid === MSG.NOTICE) {
    onNotice(frame);
  }
}

function onNotice(n) {
  if (n.kind === "presence") {
    model.setPresence(n.id, n.state);
  } else if (n.kind === "friend") {
    model.setFriend(n);
  } else if (n.kind === "member") {
    model.addMember(n.groupid, n.id, n.name, n.role, n.state);
  } else {
    return;
  }
  renderSidebar();
  renderConvHeader();
}

/** Pushes come in bursts (a backlog after a login): the page is redrawn
 *  once per burst, not once per message. */
let renderTimer = null;
function scheduleRender() {
  if (renderTimer !== null) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    if (!model) return;
    renderSidebar();
    renderMessages();
  }, 30);
}

/** Confirms received messages (DELIVERED) and saves seq and unread counts,
 *  at most every DELIVERED_EVERY_MS. */
function schedulePersist() {
  if (persistTimer === null) persistTimer = setTimeout(persist, DELIVERED_EVERY_MS);
}

function persist() {
  clearTimeout(persistTimer);
  persistTimer = null;
  if (!model) return;
  saved.saveSeq(model.me.id, lastSeq);
  saved.saveUnread(model.me.id, model.unreadCounts());
  if (lastSeq > confirmedSeq && conn && conn.loggedIn) {
    conn.notify({ msgid: MSG.DELIVERED, seq: lastSeq });
    confirmedSeq = lastSeq;
  }
}

// ---- requests -----------------------------------------------------------

function sendChat(pending) {
  const { kind, id, text, cid } = pending;
  const frame =
    kind === "g"
      ? { msgid: MSG.GROUP_CHAT, groupid: id, msg: text, cid }
      : { msgid: MSG.ONE_CHAT, toid: id, msg: text, cid };
  const owner = model;
  conn.request(frame).then(
    (reply) => {
      if (model !== owner) return;
      const conv = model.acknowledge(kind, id, cid, reply, errorText(reply.errno, kind === "g" ? "group" : "user"));
      saved.saveOutbox(model.me.id, model.outbox);
      if (conv.key === active) renderMessages();
    },
    () => {
      // Disconnected: it stays in the outbox and goes again, with the
      // same cid, after the next login.
    },
  );
}

function onSend(event) {
  event.preventDefault();
  const conv = activeConv();
  if (!conv) return;
  const box = $("compose-text");
  const text = box.value;
  if (text.trim() === "") return;
  const cid = newCid();
  const probe = { msgid: MSG.GROUP_CHAT, v: 2, rid: 2 ** 31, groupid: conv.id, toid: conv.id, msg: text, cid };
  const bytes = new TextEncoder().encode(JSON.stringify(probe)).length;
  if (bytes > MAX_FRAME_BYTES) {
    showError(`That message is too long: ${Math.ceil(bytes / 1024)} KB, the limit is 64 KB.`);
    return;
  }
  box.value = "";
  model.compose(conv.kind, conv.id, text, cid);
  saved.saveOutbox(model.me.id, model.outbox);
  renderMessages({ toBottom: true });
  sendChat({ kind: conv.kind, id: conv.id, text, cid });
}

function onComposeKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
}

async function ask(frame, during) {
  hideError();
  try {
    const reply = await conn.request(frame);
    if (reply.errno !== 0) {
      showError(errorText(reply.errno, during));
      return null;
    }
    return reply;
  } catch (e) {
    if (e instanceof Disconnected) showError(NOT_CONNECTED);
    else throw e;
    return null;
  }
}

async function onAddFriend(event) {
  event.preventDefault();
  const id = parseId($("friend-id").value);
  if (id === null) {
    showError("A user id is a whole number.");
    return;
  }
  const reply = await ask({ msgid: MSG.ADD_FRIEND, friendid: id }, "user");
  if (!reply || !model) return;
  // The friend NOTICE brings the name and state; until it comes, what we know.
  if (!model.friends.has(id)) model.setFriend({ id, name: model.names.get(id) || `user ${id}`, state: "offline" });
  $("friend-id").value = "";
  renderSidebar();
}

async function onCreateGroup(event) {
  event.preventDefault();
  const groupname = $("group-name").value;
  const groupdesc = $("group-desc").value;
  const reply = await ask({ msgid: MSG.CREATE_GROUP, groupname, groupdesc }, "group");
  if (!reply || !model) return;
  const me = model.me;
  model.setGroup({
    id: reply.groupid,
    groupname,
    groupdesc,
    users: [{ id: me.id, name: me.name, state: "online", role: "creator" }],
  });
  $("group-name").value = "";
  $("group-desc").value = "";
  openConv("g", reply.groupid);
}

async function onJoinGroup(event) {
  event.preventDefault();
  const id = parseId($("join-id").value);
  if (id === null) {
    showError("A group id is a whole number.");
    return;
  }
  const reply = await ask({ msgid: MSG.ADD_GROUP, groupid: id }, "group");
  if (!reply || !model) return;
  const group = reply.group && typeof reply.group === "object" ? reply.group : null;
  if (group) {
    model.setGroup(group);
  } else if (!model.groups.has(id)) {
    const me = model.me;
    model.setGroup({ id, groupname: `group ${id}`, users: [{ id: me.id, name: me.name, state: "online", role: "normal" }] });
  }
  $("join-id").value = "";
  openConv("g", id);
}

async function loadHistory(conv) {
  if (!conv || conv.loading || conv.more === false || !conn || !conn.loggedIn) return;
  conv.loading = true;
  renderOlder();
  const frame = { msgid: MSG.HISTORY, limit: HISTORY_PAGE };
  if (conv.kind === "g") frame.groupid = conv.id;
  else frame.with = conv.id;
  const before = conv.oldestMid();
  if (conv.more !== null && before !== null) frame.before = before;
  const owner = model;
  try {
    const reply = await conn.request(frame);
    if (model !== owner) return;
    if (reply.errno !== 0) {
      showError(errorText(reply.errno, conv.kind === "g" ? "group" : "user"));
    } else {
      for (const m of reply.messages || []) {
        if (m.msgid !== MSG.ONE_CHAT && m.msgid !== MSG.GROUP_CHAT) {
          m.msgid = conv.kind === "g" ? MSG.GROUP_CHAT : MSG.ONE_CHAT;
        }
        model.addChat(m);
      }
      const first = conv.more === null;
      conv.more = reply.more === true;
      // History may have taught us names.
      renderSidebar();
      if (conv.key === active) {
        renderConvHeader();
        renderMessages(first ? { toBottom: true } : { keepAnchor: true });
      }
    }
  } catch {
    // Disconnected: asked again after the next login, or on scroll.
  } finally {
    conv.loading = false;
    renderOlder();
  }
}

// ---- conversations ------------------------------------------------------

function activeConv() {
  return active && model ? model.convs.get(active) || null : null;
}

function isWatched(conv) {
  return conv.key === active && document.visibilityState === "visible";
}

function onConvClick(event) {
  const button = event.target.closest("button[data-conv]");
  if (!button) return;
  const [kind, id] = button.dataset.conv.split(":");
  openConv(kind, Number(id));
}

function openConv(kind, id) {
  const conv = model.conv(kind, id);
  active = conv.key;
  document.body.classList.add("conv-open");
  markRead();
  renderAll();
  renderMessages({ toBottom: true });
  if (conv.more === null) loadHistory(conv);
  $("compose-text").focus();
}

function onBack() {
  const key = active;
  document.body.classList.remove("conv-open");
  const button = key && document.querySelector(`button[data-conv="${key}"]`);
  if (button) button.focus();
}

function markRead() {
  const conv = activeConv();
  if (conv && conv.unread > 0) {
    conv.unread = 0;
    schedulePersist();
    renderSidebar();
  }
}

function onScroll() {
  const list = $("messages");
  const conv = activeConv();
  if (conv && list.scrollTop < 80 && conv.more === true) loadHistory(conv);
}

// ---- rendering (view.js draws, this picks what) -------------------------

function renderSidebar() {
  if (model) view.renderSidebar(model, active);
}

function renderConvHeader() {
  if (model) view.renderConvHeader(model, activeConv());
}

function renderOlder() {
  view.renderOlder(activeConv());
}

function renderMessages(opts = {}) {
  if (model) view.renderMessages(model, activeConv(), opts);
}

function renderAll() {
  renderSidebar();
  renderConvHeader();
  renderMessages();
}

// ---- helpers ------------------------------------------------------------

function parseId(text) {
  const t = text.trim();
  if (!/^[0-9]{1,15}$/.test(t)) return null;
  return Number(t);
}

/** 128 random bits as hex: unique per sender (crypto.randomUUID needs a
 *  secure context, which plain http on a LAN address is not). */
function newCid() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

boot();
