// The client's state, with no DOM and no socket: friends, groups, the
// conversations and their messages (deduplicated by `mid`), unread counts,
// and the outbox of messages not yet acknowledged. The page and the
// connection both talk to it; it talks to neither.

/** A conversation's key: "u:ID" for a user, "g:ID" for a group. */
export function convKey(kind, id) {
  return `${kind}:${id}`;
}

/** A conversation: its messages keyed by `mid` (or `c:CID` while sending). */
export class Conversation {
  constructor(kind, id) {
    this.kind = kind;
    this.id = id;
    this.key = convKey(kind, id);
    this.messages = new Map();
    this.unread = 0;
    /** Whether older messages may exist on the server (null: never asked). */
    this.more = null;
    this.loading = false;
  }

  /** The smallest `mid` held: where the next history page ends. */
  oldestMid() {
    let oldest = null;
    for (const message of this.messages.values()) {
      if (message.mid !== null && (oldest === null || message.mid < oldest)) {
        oldest = message.mid;
      }
    }
    return oldest;
  }

  /** Messages in display order: stored ones by (ts, mid), then the ones
   *  still sending in the order they were written. */
  sorted() {
    return [...this.messages.values()].sort((a, b) => {
      if (a.mid === null || b.mid === null) {
        if (a.mid !== null) return -1;
        if (b.mid !== null) return 1;
        return a.order - b.order;
      }
      return a.ts - b.ts || a.mid - b.mid;
    });
  }
}

let nextOrder = 0;

/** A message as the page shows it. */
function message(fields) {
  return {
    mid: null,
    cid: null,
    from: 0,
    fromName: "",
    text: "",
    ts: NaN,
    state: "received",
    error: "",
    order: nextOrder++,
    ...fields,
  };
}

export class Model {
  constructor(me) {
    /** { id, name } of the user logged in. */
    this.me = me;
    /** id → { id, name, state } */
    this.friends = new Map();
    /** id → { id, name, desc, members: Map(id → { id, name, state, role }) } */
    this.groups = new Map();
    /** key → Conversation */
    this.convs = new Map();
    /** user id → name, from whatever told us */
    this.names = new Map();
    /** Messages sent and not acknowledged, oldest first. */
    this.outbox = [];
  }

  /** Takes friends and groups from a (v2) LOGIN_ACK: the source of truth. */
  applyLogin(ack) {
    this.me = { id: ack.id, name: ack.name };
    this.friends.clear();
    for (const f of ack.friends || []) this.setFriend(f);
    this.groups.clear();
    for (const g of ack.groups || []) this.setGroup(g);
  }

  setFriend(f) {
    this.friends.set(f.id, { id: f.id, name: f.name, state: f.state || "offline" });
    this.names.set(f.id, f.name);
  }

  /** A group as LOGIN_ACK and the ADD_GROUP ACK describe it. */
  setGroup(g) {
    const members = new Map();
    for (const u of g.users || []) {
      members.set(u.id, { id: u.id, name: u.name, state: u.state || "offline", role: u.role });
      this.names.set(u.id, u.name);
    }
    this.groups.set(g.id, { id: g.id, name: g.groupname, desc: g.groupdesc || "", members });
  }

  /** NOTICE presence: a user logged in or out. */
  setPresence(id, state) {
    const friend = this.friends.get(id);
    if (friend) friend.state = state;
    for (const group of this.groups.values()) {
      const member = group.members.get(id);
      if (member) member.state = state;
    }
  }

  /** NOTICE member: someone joined a group we are in. */
  addMember(groupid, id, name, role, state) {
    const group = this.groups.get(groupid);
    if (!group) return;
    group.members.set(id, { id, name, role: role || "normal", state: state || "online" });
    this.names.set(id, name);
  }

  conv(kind, id) {
    const key = convKey(kind, id);
    let conv = this.convs.get(key);
    if (!conv) {
      conv = new Conversation(kind, id);
      this.convs.set(key, conv);
    }
    return conv;
  }

