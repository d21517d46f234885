import { describe, expect, it } from 'vitest';
import {
  banner,
  capabilityFromPath,
  closeOutcome,
  filterScenarios,
  groupByCategory,
  isZeroTime,
  objectivesMarkdown,
  MAX_RECONNECTS,
  progress,
  reconnectDelay,
  remaining,
  route,
  terminalSocketUrl,
} from './logic';
import type { ScenarioView, SessionView } from './types';

const sc = (id: string, over: Partial<ScenarioView> = {}): ScenarioView => ({
  id,
  title: id,
  description: '',
  difficulty: 'beginner',
  timeEstimate: '',
  topics: [],
  tasks: [],
  version: '',
  ...over,
});

const session = (over: Partial<SessionView> = {}): SessionView => ({
  id: 's1',
  sessionId: 's1',
  scenarioId: 'x',
  status: 'running',
  phase: 'Ready',
  user: 'u',
  pool: 'p',
  durationMinutes: 60,
  startTime: '',
  expirationTime: '',
  createdAt: '',
  tasks: [],
  terminals: [],
  conditions: [],
  ...over,
});

describe('route', () => {
  it('maps page paths and refuses what cannot be a session id', () => {
    expect(route('/')).toEqual({ page: 'catalogue' });
    expect(route('/admin/')).toEqual({ page: 'admin' });
    expect(route('/lab/s0123456789abcd')).toEqual({ page: 'lab', id: 's0123456789abcd' });
    expect(route('/lab/Bad_Id').page).toBe('notfound');
    expect(route('/lab/a/b').page).toBe('notfound');
  });
  it('keeps the login redirect on this site', () => {
    expect(route('/login', '?next=%2Flab%2Fs1')).toEqual({ page: 'login', next: '/lab/s1' });
    expect(route('/login', '?next=https://evil.example')).toEqual({ page: 'login', next: '/' });
    expect(route('/login', '?next=//evil.example')).toEqual({ page: 'login', next: '/' });
  });
});

describe('catalogue', () => {
  const list = [
    sc('rbac', { title: 'RBAC least privilege', topics: ['rbac'], category: 'cluster-hardening', difficulty: 'intermediate' }),
    sc('falco', { title: 'Runtime detection', topics: ['falco', 'syscalls'], category: 'runtime-security' }),
    sc('misc', { title: 'Loose end', category: null }),
  ];
  it('searches title and topics case-insensitively, every word', () => {
    expect(filterScenarios(list, { search: 'FALCO', difficulty: '', category: '' }).map((s) => s.id)).toEqual(['falco']);
    expect(filterScenarios(list, { search: 'runtime syscalls', difficulty: '', category: '' }).map((s) => s.id)).toEqual(['falco']);
    expect(filterScenarios(list, { search: 'runtime rbac', difficulty: '', category: '' })).toEqual([]);
  });
  it('filters by difficulty and category', () => {
    expect(filterScenarios(list, { search: '', difficulty: 'intermediate', category: '' }).map((s) => s.id)).toEqual(['rbac']);
    expect(filterScenarios(list, { search: '', difficulty: '', category: 'runtime-security' }).map((s) => s.id)).toEqual(['falco']);
  });
  it('groups in the categories order, uncategorised last, empty groups left out', () => {
    const groups = groupByCategory(list, {
      'runtime-security': 'Runtime security',
      'supply-chain': 'Supply chain',
      'cluster-hardening': 'Cluster hardening',
    });
    expect(groups.map((g) => [g.name, g.scenarios.map((s) => s.id)])).toEqual([
      ['Runtime security', ['falco']],
      ['Cluster hardening', ['rbac']],
      ['Other', ['misc']],
    ]);
  });
});

