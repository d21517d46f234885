// The admin console: pools, clusters and every user's sessions, with the actions the gateway
// offers (force-end, reset, recreate, release all, catalogue reload). Live: the admin event
// stream sends the whole picture whenever the caches change; no polling loop.

import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { formatTime, isZeroTime, remaining, statusLabel } from '../logic';
import type { AdminSessionsView, ClusterView, PoolStatusView, ReloadView } from '../types';
import { ConfirmButton, Empty, ErrorBox, Spinner, useTitle } from './ui';

interface Picture {
  clusters: PoolStatusView;
  sessions: AdminSessionsView;
}

export function Admin() {
  useTitle('Admin');
  const [pic, setPic] = useState<Picture | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [live, setLive] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [reload, setReload] = useState<ReloadView | null>(null);

  const load = async () => {
    try {
      const [clusters, sessions] = await Promise.all([api.admin.clusters(), api.admin.sessions()]);
      setPic({ clusters, sessions });
      setError(null);
    } catch (e) {
      setError(e);
    }
  };

  useEffect(() => {
    void load();
    const es = new EventSource('/api/v1/admin/events');
    es.addEventListener('admin', (ev) => {
      setPic(JSON.parse((ev as MessageEvent).data));
      setLive(true);
    });
    es.onerror = () => setLive(false);
    return () => es.close();
  }, []);

  const act = async (f: () => Promise<{ data: { message: string } }>) => {
    setActionError(null);
    try {
      const { data } = await f();
      setNotice(data.message);
      if (!live) await load();
    } catch (e) {
      setActionError(e);
    }
  };

  const clusters: ClusterView[] = Object.values(pic?.clusters.detailedClusters ?? {}).sort((a, b) => a.clusterId.localeCompare(b.clusterId));
  const now = Date.now();

  return (
    <div class="page admin">
      <div class="admin-head">
        <h1>Admin console</h1>
        <span class={`live ${live ? 'live-live' : 'live-lost'}`} role="status">
          {live ? 'live' : 'not live'}
        </span>
        <button type="button" class="btn btn-small" onClick={load}>
          Refresh
        </button>
        <ConfirmButton
          label="Release all clusters"
          confirm="End every session that holds a cluster?"
          danger
          disabled={!pic || pic.clusters.lockedClusters === 0}
          onConfirm={() => act(api.admin.releaseAll)}
          testid="release-all"
        />
        <button
          type="button"
          class="btn"
          data-testid="reload"
          onClick={async () => {
            setActionError(null);
            try {
              const { data } = await api.admin.reload();
              setReload(data);
            } catch (e) {
              setActionError(e);
            }
          }}
        >
          Reload catalogue
        </button>
      </div>
      {notice && (
        <div class="alert alert-info" role="status" data-testid="notice">
          {notice}
          <button type="button" class="btn btn-quiet btn-small" aria-label="Dismiss" onClick={() => setNotice(null)}>
            ×
          </button>
        </div>
      )}
      <ErrorBox error={actionError} />
      {reload && (
        <div class={`alert ${reload.errors.length ? 'alert-error' : 'alert-info'}`} role="status" data-testid="reload-result">
          <p>
            {reload.message} ({reload.scenarios} scenarios, {reload.warnings} warnings)
          </p>
          {reload.errors.length > 0 && (
            <ul class="lint">
              {reload.errors.map((e, i) => (
                <li key={i}>
                  <code>{e}</code>
                </li>
              ))}
            </ul>
          )}
          {reload.stale.length > 0 && <p>Kept at their previous version: {reload.stale.join(', ')}</p>}
        </div>
      )}
      <ErrorBox error={error} onRetry={load} />
      {!pic && !error && <Spinner label="Loading the pools…" />}
      {pic && (
        <>
          <section aria-labelledby="pools-h">
            <h2 id="pools-h">Pools</h2>
            <dl class="stats">
              <div>
                <dt>Clusters</dt>
                <dd data-testid="stat-total">{pic.clusters.totalClusters}</dd>
              </div>
              <div>
                <dt>Available</dt>
                <dd data-testid="stat-available">{pic.clusters.availableClusters}</dd>
              </div>
              <div>
                <dt>In use</dt>
                <dd>{pic.clusters.lockedClusters}</dd>
              </div>
              <div>
                <dt>Resetting</dt>
                <dd>{pic.clusters.resettingClusters}</dd>
              </div>
              <div>
                <dt>Failed</dt>
                <dd>{pic.clusters.errorClusters}</dd>
              </div>
              <div>
                <dt>Active sessions</dt>
                <dd>{pic.sessions.stats.totalSessions}</dd>
              </div>
            </dl>
            {(pic.clusters.pools ?? []).length === 0 ? (
              <Empty>No ClusterPool in this namespace. Apply one (config/samples/clusterpool.yaml).</Empty>
            ) : (
              <div class="table-wrap">
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Pool</th>
                      <th scope="col">Warm / max</th>
                      <th scope="col">Longest session</th>
                      <th scope="col">By phase</th>
                      <th scope="col">Conditions</th>
                    </tr>
                  </thead>
                  <tbody>
                    {(pic.clusters.pools ?? []).map((p) => (
                      <tr key={p.name}>
                        <td>{p.name}</td>
                        <td>
                          {p.minAvailable} / {p.maxClusters}
                        </td>
                        <td>{p.maxSessionMinutes} min</td>
                        <td>
                          {Object.entries(p.status)
                            .filter(([, v]) => typeof v === 'number')
                            .map(([k, v]) => `${k} ${v}`)
                            .join(', ')}
                        </td>
                        <td>
                          {p.conditions.map((c) => (
                            <span key={c.type} class={`pill cond-${c.status}`} title={c.message}>
                              {c.type}: {c.status}
                            </span>
                          ))}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </section>
          <section aria-labelledby="clusters-h">
            <h2 id="clusters-h">Clusters</h2>
            {clusters.length === 0 ? (
              <Empty>No practice cluster yet; the pool builds them.</Empty>
            ) : (
              <div class="table-wrap">
                <table data-testid="clusters">
                  <thead>
                    <tr>
                      <th scope="col">Cluster</th>
                      <th scope="col">Phase</th>
                      <th scope="col">Session</th>
                      <th scope="col">Served</th>
                      <th scope="col">Last reset</th>
                      <th scope="col">Actions</th>
                    </tr>
                  </thead>
                  <tbody>
                    {clusters.map((c) => (
                      <tr key={c.clusterId} data-cluster={c.clusterId}>
                        <td>
                          {c.clusterId}
                          <div class="muted">{c.pool}</div>
                        </td>
                        <td>
                          <span class={`pill phase-${c.status}`} data-testid="cluster-phase">
                            {c.phase}
                          </span>
                          {c.resetRequested && <span class="muted"> reset requested</span>}
                          {c.failureMessage && <div class="muted">{c.failureMessage}</div>}
                        </td>
                        <td>{c.assignedSession ?? '—'}</td>
                        <td>{c.sessionsServed}</td>
                        <td>
                          {formatTime(c.lastReset)}
                          {c.lastResetDurationSeconds != null && (
                            <div class="muted" data-testid="reset-duration">
                              took {c.lastResetDurationSeconds.toFixed(1)} s
                            </div>
                          )}
                        </td>
                        <td>
                          <div class="actions">
                          <ConfirmButton
                            label="Reset"
                            confirm="Restore from snapshots?"
                            small
                            disabled={!!c.assignedSession}
                            onConfirm={() => act(() => api.admin.reset(c.clusterId))}
                          />
                          <ConfirmButton
                            label="Recreate"
                            confirm="Delete and rebuild?"
                            small
                            danger
                            disabled={!!c.assignedSession}
                            onConfirm={() => act(() => api.admin.recreate(c.clusterId))}
                          />
                          </div>
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </section>
          <section aria-labelledby="sessions-h">
            <h2 id="sessions-h">Sessions</h2>
            {pic.sessions.sessions.length === 0 ? (
              <Empty>No active session.</Empty>
            ) : (
              <div class="table-wrap">
                <table data-testid="sessions">
                  <thead>
                    <tr>
                      <th scope="col">Session</th>
                      <th scope="col">User</th>
                      <th scope="col">Scenario</th>
                      <th scope="col">State</th>
                      <th scope="col">Cluster</th>
                      <th scope="col">Time left</th>
                      <th scope="col">Actions</th>
                    </tr>
                  </thead>
                  <tbody>
                    {pic.sessions.sessions.map((s) => (
                      <tr key={s.id} data-session={s.id}>
                        <td>{s.id}</td>
                        <td>{s.user}</td>
                        <td>{s.scenarioId}</td>
                        <td>
                          {statusLabel(s)}
                          {s.queuePosition != null && <span class="muted"> #{s.queuePosition}</span>}
                        </td>
                        <td>{s.assignedCluster ?? '—'}</td>
                        <td>{isZeroTime(s.expirationTime) ? '—' : remaining(s.expirationTime, now)?.text}</td>
                        <td>
                          <ConfirmButton
                            label="Force end"
                            confirm={`End ${s.user}'s session?`}
                            small
                            danger
                            testid={`force-end-${s.id}`}
                            onConfirm={() => act(() => api.admin.endSession(s.id))}
                          />
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </section>
        </>
      )}
    </div>
  );
}
