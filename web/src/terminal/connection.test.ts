// The terminal connection's protocol handling, with xterm.js and the WebSocket replaced by
// stand-ins (the browser tests drive the real ones against the gateway).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

vi.mock('@xterm/xterm', () => {
  class Terminal {
    cols = 80;
    rows = 24;
    written: (string | Uint8Array)[] = [];
    dataHandler: ((d: string) => void) | null = null;
    resizeHandler: ((s: { cols: number; rows: number }) => void) | null = null;
    loadAddon() {}
    open() {}
    onData(f: (d: string) => void) {
      this.dataHandler = f;
    }
    onBinary() {}
    onResize(f: (s: { cols: number; rows: number }) => void) {
      this.resizeHandler = f;
    }
    attachCustomKeyEventHandler() {}
    write(d: string | Uint8Array) {
      this.written.push(d);
    }
    focus() {}
    dispose() {}
    getSelection() {
      return '';
    }
  }
  return { Terminal };
});
vi.mock('@xterm/addon-fit', () => ({ FitAddon: class { fit() {} } }));

class FakeSocket {
  static OPEN = 1;
  static all: FakeSocket[] = [];
  readyState = 0;
  binaryType = '';
  sent: (string | Uint8Array)[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(d: string | Uint8Array) {
    this.sent.push(d);
  }
  close() {}
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  control(msg: object) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

const { TerminalConnection } = await import('./connection');

describe('terminal connection', () => {
  let states: [string, string][];
  beforeEach(() => {
    vi.useFakeTimers();
    FakeSocket.all = [];
    states = [];
    vi.stubGlobal('WebSocket', FakeSocket);
    vi.stubGlobal('ResizeObserver', class { observe() {} disconnect() {} });
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });
  const connect = () =>
    new TerminalConnection(document.createElement('div'), 'ws://gw/terminal/cap/ws', { state: (s, t) => states.push([s, t]) });

  it('sends its size on open, keystrokes as binary, and says ready when the shell is', () => {
    const c = connect();
    const ws = FakeSocket.all[0];
    expect(ws.url).toBe('ws://gw/terminal/cap/ws');
    ws.open();
    expect(JSON.parse(ws.sent[0] as string)).toEqual({ type: 'resize', cols: 80, rows: 24 });
    ws.control({ type: 'ready', target: 'control-plane', terminalId: 't-1' });
    expect(states.at(-1)).toEqual(['ready', 'Connected to control-plane']);
    (c.term as unknown as { dataHandler: (d: string) => void }).dataHandler('ls\r');
    expect(ws.sent.at(-1)).toEqual(new TextEncoder().encode('ls\r'));
    (c.term as unknown as { resizeHandler: (s: object) => void }).resizeHandler({ cols: 120, rows: 40 });
    expect(JSON.parse(ws.sent.at(-1) as string)).toEqual({ type: 'resize', cols: 120, rows: 40 });
  });

  it('reconnects to the same URL after a blip, and not after a reason a retry cannot fix', () => {
    const c = connect() as unknown as { term: { written: unknown[] } };
    FakeSocket.all[0].open();
    FakeSocket.all[0].drop(1006);
    expect(states.at(-1)?.[0]).toBe('reconnecting');
    vi.advanceTimersByTime(500);
    expect(FakeSocket.all).toHaveLength(2);
    expect(FakeSocket.all[1].url).toBe('ws://gw/terminal/cap/ws');
    const ws = FakeSocket.all[1];
    ws.open();
    ws.control({ type: 'ready', target: 'control-plane' });
    expect(String(c.term.written.at(-1))).toContain('new shell');
    ws.control({ type: 'closed', reason: 'session-ended', message: 'The session ended.' });
    ws.drop(4003);
    expect(states.at(-1)).toEqual(['closed', 'The session ended.']);
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(2);
  });

  it('gives up after its attempts and says so', () => {
    connect();
    for (let i = 0; i < 11; i++) {
      FakeSocket.all.at(-1)!.drop(1006);
      vi.advanceTimersByTime(10_000);
    }
    expect(FakeSocket.all).toHaveLength(11);
    expect(states.at(-1)?.[0]).toBe('closed');
    expect(states.at(-1)?.[1]).toContain('could not be restored');
  });
});
