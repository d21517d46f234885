// Minimal terminal of cks-gateway, used when the web page build is not installed: a
// line-oriented view of the shell (escape sequences dropped) that sends every key.
(function () {
  "use strict";
  var screen = document.getElementById("screen");
  var status = document.getElementById("status");
  var decoder = new TextDecoder();
  var encoder = new TextEncoder();
  var scheme = location.protocol === "https:" ? "wss:" : "ws:";
  var ws = new WebSocket(scheme + "//" + location.host + location.pathname.replace(/\/$/, "") + "/ws");
  ws.binaryType = "arraybuffer";

  function write(text) {
    // Drop CSI/OSC escape sequences and handle backspace and carriage return simply.
    text = text.replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "").replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "")
      .replace(/\x1b[()][0-9A-Za-z]|\x1b[=>78]/g, "").replace(/\r\n/g, "\n");
    var out = screen.textContent;
    for (var i = 0; i < text.length; i++) {
      var c = text[i];
      if (c === "\b") { out = out.slice(0, -1); }
      else if (c === "\r") { out = out.slice(0, out.lastIndexOf("\n") + 1); }
      else if (c === "\x07") { continue; }
      else { out += c; }
    }
    screen.textContent = out.length > 200000 ? out.slice(-150000) : out;
    screen.scrollTop = screen.scrollHeight;
  }

  function send(text) {
    if (ws.readyState === WebSocket.OPEN) { ws.send(encoder.encode(text)); }
  }

  ws.onopen = function () {
    var cols = Math.max(20, Math.floor(screen.clientWidth / 8.4));
    var rows = Math.max(5, Math.floor(screen.clientHeight / 18.2));
    ws.send(JSON.stringify({ type: "resize", cols: cols, rows: rows }));
    screen.focus();
  };
  ws.onmessage = function (ev) {
    if (typeof ev.data === "string") {
      var msg = JSON.parse(ev.data);
      if (msg.type === "ready") { status.textContent = msg.target; }
      if (msg.type === "closed") { status.textContent = "closed"; write("\n[" + msg.message + "]\n"); }
      return;
    }
    write(decoder.decode(new Uint8Array(ev.data), { stream: true }));
  };
  ws.onclose = function () { status.textContent = "closed"; };

  var keys = { Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A",
    ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F",
    Delete: "\x1b[3~" };
  screen.addEventListener("keydown", function (ev) {
    var data = null;
    if (ev.ctrlKey && ev.key.length === 1) {
      var code = ev.key.toUpperCase().charCodeAt(0);
      if (code >= 64 && code <= 95) { data = String.fromCharCode(code - 64); }
    } else if (keys[ev.key]) { data = keys[ev.key]; }
    else if (ev.key.length === 1 && !ev.metaKey) { data = ev.key; }
    if (data !== null) { ev.preventDefault(); send(data); }
  });
  screen.addEventListener("paste", function (ev) {
    ev.preventDefault();
    send((ev.clipboardData || window.clipboardData).getData("text"));
  });
})();
