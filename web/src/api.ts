// The one way the page talks to the gateway: same-origin fetch (the identity is the login
// proxy's or the gateway's HttpOnly cookie, never a token in script-readable storage), JSON in
// and out, errors as ApiError carrying the gateway's stable code and its message for people.

import type {
  ActionView,
  AdminSessionsView,
  Categories,
  ExtendedView,
  Me,
  PoolStatusView,
  ReloadView,
  ScenarioView,
  SessionView,
  TerminalGrant,
  ValidationView,
} from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The error a failed answer stands for: the gateway's `{error, message}` when it sent one. */
export function errorFrom(status: number, body: unknown, statusText = ''): ApiError {
  if (body && typeof body === 'object' && 'error' in body) {
    const b = body as { error: unknown; message?: unknown };
    const message = typeof b.message === 'string' && b.message ? b.message : String(b.error);
    return new ApiError(status, String(b.error), message);
  }
  const text = status === 0 ? 'The gateway cannot be reached; check your connection.' : `The gateway answered ${status} ${statusText}`.trim();
  return new ApiError(status, status === 0 ? 'NETWORK' : `HTTP_${status}`, text);
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export async function call<T>(method: Method, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; data: T }> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)['Content-Type'] = 'application/json';
  }
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, init);
  } catch {
    throw errorFrom(0, null);
  }
  let data: unknown = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) throw errorFrom(res.status, data, res.statusText);
  return { status: res.status, data: data as T };
}

const get = async <T>(path: string) => (await call<T>('GET', path)).data;
const enc = encodeURIComponent;

export const api = {
  me: () => get<Me>('/auth/me'),
  login: (token: string) => call<Me>('POST', '/auth/login', { token }),
  logout: () => call<{ message: string }>('POST', '/auth/logout'),
  scenarios: () => get<ScenarioView[]>('/scenarios'),
  categories: () => get<Categories>('/scenarios/categories'),
  scenario: (id: string) => get<ScenarioView>(`/scenarios/${enc(id)}`),
  sessions: () => get<SessionView[]>('/sessions'),
  session: (id: string) => get<SessionView>(`/sessions/${enc(id)}`),
  createSession: (scenarioId: string, idempotencyKey: string) =>
    call<SessionView>('POST', '/sessions', { scenarioId }, { 'Idempotency-Key': idempotencyKey }),
  endSession: (id: string) => call<{ message: string }>('DELETE', `/sessions/${enc(id)}`),
  extend: (id: string, minutes = 30) => call<ExtendedView>('PUT', `/sessions/${enc(id)}/extend`, { minutes }),
  validate: (id: string, taskId: string) => call<ValidationView>('POST', `/sessions/${enc(id)}/tasks/${enc(taskId)}/validate`),
  run: (id: string, run: string) => get<ValidationView>(`/sessions/${enc(id)}/validations/${enc(run)}`),
  terminal: (id: string, target: string) => call<TerminalGrant>('POST', `/sessions/${enc(id)}/terminals`, { target }),
  admin: {
    clusters: () => get<PoolStatusView>('/admin/clusters'),
    sessions: () => get<AdminSessionsView>('/admin/sessions'),
    endSession: (id: string) => call<ActionView>('POST', `/admin/sessions/${enc(id)}/end`),
    releaseAll: () => call<ActionView>('POST', '/admin/release-all-clusters'),
    reset: (id: string) => call<ActionView>('POST', `/admin/clusters/${enc(id)}/reset`),
    recreate: (id: string) => call<ActionView>('POST', `/admin/clusters/${enc(id)}/recreate`),
    reload: () => call<ReloadView>('POST', '/scenarios/reload'),
  },
};

export function sessionEventsUrl(id: string): string {
  return `/api/v1/sessions/${enc(id)}/events`;
}
