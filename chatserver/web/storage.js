// What survives a reload, in localStorage: the session (id, name, token;
// never the password), and per user the last inbox `seq` the page holds,
// the unread counts and the messages written but not yet acknowledged. Storage that is full or disabled (private mode)
// only costs the resume: every access is guarded.

const SESSION = "chatchat.session";
const seqKey = (id) => `chatchat.seq.${id}`;
const unreadKey = (id) => `chatchat.unread.${id}`;
const outboxKey = (id) => `chatchat.outbox.${id}`;

function read(key) {
  try {
    const text = window.localStorage.getItem(key);
    return text === null ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

function write(key, value) {
  try {
    window.localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Full or disabled: the next reload asks for the password again.
  }
}

function remove(key) {
  try {
    window.localStorage.removeItem(key);
  } catch {
    // Nothing to do.
  }
}

/** { id, name, token } or null. */
export function session() {
  const s = read(SESSION);
  if (s && Number.isInteger(s.id) && typeof s.token === "string" && s.token) return s;
  return null;
}

export function saveSession(id, name, token) {
  write(SESSION, { id, name, token });
}

/** The highest inbox seq this browser holds for user `id` (0: none). */
export function seq(id) {
  const n = read(seqKey(id));
  return Number.isInteger(n) && n > 0 ? n : 0;
}

export function saveSeq(id, n) {
  write(seqKey(id), n);
}

export function unread(id) {
  return read(unreadKey(id)) || {};
}

export function saveUnread(id, counts) {
  write(unreadKey(id), counts);
}

/** Messages written and not yet acknowledged: [{ kind, id, text, cid }]. */
export function outbox(id) {
  return read(outboxKey(id)) || [];
}

export function saveOutbox(id, items) {
  if (items.length === 0) remove(outboxKey(id));
  else write(outboxKey(id), items);
}

/** Logging out forgets everything about the user in this browser. */
export function forget(id) {
  remove(SESSION);
  remove(seqKey(id));
  remove(unreadKey(id));
  remove(outboxKey(id));
}
