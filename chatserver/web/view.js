// The page's DOM: lists, conversation, banners and views, drawn from the
// model. Nodes are kept and updated in place (keyed by conversation and by
// message), so focus, scroll position and element identity survive a
// redraw. Every user or server text goes in with textContent.

import { stateText, timeText } from "./words.js";

const $ = (id) => document.getElementById(id);
/** message object → its <li> */
const nodes = new WeakMap();

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function presenceDot(state) {
  const dot = el("span", `presence ${state === "online" ? "online" : "offline"}`);
  dot.append(el("span", "visually-hidden", state === "online" ? "online" : "offline"));
  return dot;
}

/** conversation key → its <li> in the lists, reused across renders so
 *  that a keyboard user's focus stays on its button. */
const convItems = new Map();

/** Puts `prefix`, `name` (isolated in a <bdi>) and `suffix` in `node`. */
function label(node, [prefix, name, suffix]) {
  node.replaceChildren(prefix, el("bdi", null, name), suffix);
}

function convItem(conv, parts, state, active) {
  let item = convItems.get(conv.key);
  if (!item) {
    const button = el("button", "conv");
    button.type = "button";
    button.dataset.conv = conv.key;
    button.append(presenceDot("offline"), el("span", "conv-name"), el("span", "unread"));
    item = el("li");
    item.append(button);
    convItems.set(conv.key, item);
  }
  const button = item.firstChild;
  const [dot, name, badge] = button.children;
  if (conv.key === active) button.setAttribute("aria-current", "true");
  else button.removeAttribute("aria-current");
  dot.hidden = state === undefined;
  const online = state === "online";
  dot.className = `presence ${online ? "online" : "offline"}`;
  dot.firstChild.textContent = online ? "online" : "offline";
  label(name, parts);
  badge.textContent = String(conv.unread);
  badge.hidden = conv.unread === 0;
  badge.setAttribute("aria-label", `${conv.unread} unread`);
  return item;
}

/** Puts `items` in `list` in order, moving only what moved. */
function reconcile(list, items) {
  let cursor = list.firstChild;
  const keep = new Set(items);
  for (const item of items) {
    if (item === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(item, cursor);
  }
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
}

/** The friend and group lists, and the unread total in the title. */
export function renderSidebar(model, active) {
  const people = [];
  for (const f of model.friends.values()) {
    people.push(convItem(model.conv("u", f.id), ["", f.name, ` (${f.id})`], f.state, active));
  }
  for (const conv of model.convs.values()) {
    if (conv.kind === "u" && !model.friends.has(conv.id) && (conv.messages.size > 0 || conv.unread > 0)) {
      const [prefix, name, suffix] = model.title(conv);
      people.push(convItem(conv, [prefix, name, `${suffix} · not a friend`], undefined, active));
    }
  }
  reconcile($("friend-list"), people);
  $("no-friends").hidden = people.length > 0;
  const groups = [];
  for (const g of model.groups.values()) {
    groups.push(convItem(model.conv("g", g.id), ["# ", g.name, ` (${g.id})`], undefined, active));
  }
  reconcile($("group-list"), groups);
  $("no-groups").hidden = groups.length > 0;
  let total = 0;
  for (const conv of model.convs.values()) total += conv.unread;
  document.title = total > 0 ? `(${total}) ChatChat` : "ChatChat";
}

/** The open conversation's title, description and member list. */
export function renderConvHeader(model, conv) {
  if (conv) label($("conv-title"), model.title(conv));
  else $("conv-title").textContent = "Choose a conversation";
  $("composer").hidden = !conv;
  const group = conv && conv.kind === "g" ? model.groups.get(conv.id) : null;
  $("members").hidden = !group;
  if (group) {
    $("members-count").textContent = `Members (${group.members.size})`;
    const items = [...group.members.values()].map((m) => {
      const item = el("li", "member");
      const name = el("span", "member-name");
      label(name, ["", m.name, ` (${m.id})`]);
      item.append(presenceDot(m.state), name);
      if (m.role === "creator") item.append(el("span", "role", "creator"));
      return item;
    });
    $("member-list").replaceChildren(...items);
  }
  if (group && group.desc) {
    $("conv-desc").textContent = group.desc;
    $("conv-desc").hidden = false;
  } else {
    $("conv-desc").hidden = true;
  }
}

/** The "load older" button and the "start of the conversation" line. */
export function renderOlder(conv) {
  const button = $("older");
  button.hidden = !conv || conv.more !== true;
  button.disabled = !!conv && conv.loading;
  button.textContent = conv && conv.loading ? "Loading older messages…" : "Load older messages";
  $("history-start").hidden = !conv || conv.more !== false;
}

function messageNode(model, msg) {
  let node = nodes.get(msg);
  if (!node) {
    node = el("li", "msg");
    const meta = el("div", "meta");
    meta.append(el("span", "sender"), el("time", "ts"));
    const text = el("div", "text");
    text.dir = "auto";
    node.append(meta, text, el("div", "state"));
    nodes.set(msg, node);
  }
  const mine = msg.from === model.me.id;
  node.classList.toggle("mine", mine);
  node.dataset.state = msg.state;
  node.dataset.mid = msg.mid === null ? "" : String(msg.mid);
  const [sender, ts] = node.firstChild.children;
  if (mine) sender.textContent = "You";
  else label(sender, ["", msg.fromName || model.names.get(msg.from) || "user", ` (${msg.from})`]);
  ts.textContent = timeText(msg.ts);
  const text = node.children[1];
  if (text.textContent !== msg.text) text.textContent = msg.text;
  node.children[2].textContent = mine ? stateText(msg) : "";
  return node;
}

/** Brings the list in line with the open conversation, moving only the
 *  nodes that changed. Sticks to the bottom when the reader was there;
 *  keeps the reader's place when older messages came in above. */
export function renderMessages(model, conv, opts = {}) {
  const list = $("messages");
  renderOlder(conv);
  if (!conv) {
    list.replaceChildren();
    return;
  }
  if (list.dataset.conv !== conv.key) {
    list.replaceChildren();
    list.dataset.conv = conv.key;
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const fromBottom = list.scrollHeight - list.scrollTop;
  const keep = new Set();
  let cursor = list.firstChild;
  for (const msg of conv.sorted()) {
    const node = messageNode(model, msg);
    keep.add(node);
    if (node === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(node, cursor);
  }
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
  if (opts.toBottom || (atBottom && !opts.keepAnchor)) list.scrollTop = list.scrollHeight;
  else if (opts.keepAnchor) list.scrollTop = list.scrollHeight - fromBottom;
}

/** The log-in view, with nothing of the previous user left in the page. */
export function showAuthView() {
  $("auth-view").hidden = false;
  $("chat-view").hidden = true;
  $("logout").hidden = true;
  $("whoami").hidden = true;
  $("whoami").textContent = "";
  convItems.clear();
  $("friend-list").replaceChildren();
  $("group-list").replaceChildren();
  $("messages").replaceChildren();
  delete $("messages").dataset.conv;
  document.body.classList.remove("conv-open");
  document.title = "ChatChat";
}

export function showChatView(me) {
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("logout").hidden = false;
  $("whoami").hidden = false;
  $("whoami").textContent = `${me.name} · id ${me.id}`;
}

export function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

export function hideError() {
  $("error").hidden = true;
}
