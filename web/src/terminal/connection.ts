// One terminal: an xterm.js screen bridged to the gateway's terminal WebSocket
// (/work docs: docs/web.md "Terminal"). Binary frames carry terminal bytes both ways; text
// frames carry JSON control messages (resize, ping/pong, ready, closed). The screen follows its
// container's size through the fit add-on; a dropped connection is retried with backoff while
// the server has not said why it closed.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { closeOutcome, MAX_RECONNECTS, reconnectDelay } from '../logic';

export type TerminalState = 'connecting' | 'ready' | 'reconnecting' | 'closed';

export interface TerminalEvents {
  state(state: TerminalState, text: string): void;
}

const encoder = new TextEncoder();

export class TerminalConnection {
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private ws: WebSocket | null = null;
  private attempts = 0;
  private closedFor: { reason: string; message: string } | null = null;
  private done = false;
  private timer: number | undefined;
  private pinger: number | undefined;
  private readonly observer: ResizeObserver;

  constructor(
    private readonly container: HTMLElement,
    private readonly url: string,
    private readonly events: TerminalEvents,
  ) {
    const theme = document.documentElement.dataset.theme;
    const dark = theme ? theme === 'dark' : !window.matchMedia || window.matchMedia('(prefers-color-scheme: dark)').matches;
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 5000,
      allowProposedApi: false,
      theme: dark
        ? { background: '#0f1419', foreground: '#e6e1cf', cursor: '#ffcc66' }
        : { background: '#fbfbfb', foreground: '#1f2328', cursor: '#1f2328', selectionBackground: '#b6d4fe' },
    });
    this.term.loadAddon(this.fit);
    this.term.open(container);
    this.term.onData((data) => this.send(encoder.encode(data)));
    this.term.onBinary((data) => this.send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    // Copy with Ctrl+Shift+C (Ctrl+C is the shell's interrupt); paste goes through the browser's paste event.
    this.term.attachCustomKeyEventHandler((e) => {
      if (e.type === 'keydown' && e.ctrlKey && e.shiftKey && e.code === 'KeyC') {
        const sel = this.term.getSelection();
        if (sel) void navigator.clipboard?.writeText(sel).catch(() => undefined);
        return false;
      }
      return true;
    });
    this.term.onResize(({ cols, rows }) => this.control({ type: 'resize', cols, rows }));
    this.observer = new ResizeObserver(() => this.refit());
    this.observer.observe(container);
    this.refit();
    this.connect();
  }

  /** Fits the screen to its container; a hidden container (size 0) keeps the last size. */
  refit(): void {
    if (this.container.clientWidth > 0 && this.container.clientHeight > 0) {
      try {
        this.fit.fit();
      } catch {
        // not rendered yet
      }
    }
  }

  focus(): void {
    this.term.focus();
  }

  dispose(): void {
    this.done = true;
    window.clearTimeout(this.timer);
    window.clearInterval(this.pinger);
    this.observer.disconnect();
    this.ws?.close(1000);
    this.term.dispose();
  }

  private send(bytes: Uint8Array<ArrayBuffer>): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  private control(msg: object): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private connect(): void {
    this.closedFor = null;
    this.events.state(this.attempts ? 'reconnecting' : 'connecting', this.attempts ? 'Reconnecting…' : 'Connecting…');
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.control({ type: 'resize', cols: this.term.cols, rows: this.term.rows });
      // Keeps idle proxies from cutting the connection (the server answers pong).
      window.clearInterval(this.pinger);
      this.pinger = window.setInterval(() => this.control({ type: 'ping' }), 25_000);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        this.onControl(ev.data);
      } else {
        this.term.write(new Uint8Array(ev.data as ArrayBuffer));
      }
    };
    ws.onclose = (ev) => {
      window.clearInterval(this.pinger);
      if (this.done || ws !== this.ws) return;
      const outcome = closeOutcome(this.closedFor?.reason ?? null, ev.code, this.closedFor?.message);
      if (outcome.reconnect && this.attempts < MAX_RECONNECTS) {
        const delay = reconnectDelay(this.attempts++);
        this.events.state('reconnecting', outcome.text);
        this.timer = window.setTimeout(() => this.connect(), delay);
      } else {
        this.events.state('closed', outcome.reconnect ? 'The connection could not be restored. Open a new terminal from the lab.' : outcome.text);
        this.term.write(`\r\n\x1b[2m[${outcome.reconnect ? 'connection lost' : outcome.text}]\x1b[0m\r\n`);
      }
    };
  }

  private onControl(text: string): void {
    let msg: { type?: string; reason?: string; message?: string; target?: string };
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === 'ready') {
      // A reconnect gets a new shell: say so, instead of its prompt running on after the old one.
      if (this.attempts > 0) this.term.write('\r\n\x1b[2m[reconnected: this is a new shell]\x1b[0m\r\n');
      this.attempts = 0;
      this.events.state('ready', `Connected to ${msg.target ?? 'the node'}`);
      this.refit();
      this.control({ type: 'resize', cols: this.term.cols, rows: this.term.rows });
    } else if (msg.type === 'closed') {
      this.closedFor = { reason: msg.reason ?? '', message: msg.message ?? '' };
    }
  }
}
