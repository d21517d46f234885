// The lab: a session's tasks on one side (Markdown sanitised, objectives, guide, hints one at
// a time, the last validation per rule), its terminals on the other (one tab per node, more on
// demand), and a header with the countdown, progress, extend and end. Everything that changes
// arrives over the session's event stream; nothing polls.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, ApiError, sessionEventsUrl } from '../api';
import { banner, isActive, objectivesMarkdown, progress, remaining, statusLabel } from '../logic';
import { renderMarkdown } from '../markdown';
import type { Me, ScenarioView, SessionView, TaskView, ValidationView } from '../types';
import { ConfirmButton, ErrorBox, Link, onTabKeys, Spinner, useTitle } from './ui';

type Live = 'connecting' | 'live' | 'reconnecting' | 'lost';

function useSession(id: string) {
  const [session, setSession] = useState<SessionView | null>(null);
  const [gone, setGone] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [live, setLive] = useState<Live>('connecting');

  useEffect(() => {
    setSession(null);
    setGone(false);
    setError(null);
    // The stream sends the whole view at once on connect and again on every change; the
    // browser reconnects by itself (retry: 2000) and resumes with Last-Event-ID.
    const es = new EventSource(sessionEventsUrl(id));
    let received = false;
    es.addEventListener('session', (ev) => {
      received = true;
      setSession(JSON.parse((ev as MessageEvent).data));
      setLive('live');
    });
    es.addEventListener('deleted', () => {
      setGone(true);
      es.close();
      setLive('lost');
    });
    es.onopen = () => setLive('live');
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setLive('lost');
        // The stream was refused (unknown session, signed out, too many streams): ask why.
        api.session(id).then(
          (s) => {
            setSession(s);
            if (!received) setError(new Error('Live updates are not available; reload the page to see changes.'));
          },
          (e) => setError(e),
        );
      } else {
        setLive('reconnecting');
      }
    };
    return () => es.close();
  }, [id]);
  return { session, setSession, gone, error, live };
}

function useNow(active: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const t = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(t);
  }, [active]);
  return now;
}

