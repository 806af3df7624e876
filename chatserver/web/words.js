// What the user reads: errnos in plain words, times, delivery states.
// Kept apart from the protocol and the DOM so that every message a user can
// see is written in one place.

/** Plain words for each errno of PROTOCOL.md; `during` picks the wording
 *  where one errno means different things (1: login vs. register). */
export function errorText(errno, during) {
  switch (errno) {
    case 1:
      return during === "register"
        ? "That name is already taken. Pick another one."
        : "Wrong user id or password.";
    case 2:
      return "This account is signed in somewhere else. Log out there first.";
    case 3:
      return "A group with that name already exists. Pick another name.";
    case 4:
      return during === "group"
        ? "There is no group with that id."
        : "There is no user with that id.";
    case 5:
      return "You are not a member of that group. Join it first.";
    case 6:
      return "The server did not understand that request.";
    case 7:
      return "You are not logged in.";
    case 8:
      return "That message is too long.";
    case 9:
      return "Too many attempts. Wait a minute and try again.";
    case 10:
      return "The server could not save that just now. Try again in a moment.";
    default:
      return `The server refused that (error ${errno}).`;
  }
}

/** Why a request got no answer. */
export const NOT_CONNECTED = "Not connected to the server. Try again once it says online.";

/** `ts` (ms since the epoch) as a short local time; the date too when it
 *  is not today. */
export function timeText(ts) {
  if (!Number.isFinite(ts)) return "";
  const when = new Date(ts);
  const now = new Date();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (when.toDateString() === now.toDateString()) return time;
  return `${when.toLocaleDateString()} ${time}`;
}

/** What a sent message's state reads as. */
export function stateText(message) {
  switch (message.state) {
    case "sending":
      return "sending…";
    case "stored":
      return "stored";
    case "failed":
      return `not sent: ${message.error}`;
    default:
      return "";
  }
}

/** The words for the connection status line. */
export function statusText(status, detail) {
  switch (status) {
    case "connecting":
      return "Connecting…";
    case "online":
      return "Online";
    case "waiting":
      return `Offline, reconnecting in ${Math.ceil(detail / 1000)} s…`;
    case "offline":
      return "Offline";
    default:
      return "";
  }
}
