// The embeddable terminal page (`/terminal/<capability>`): one full-window terminal on the
// capability in its own URL. The lab embeds it in tabs; the reference frontend's iframes too.

import '@xterm/xterm/css/xterm.css';
import '../terminal.css';
import { capabilityFromPath, terminalSocketUrl } from '../logic';
import { TerminalConnection } from './connection';

// The app's theme switch (same origin) applies here too; else the system's scheme.
const saved = localStorage.getItem('cks-theme');
if (saved === 'light' || saved === 'dark') document.documentElement.dataset.theme = saved;

const status = document.getElementById('terminal-status') as HTMLElement;
const screen = document.getElementById('terminal') as HTMLElement;

if (!capabilityFromPath(location.pathname)) {
  status.dataset.state = 'closed';
  status.textContent = 'This is not a terminal link. Open a terminal from the lab.';
} else {
  const conn = new TerminalConnection(screen, terminalSocketUrl(location), {
    state(state, text) {
      status.dataset.state = state;
      status.textContent = text;
      document.title = `${state === 'closed' ? '(closed) ' : ''}Terminal · cks-lab`;
    },
  });
  // Embedded in a page (the lab, another frontend), the terminal must not take the keyboard
  // from that page when it finishes loading; it takes it when clicked or when the frame is
  // focused. On its own it takes it at once.
  if (window.top === window) conn.focus();
  window.addEventListener('focus', () => conn.focus());
  // Clicking anywhere in the frame gives the terminal the keyboard.
  document.addEventListener('click', () => conn.focus());
  // For tests and the lab: the state is readable without parsing the screen.
  (window as unknown as { cksTerminal: TerminalConnection }).cksTerminal = conn;
}
