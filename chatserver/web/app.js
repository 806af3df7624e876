// Placeholder web client: connects to /ws and shows the server's PONG.
// The real client replaces this file.
"use strict";
(function () {
  const status = document.getElementById("status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/ws");
  ws.onopen = () => ws.send(JSON.stringify({ msgid: 12, v: 2, rid: 1 }));
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    status.textContent = "connected to " + (frame.server || "?");
  };
  ws.onclose = (event) => {
    status.textContent = "disconnected: " + (event.reason || event.code);
  };
})();