  /** The conversation a chat frame (pushed or from HISTORY) belongs to. */
  convOf(frame) {
    if (frame.msgid === 10) return this.conv("g", frame.groupid);
    const other = frame.id === this.me.id ? frame.toid : frame.id;
    return this.conv("u", other);
  }

  /** Adds a chat frame unless its `mid` is already there; returns the
   *  conversation and whether it was new. */
  addChat(frame) {
    const conv = this.convOf(frame);
    if (frame.id !== this.me.id && frame.name) this.names.set(frame.id, frame.name);
    if (conv.messages.has(frame.mid)) return { conv, added: false };
    conv.messages.set(
      frame.mid,
      message({
        mid: frame.mid,
        from: frame.id,
        fromName: frame.name || "",
        text: typeof frame.msg === "string" ? frame.msg : "",
        ts: frame.ts,
        state: frame.id === this.me.id ? "stored" : "received",
      }),
    );
    return { conv, added: true };
  }

  /** A message the user wrote: shown at once as "sending", queued until
   *  its ACK. `cid` makes a re-send after a reconnect harmless. */
  compose(kind, id, text, cid) {
    const conv = this.conv(kind, id);
    const msg = message({
      cid,
      from: this.me.id,
      fromName: this.me.name,
      text,
      state: "sending",
    });
    conv.messages.set(`c:${cid}`, msg);
    this.outbox.push({ kind, id, text, cid });
    return conv;
  }

  /** Messages a previous page wrote and never saw acknowledged: shown as
   *  sending again, re-sent (same cid) after the login. */
  restoreOutbox(items) {
    for (const o of Array.isArray(items) ? items : []) {
      const valid =
        (o.kind === "u" || o.kind === "g") &&
        Number.isInteger(o.id) &&
        typeof o.text === "string" &&
        typeof o.cid === "string";
      if (valid && !this.outbox.some((p) => p.cid === o.cid)) this.compose(o.kind, o.id, o.text, o.cid);
    }
  }

  /** The ACK of a sent message. errno 0: stored under its `mid` (merged
   *  with a copy HISTORY may have brought meanwhile). */
  acknowledge(kind, id, cid, reply, errorText) {
    this.outbox = this.outbox.filter((o) => o.cid !== cid);
    const conv = this.conv(kind, id);
    const msg = conv.messages.get(`c:${cid}`);
    if (!msg) return conv;
    if (reply.errno !== 0) {
      msg.state = "failed";
      msg.error = errorText;
      return conv;
    }
    conv.messages.delete(`c:${cid}`);
    if (!conv.messages.has(reply.mid)) {
      msg.mid = reply.mid;
      msg.ts = Number.isFinite(reply.ts) ? reply.ts : Date.now();
      msg.state = "stored";
      conv.messages.set(reply.mid, msg);
    }
    return conv;
  }

  /** A conversation's display name as [prefix, name, suffix]: the name
   *  is shown isolated (a right-to-left name cannot swallow the id). */
  title(conv) {
    if (conv.kind === "g") {
      const group = this.groups.get(conv.id);
      return group ? ["# ", group.name, ` (${conv.id})`] : ["# ", "group", ` ${conv.id}`];
    }
    const name = this.names.get(conv.id);
    return name ? ["", name, ` (${conv.id})`] : ["", "user", ` ${conv.id}`];
  }

  /** Unread counts by conversation key, for storage. */
  unreadCounts() {
    const counts = {};
    for (const conv of this.convs.values()) if (conv.unread > 0) counts[conv.key] = conv.unread;
    return counts;
  }

  restoreUnread(counts) {
    for (const [key, n] of Object.entries(counts || {})) {
      const [kind, id] = key.split(":");
      if ((kind === "u" || kind === "g") && Number.isInteger(n) && n > 0) {
        this.conv(kind, Number(id)).unread = n;
      }
    }
  }
}