describe('countdown and progress', () => {
  it('formats the time left and stops at zero', () => {
    const now = Date.parse('2026-01-01T10:00:00Z');
    expect(remaining('2026-01-01T10:04:59Z', now)).toEqual({ ms: 299000, text: '4:59', urgent: true });
    expect(remaining('2026-01-01T11:05:09Z', now)?.text).toBe('1:05:09');
    expect(remaining('2026-01-01T09:00:00Z', now)?.text).toBe('0:00');
    expect(remaining('0001-01-01T00:00:00Z', now)).toBeNull();
    expect(remaining('garbage', now)).toBeNull();
    expect(isZeroTime('0001-01-01T00:00:00Z')).toBe(true);
  });
  it('counts only completed tasks', () => {
    const s = session({
      tasks: [
        { id: 'task-1', status: 'completed', validationTime: '', attempts: 1 },
        { id: 'task-2', status: 'failed', validationTime: '', attempts: 2 },
        { id: 'task-3', status: 'pending', validationTime: '', attempts: 0 },
      ],
    });
    expect(progress(s)).toEqual({ done: 1, total: 3, percent: 33 });
    expect(progress(session())).toEqual({ done: 0, total: 0, percent: 0 });
  });
});

describe('objectives', () => {
  it('become a list, keeping the author\'s own list markers', () => {
    expect(objectivesMarkdown('Find `a`\n\n- Delete b\n1. Check c\n')).toBe('- Find `a`\n- Delete b\n1. Check c');
  });
});

describe('banner', () => {
  it('shows the queue position, setup progress and the end states', () => {
    expect(banner(session({ phase: 'WaitingForCluster', status: 'pending', queuePosition: 3 }))?.text).toContain('number 3 in the queue');
    const setup = banner(session({ phase: 'Initializing', setup: { total: 4, completed: 1, step: 'create-namespace' } }));
    expect(setup?.text).toContain('step 2 of 4: create-namespace');
    expect(banner(session({ phase: 'Failed', status: 'failed', statusMessage: 'no cluster fits' }))).toEqual({
      kind: 'error',
      text: 'This session failed: no cluster fits.',
    });
    expect(banner(session({ phase: 'Ready' }))).toBeNull();
  });
});

describe('terminal page', () => {
  it('finds the capability and its WebSocket on the same path', () => {
    expect(capabilityFromPath('/terminal/abc.DEF_-1')).toBe('abc.DEF_-1');
    expect(capabilityFromPath('/terminal/')).toBeNull();
    expect(capabilityFromPath('/terminal/a/b')).toBeNull();
    expect(terminalSocketUrl({ protocol: 'http:', host: '127.0.0.1:8081', pathname: '/terminal/cap' })).toBe('ws://127.0.0.1:8081/terminal/cap/ws');
    expect(terminalSocketUrl({ protocol: 'https:', host: 'lab.example', pathname: '/terminal/cap/' })).toBe('wss://lab.example/terminal/cap/ws');
  });
  it('reconnects after a network blip or a restart, never after a reason that a retry cannot fix', () => {
    expect(closeOutcome(null, 1006).reconnect).toBe(true);
    expect(closeOutcome('shutdown', 1001).reconnect).toBe(true);
    expect(closeOutcome(null, 1001).reconnect).toBe(true);
    for (const [reason, code] of [
      ['session-ended', 4003],
      ['idle', 4008],
      ['expired', 4001],
      ['limit', 4029],
      ['shell-exited', 1000],
      ['unreachable', 1011],
    ] as const) {
      expect(closeOutcome(reason, code).reconnect, reason).toBe(false);
      // The close code alone (the `closed` message lost) says the same.
      expect(closeOutcome(null, code).reconnect, String(code)).toBe(false);
    }
    expect(closeOutcome(null, 4001).text).toContain('expired');
    expect(closeOutcome('idle', 4008, 'Closed after 30 minutes idle.').text).toBe('Closed after 30 minutes idle.');
  });
  it('backs off to a bounded delay', () => {
    expect([0, 1, 2, 3, 4, 5].map(reconnectDelay)).toEqual([500, 1000, 2000, 4000, 8000, 8000]);
    let total = 0;
    for (let i = 0; i < MAX_RECONNECTS; i++) total += reconnectDelay(i);
    expect(total).toBeGreaterThan(30_000);
  });
});
