// Pure page logic (no DOM, no network), unit-tested in logic.test.ts: routing, catalogue
// filters, countdown, progress, banners, and how the terminal reads its URL and its close reasons.

import type { Categories, ScenarioView, SessionView } from './types';

export type Route =
  | { page: 'catalogue' }
  | { page: 'lab'; id: string }
  | { page: 'admin' }
  | { page: 'login'; next: string }
  | { page: 'notfound'; path: string };

/** The page a path shows. Session ids are DNS-1123 labels; anything else is not found. */
export function route(pathname: string, search = ''): Route {
  const path = pathname.replace(/\/+$/, '') || '/';
  if (path === '/' || path === '/catalogue') return { page: 'catalogue' };
  if (path === '/admin') return { page: 'admin' };
  if (path === '/login') {
    const next = new URLSearchParams(search).get('next') ?? '/';
    // Only same-site paths, so a crafted link cannot send a fresh login elsewhere.
    return { page: 'login', next: next.startsWith('/') && !next.startsWith('//') ? next : '/' };
  }
  const lab = /^\/lab\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$/.exec(path);
  if (lab) return { page: 'lab', id: lab[1] };
  return { page: 'notfound', path: pathname };
}

export const DIFFICULTIES = ['beginner', 'intermediate', 'advanced'] as const;

export interface Filter {
  search: string;
  difficulty: string;
  category: string;
}

