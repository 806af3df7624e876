// The WebSocket to the chat server: one v2 JSON frame per text message,
// requests matched to replies by `rid`, login (password, or token and
// `since`) on every (re)connect, reconnection with exponential backoff and
// jitter, GOAWAY's `retry_ms` honoured, and a PING keepalive. It knows
// nothing of the page: it reports through the handlers it was given.

export const MSG = {
  LOGIN: 1,
  LOGIN_ACK: 2,
  LOGOUT: 3,
  REGISTER: 4,
  REGISTER_ACK: 5,
  ONE_CHAT: 6,
  ADD_FRIEND: 7,
  CREATE_GROUP: 8,
  ADD_GROUP: 9,
  GROUP_CHAT: 10,
  ACK: 11,
  PING: 12,
  PONG: 13,
  DELIVERED: 14,
  HISTORY: 15,
  GOAWAY: 16,
  NOTICE: 17,
};

/** How long a request may wait for its reply before the connection is
 *  deemed dead and replaced. */
const REPLY_TIMEOUT_MS = 15000;
/** A PING this often keeps the session inside the server's v2 idle
 *  timeout (90 s by default) and finds dead connections. */
const KEEPALIVE_MS = 25000;
/** Reconnect delays: the n-th failed attempt in a row waits between half
 *  and all of min(MAX, BASE * 2^n). */
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30000;

/** The WebSocket address of the server that served this page. */
export function socketUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** A request that failed without a reply: the connection went away. */
export class Disconnected extends Error {}

/** One-shot REGISTER on a socket of its own (no login needed). */
export function register(url, name, password) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      reject(new Disconnected(String(e)));
      return;
    }
    const timer = setTimeout(() => {
      ws.close();
      reject(new Disconnected("no reply"));
    }, REPLY_TIMEOUT_MS);
    ws.onopen = () =>
      ws.send(JSON.stringify({ msgid: MSG.REGISTER, v: 2, rid: 1, name, password }));
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.msgid !== MSG.REGISTER_ACK) return;
      clearTimeout(timer);
      ws.close();
      resolve(frame);
    };
    ws.onclose = () => {
      clearTimeout(timer);
      reject(new Disconnected("closed"));
    };
  });
}

export class Connection {
  /**
   * handlers: {
   *   status(status, detail)   "connecting" | "online" | "waiting" (detail: ms) | "offline"
   *   loggedIn(ack)            every successful LOGIN_ACK (first login and each resume)
   *   loginRefused(ack)        a LOGIN_ACK that retrying will not fix; the connection stops
   *   frame(frame)             pushes: chats, NOTICE
   * }
   * credentials(): { id, token } or { id, password }, plus since when known,
   * asked at every connect so that a resume carries the latest token and seq.
   */
  constructor(url, handlers, credentials) {
    this.url = url;
    this.handlers = handlers;
    this.credentials = credentials;
    this.ws = null;
    this.loggedIn = false;
    this.stopped = false;
    this.failures = 0;
    this.goawayDelay = null;
    this.nextRid = 1;
    this.pending = new Map();
    this.retryTimer = null;
    this.keepalive = null;
    this.onOnline = () => {
      if (!this.ws && !this.stopped) this.connectNow();
    };
    window.addEventListener("online", this.onOnline);
  }

  start() {
    this.connectNow();
  }

  /** Stops for good: no reconnect, pending requests fail. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    window.removeEventListener("online", this.onOnline);
    if (this.ws) this.ws.close();
    this.dropConnection();
  }

  connectNow() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped) return;
    this.handlers.status("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.sendLogin(ws);
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.dropConnection();
      this.scheduleReconnect();
    };
  }

  sendLogin(ws) {
    const rid = this.nextRid++;
    const { id, token, password, since } = this.credentials();
    const frame = { msgid: MSG.LOGIN, v: 2, rid, id };
    if (token) frame.token = token;
    else frame.password = password;
    if (Number.isInteger(since) && since > 0) frame.since = since;
    this.track(rid, (reply) => this.loginReplied(ws, reply));
    ws.send(JSON.stringify(frame));
  }

  loginReplied(ws, ack) {
    if (ack.errno === 0) {
      this.loggedIn = true;
      this.failures = 0;
      this.goawayDelay = null;
      this.keepalive = setInterval(() => {
        this.request({ msgid: MSG.PING }).catch(() => {});
      }, KEEPALIVE_MS);
      this.handlers.status("online");
      this.handlers.loggedIn(ack);
      return;
    }
    // Already logged in (the server has not yet seen our old connection
    // go) and rate limits pass with time; anything else will not.
    if (ack.errno === 2 || ack.errno === 9 || ack.errno === 10) {
      ws.close();
      return;
    }
    this.stop();
    this.handlers.status("offline");
    this.handlers.loginRefused(ack);
  }

  /** Forgets the current socket: pending requests fail, timers stop. */
  dropConnection() {
    this.ws = null;
    this.loggedIn = false;
    clearInterval(this.keepalive);
    this.keepalive = null;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.fail(new Disconnected("connection lost"));
    }
  }

  scheduleReconnect() {
    if (this.stopped) return;
    let delay;
    if (this.goawayDelay !== null) {
      delay = this.goawayDelay;
      this.goawayDelay = null;
    } else {
      const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(this.failures, 16));
      delay = cap / 2 + Math.random() * (cap / 2);
      this.failures += 1;
    }
    this.handlers.status("waiting", delay);
    this.retryTimer = setTimeout(() => this.connectNow(), delay);
  }

  receive(ws, data) {
    if (this.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.rid !== undefined && this.pending.has(frame.rid)) {
      const p = this.pending.get(frame.rid);
      this.pending.delete(frame.rid);
      clearTimeout(p.timer);
      p.done(frame);
      return;
    }
    if (frame.msgid === MSG.GOAWAY) {
      const retry = Number.isFinite(frame.retry_ms) ? Math.max(0, frame.retry_ms) : 0;
      this.goawayDelay = Math.random() * retry;
      return;
    }
    if (this.loggedIn) this.handlers.frame(frame);
  }

  track(rid, done, fail = () => {}) {
    const timer = setTimeout(() => {
      // No answer: the connection is as good as dead. Closing it fails
      // every pending request and reconnects.
      if (this.ws) this.ws.close();
    }, REPLY_TIMEOUT_MS);
    this.pending.set(rid, { done, fail, timer });
  }

  /** Sends a request once logged in; resolves with its reply, rejects with
   *  Disconnected when there is no connection or it went away. */
  request(frame) {
    return new Promise((resolve, reject) => {
      if (!this.loggedIn || !this.ws) {
        reject(new Disconnected("not connected"));
        return;
      }
      const rid = this.nextRid++;
      this.track(rid, resolve, reject);
      this.ws.send(JSON.stringify({ ...frame, v: 2, rid }));
    });
  }

  /** A frame that gets no reply (DELIVERED); dropped when offline. */
  notify(frame) {
    if (this.loggedIn && this.ws) this.ws.send(JSON.stringify(frame));
  }
}