export function Lab(props: { id: string; me: Me }) {
  const { session: latest, setSession, gone, error, live } = useSession(props.id);
  // A session deleted after its end is shown as ended, whatever its last event said.
  const session = latest && gone ? { ...latest, status: 'ended', phase: 'Ended' } : latest;
  const [scenario, setScenario] = useState<ScenarioView | null>(null);
  const [scenarioError, setScenarioError] = useState<unknown>(null);
  const [selected, setSelected] = useState(0);
  const [results, setResults] = useState<Record<string, ValidationView>>({});
  const [notice, setNotice] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const fetched = useRef(new Set<string>());

  useTitle(scenario?.title ?? 'Lab');
  const scenarioId = session?.scenarioId;
  useEffect(() => {
    if (!scenarioId) return;
    api.scenario(scenarioId).then(setScenario, setScenarioError);
  }, [scenarioId]);

  // The last result of each validated task: fetched when the stream says a run finished.
  useEffect(() => {
    if (!session) return;
    for (const t of session.tasks) {
      if (!t.lastRun) continue;
      const key = `${t.lastRun}@${t.validationTime}@${t.status}`;
      if (fetched.current.has(key)) continue;
      fetched.current.add(key);
      api.run(session.id, t.lastRun).then(
        (r) => setResults((old) => (old[t.id]?.runId === r.runId && old[t.id]?.finished && !r.finished ? old : { ...old, [t.id]: r })),
        () => fetched.current.delete(key),
      );
    }
  }, [latest]);

  const active = !!session && isActive(session) && !gone;
  const now = useNow(active);

  if (error && !session) {
    const notFound = error instanceof ApiError && error.status === 404;
    return (
      <div class="page">
        <h1>{notFound ? 'Session not found' : 'The lab could not load'}</h1>
        <ErrorBox error={error} />
        <p>
          <Link href="/">Back to the catalogue</Link>
        </p>
      </div>
    );
  }
  if (!session) return <Spinner label="Opening the lab…" />;

  const left = remaining(session.expirationTime, now);
  const prog = progress(session);
  const b = banner(session);
  const task = scenario?.tasks[selected];

  const extend = async () => {
    setActionError(null);
    try {
      const { data } = await api.extend(session.id, 30);
      setNotice(data.message);
      setSession({ ...session, expirationTime: data.expirationTime, durationMinutes: data.durationMinutes });
    } catch (e) {
      setActionError(e);
    }
  };
  const end = async () => {
    setActionError(null);
    try {
      const { data } = await api.endSession(session.id);
      setNotice(data.message);
    } catch (e) {
      setActionError(e);
    }
  };

  return (
    <div class="lab">
      <header class="lab-head">
        <div class="lab-title">
          <h1>{scenario?.title ?? session.scenarioId}</h1>
          <span class={`pill status-${session.status}`} data-testid="session-status">
            {statusLabel(session)}
          </span>
          {!gone && (
            <span class={`live live-${live}`} title="Live updates from the gateway" role="status">
              {live === 'live' ? 'live' : live === 'reconnecting' ? 'reconnecting…' : live === 'lost' ? 'not live' : 'connecting…'}
            </span>
          )}
        </div>
        <div class="lab-progress" aria-label="Progress">
          <progress max={prog.total || 1} value={prog.done} aria-label={`${prog.done} of ${prog.total} tasks done`} />
          <span data-testid="progress">
            {prog.done}/{prog.total} tasks
          </span>
        </div>
        <div class="lab-actions">
          {left && active && (
            <span class={`countdown${left.urgent ? ' urgent' : ''}`} data-testid="countdown" title={`Expires ${new Date(session.expirationTime).toLocaleString()}`}>
              <span class="sr-only">Time left: </span>
              {left.text}
            </span>
          )}
          {active && (
            <button type="button" class="btn" onClick={extend} disabled={session.status !== 'running'} data-testid="extend">
              +30 min
            </button>
          )}
          {active && <ConfirmButton label="End session" confirm="End this session?" danger onConfirm={end} testid="end" />}
          {!active && (
            <Link href="/" class="btn btn-primary">
              Back to the catalogue
            </Link>
          )}
        </div>
      </header>
      {b && (
        <div class={`alert alert-${b.kind}`} role="status" data-testid="banner">
          {b.text}
        </div>
      )}
      {notice && (
        <div class="alert alert-info" role="status" data-testid="notice">
          {notice}
          <button type="button" class="btn btn-quiet btn-small" aria-label="Dismiss" onClick={() => setNotice(null)}>
            ×
          </button>
        </div>
      )}
      <ErrorBox error={actionError} />
      <div class="split">
        <section class="tasks-pane" aria-label="Tasks">
          <ErrorBox error={scenarioError} />
          {!scenario && !scenarioError && <Spinner label="Loading tasks…" />}
          {scenario && (
            <>
              <ol class="task-list" role="tablist" aria-label="Tasks">
                {scenario.tasks.map((t, i) => {
                  const st = session.tasks.find((x) => x.id === t.id)?.status ?? 'pending';
                  return (
                    <li key={t.id} role="presentation">
                      <button
                        type="button"
                        role="tab"
                        aria-selected={i === selected}
                        class={`task-tab task-${st}`}
                        tabIndex={i === selected ? 0 : -1}
                        onClick={() => setSelected(i)}
                        onKeyDown={(e) => onTabKeys(e, i, scenario.tasks.length, setSelected)}
                        data-testid={`task-tab-${t.id}`}
                      >
                        <span class="task-icon" aria-label={st}>
                          {st === 'completed' ? '✓' : st === 'failed' ? '✗' : i + 1}
                        </span>
                        <span class="task-name">{t.title}</span>
                      </button>
                    </li>
                  );
                })}
              </ol>
              {task && (
                <TaskPanel
                  key={task.id}
                  task={task}
                  session={session}
                  result={results[task.id]}
                  onResult={(r) => setResults((old) => ({ ...old, [task.id]: r }))}
                  canValidate={session.status === 'running' && !gone}
                />
              )}
            </>
          )}
        </section>
        <Terminals session={session} active={active && session.status === 'running'} />
      </div>
    </div>
  );
}

function Markdown(props: { md: string; class?: string }) {
  const html = useMemo(() => renderMarkdown(props.md), [props.md]);
  return <div class={`md ${props.class ?? ''}`} dangerouslySetInnerHTML={{ __html: html }} />;
}