/** Scenarios matching the filter: search in title, description and topics, case-insensitive. */
export function filterScenarios(list: ScenarioView[], f: Filter): ScenarioView[] {
  const words = f.search.toLowerCase().split(/\s+/).filter(Boolean);
  return list.filter((s) => {
    if (f.difficulty && s.difficulty !== f.difficulty) return false;
    if (f.category && s.category !== f.category) return false;
    const hay = [s.title, s.description, s.id, ...(s.topics ?? [])].join(' ').toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

export interface Group {
  id: string;
  name: string;
  scenarios: ScenarioView[];
}

/** Scenarios grouped by category in the catalogue's order; uncategorised ones last. Empty groups are left out. */
export function groupByCategory(list: ScenarioView[], categories: Categories): Group[] {
  const groups: Group[] = Object.entries(categories).map(([id, name]) => ({ id, name, scenarios: [] }));
  const other: Group = { id: '', name: 'Other', scenarios: [] };
  for (const s of list) {
    const g = groups.find((g) => g.id === s.category) ?? other;
    g.scenarios.push(s);
  }
  return [...groups, other].filter((g) => g.scenarios.length > 0);
}

/** The gateway's "does not exist yet" time. */
export function isZeroTime(t: string | null | undefined): boolean {
  return !t || t.startsWith('0001-01-01');
}

/** Time left until `expiration`, as shown in the lab header: `1:05:09`, `4:59`, or `0:00` once over. */
export function remaining(expiration: string, now: number): { ms: number; text: string; urgent: boolean } | null {
  if (isZeroTime(expiration)) return null;
  const end = Date.parse(expiration);
  if (Number.isNaN(end)) return null;
  const ms = Math.max(0, end - now);
  const total = Math.floor(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  const text = h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  return { ms, text, urgent: ms < 5 * 60 * 1000 };
}

export function progress(session: Pick<SessionView, 'tasks'>): { done: number; total: number; percent: number } {
  const total = session.tasks.length;
  const done = session.tasks.filter((t) => t.status === 'completed').length;
  return { done, total, percent: total ? Math.round((done * 100) / total) : 0 };
}

export function isActive(s: Pick<SessionView, 'status'>): boolean {
  return s.status === 'pending' || s.status === 'running';
}

/** The banner the lab shows above the tasks, or null when the session is simply running. */
export function banner(s: SessionView): { kind: 'info' | 'warn' | 'error'; text: string } | null {
  switch (s.phase) {
    case 'Pending':
    case 'WaitingForCluster':
      return {
        kind: 'info',
        text:
          s.queuePosition != null
            ? `Waiting for a practice cluster: you are number ${s.queuePosition} in the queue. This page updates by itself.`
            : 'Waiting for a practice cluster. This page updates by itself.',
      };
    case 'Initializing': {
      const st = s.setup;
      const step = st && st.total > 0 ? ` (step ${Math.min(st.completed + 1, st.total)} of ${st.total}${st.step ? `: ${st.step}` : ''})` : '';
      return { kind: 'info', text: `Setting up the scenario${step}. Terminals already work; you can start reading and exploring.` };
    }
    case 'Expired':
      return { kind: 'warn', text: 'This session has expired. Its cluster is being reset for the next student.' };
    case 'Ended':
      return { kind: 'warn', text: 'This session has ended. Its cluster is being reset for the next student.' };
    case 'Failed':
      return { kind: 'error', text: `This session failed: ${s.statusMessage || s.message || s.reason || 'no reason given'}.` };
    default:
      return null;
  }
}

/** Human labels of the session states. */
export function statusLabel(s: Pick<SessionView, 'phase'>): string {
  const labels: Record<string, string> = {
    Pending: 'Pending',
    WaitingForCluster: 'Queued',
    Initializing: 'Setting up',
    Ready: 'Ready',
    Expired: 'Expired',
    Ended: 'Ended',
    Failed: 'Failed',
  };
  return labels[s.phase] ?? s.phase;
}

/** Objectives come one per line; shown as a Markdown list whether or not the author wrote one. */
export function objectivesMarkdown(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => (/^([-*+]|\d+[.)])\s/.test(l) ? l : `- ${l}`))
    .join('\n');
}

export function formatTime(t: string | null | undefined): string {
  if (isZeroTime(t)) return 'never';
  const d = new Date(t as string);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

// ---- terminal page ----------------------------------------------------------------------

/** The capability of a terminal page URL, `/terminal/<capability>`; null when the path has none. */
export function capabilityFromPath(pathname: string): string | null {
  const m = /^\/terminal\/([A-Za-z0-9_\-.~%]+)\/?$/.exec(pathname);
  return m ? m[1] : null;
}

/** The WebSocket of a terminal page: the page's own path plus `/ws`, same host, ws: under http:, wss: under https:. */
export function terminalSocketUrl(loc: Pick<Location, 'protocol' | 'host' | 'pathname'>): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${loc.pathname.replace(/\/+$/, '')}/ws`;
}

export type CloseReason = 'session-ended' | 'idle' | 'expired' | 'limit' | 'shell-exited' | 'unreachable' | 'shutdown';

const CLOSE_CODES: Record<number, CloseReason> = {
  1000: 'shell-exited',
  1001: 'shutdown',
  1011: 'unreachable',
  4001: 'expired',
  4003: 'session-ended',
  4008: 'idle',
  4029: 'limit',
};

/** What to tell the person and whether to reconnect, given the server's `closed` message (if any) and the close code. */
export function closeOutcome(
  reason: string | null,
  code: number,
  serverMessage?: string,
): { reconnect: boolean; text: string } {
  const r = (reason ?? CLOSE_CODES[code] ?? null) as CloseReason | null;
  const texts: Record<CloseReason, string> = {
    'session-ended': 'The session has ended; this terminal is closed.',
    idle: 'This terminal was closed after being idle. Open a new one from the lab.',
    expired: 'This terminal link has expired. Open a new terminal from the lab.',
    limit: 'This session has too many terminals open. Close one and open a new terminal from the lab.',
    'shell-exited': 'The shell exited.',
    unreachable: 'The practice VM could not be reached over SSH. Try again in a moment.',
    shutdown: 'The gateway restarted; reconnecting…',
  };
  if (r === null) {
    // A network blip: the same URL works again while the capability is valid.
    return { reconnect: true, text: 'Connection lost; reconnecting…' };
  }
  // shutdown: another gateway replica (or the restarted one) takes the same URL.
  return { reconnect: r === 'shutdown', text: serverMessage && r !== 'shutdown' ? serverMessage : texts[r] };
}

/** Delay before reconnect attempt `n` (0-based): 0.5 s doubling to 8 s. */
export function reconnectDelay(n: number): number {
  return Math.min(8000, 500 * 2 ** n);
}

/** Reconnect attempts before giving up (about a minute in all). */
export const MAX_RECONNECTS = 10;