function TaskPanel(props: {
  task: TaskView;
  session: SessionView;
  result?: ValidationView;
  onResult: (r: ValidationView) => void;
  canValidate: boolean;
}) {
  const { task, session, result } = props;
  const [hints, setHints] = useState(0);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const status = session.tasks.find((t) => t.id === task.id);

  const validate = async () => {
    setBusy(true);
    setError(null);
    try {
      const { data } = await api.validate(session.id, task.id);
      props.onResult(data);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <article class="task" aria-labelledby="task-title" data-testid="task">
      <h2 id="task-title">{task.title}</h2>
      <Markdown md={task.description} />
      {task.objective && (
        <section>
          <h3>Objectives</h3>
          <Markdown md={objectivesMarkdown(task.objective)} />
        </section>
      )}
      {task.background && (
        <details>
          <summary>Background</summary>
          <Markdown md={task.background} />
        </details>
      )}
      {task.steps && task.steps.length > 0 && (
        <details class="guide">
          <summary>Step-by-step guide</summary>
          <ol>
            {task.steps.map((s, i) => (
              <li key={i}>
                <Markdown md={s} />
              </li>
            ))}
          </ol>
        </details>
      )}
      {task.hints.length > 0 && (
        <section class="hints" aria-live="polite">
          <h3>Hints</h3>
          {task.hints.slice(0, hints).map((h, i) => (
            <div class="hint" key={i} data-testid="hint">
              <strong>Hint {i + 1}</strong>
              <Markdown md={h} />
            </div>
          ))}
          {hints < task.hints.length ? (
            <button type="button" class="btn btn-small" onClick={() => setHints(hints + 1)} data-testid="show-hint">
              Show hint {hints + 1} of {task.hints.length}
            </button>
          ) : (
            <p class="muted">No more hints.</p>
          )}
        </section>
      )}
      <section class="validation">
        <h3>Check your work</h3>
        {task.validation.length > 0 && (
          <ul class="criteria">
            {task.validation.map((r) => (
              <li key={r.id}>{r.description || r.id}</li>
            ))}
          </ul>
        )}
        <button type="button" class="btn btn-primary" disabled={!props.canValidate || busy} onClick={validate} data-testid="validate">
          {busy ? 'Checking…' : 'Validate'}
        </button>
        {status && status.attempts > 0 && (
          <span class="muted">
            {' '}
            {status.attempts} attempt{status.attempts === 1 ? '' : 's'}
          </span>
        )}
        <ErrorBox error={error} />
        {result && <Result result={result} />}
      </section>
    </article>
  );
}

function Result(props: { result: ValidationView }) {
  const r = props.result;
  if (!r.finished) {
    return (
      <p class="alert alert-info" role="status">
        The check is still running; its result shows up here when it is done.
      </p>
    );
  }
  return (
    <div class={`result ${r.success ? 'result-pass' : 'result-fail'}`} data-testid="result" role="status">
      <p class="result-summary">
        <strong>{r.success ? 'Passed' : 'Not yet'}</strong> — {r.message}
      </p>
      <ul class="rules">
        {r.results.map((x) => (
          <li key={x.ruleId} class={x.passed ? 'rule-pass' : 'rule-fail'} data-testid="rule">
            <span class="rule-icon" aria-label={x.passed ? 'passed' : 'failed'}>
              {x.passed ? '✓' : '✗'}
            </span>
            <div>
              <div class="rule-name">{x.description || x.ruleId}</div>
              {!x.passed && <div class="rule-message">{x.message}</div>}
              {!x.passed && (x.expected != null || x.actual != null) && (
                <dl class="rule-diff">
                  {x.expected != null && (
                    <>
                      <dt>Expected</dt>
                      <dd>
                        <code>{x.expected}</code>
                      </dd>
                    </>
                  )}
                  {x.actual != null && (
                    <>
                      <dt>Found</dt>
                      <dd>
                        <code>{x.actual || '(nothing)'}</code>
                      </dd>
                    </>
                  )}
                </dl>
              )}
              {x.errorCode === 'RULE_ERROR' && <div class="muted">This check could not be evaluated.</div>}
            </div>
          </li>
        ))}
      </ul>
    </div>
  );
}

interface OpenTerminal {
  key: string;
  target: string;
  label: string;
  url?: string;
  error?: unknown;
}

function Terminals(props: { session: SessionView; active: boolean }) {
  const { session } = props;
  const [open, setOpen] = useState<OpenTerminal[]>([]);
  const [current, setCurrent] = useState<string | null>(null);
  const counter = useRef(0);
  const targets = session.terminals.map((t) => t.target);

  const start = async (target: string) => {
    const n = open.filter((o) => o.target === target).length + 1;
    const key = `${target}#${++counter.current}`;
    const label = n > 1 ? `${target} (${n})` : target;
    setOpen((o) => [...o, { key, target, label }]);
    setCurrent(key);
    try {
      const { data } = await api.terminal(session.id, target);
      setOpen((o) => o.map((x) => (x.key === key ? { ...x, url: data.terminalUrl } : x)));
    } catch (e) {
      setOpen((o) => o.map((x) => (x.key === key ? { ...x, error: e } : x)));
    }
  };
  const reopen = async (t: OpenTerminal) => {
    setOpen((o) => o.map((x) => (x.key === t.key ? { ...x, url: undefined, error: undefined } : x)));
    try {
      const { data } = await api.terminal(session.id, t.target);
      setOpen((o) => o.map((x) => (x.key === t.key ? { ...x, url: data.terminalUrl } : x)));
    } catch (e) {
      setOpen((o) => o.map((x) => (x.key === t.key ? { ...x, error: e } : x)));
    }
  };
  const close = (key: string) => {
    const rest = open.filter((o) => o.key !== key);
    setOpen(rest);
    if (current === key) setCurrent(rest[rest.length - 1]?.key ?? null);
  };

  // The first node's terminal opens as soon as the session has a cluster.
  const first = targets[0];
  useEffect(() => {
    if (props.active && first && open.length === 0) void start(first);
  }, [props.active, first]);

  if (!isActive(session) || (!props.active && open.length === 0)) {
    return (
      <section class="terms-pane" aria-label="Terminals">
        <p class="empty">{isActive(session) ? 'Terminals open once a practice cluster is assigned.' : 'Terminals are closed: the session is over.'}</p>
      </section>
    );
  }

  return (
    <section class="terms-pane" aria-label="Terminals">
      <div class="term-bar">
        <div class="term-tabs" role="tablist" aria-label="Open terminals">
          {open.map((o, i) => (
            <button
              type="button"
              role="tab"
              key={o.key}
              id={`tab-${o.key}`}
              class={`term-tab${o.key === current ? ' active' : ''}`}
              aria-selected={o.key === current}
              aria-controls={`panel-${o.key}`}
              tabIndex={o.key === current ? 0 : -1}
              onClick={() => setCurrent(o.key)}
              onKeyDown={(e) => onTabKeys(e, i, open.length, (n) => setCurrent(open[n].key))}
              data-testid={`term-tab-${o.label}`}
            >
              {o.label}
            </button>
          ))}
        </div>
        {current && (
          <button type="button" class="btn btn-small btn-quiet" onClick={() => close(current)} aria-label="Close this terminal">
            × Close
          </button>
        )}
        {props.active && (
          <span class="term-new">
            {targets.map((t) => (
              <button type="button" class="btn btn-small btn-quiet" key={t} onClick={() => start(t)} aria-label={`New terminal on ${t}`} data-testid={`new-term-${t}`}>
                + {t}
              </button>
            ))}
          </span>
        )}
      </div>
      {open.length === 0 && <p class="empty">No terminal open. Open one on a node above.</p>}
      {open.map((o) => (
        <div class="term-panel" role="tabpanel" id={`panel-${o.key}`} aria-labelledby={`tab-${o.key}`} hidden={o.key !== current} key={o.key}>
          {o.error ? (
            <div class="term-error">
              <ErrorBox error={o.error} />
              <button type="button" class="btn" onClick={() => reopen(o)}>
                Try again
              </button>
            </div>
          ) : o.url ? (
            <>
              <iframe src={o.url} title={`Terminal on ${o.target}`} data-testid={`terminal-${o.label}`} />
              <button type="button" class="btn btn-small btn-quiet term-reopen" onClick={() => reopen(o)} title="Open a fresh connection (a new shell) in this tab">
                Reconnect
              </button>
            </>
          ) : (
            <Spinner label={`Opening a terminal on ${o.target}…`} />
          )}
        </div>
      ))}
    </section>
  );
}
