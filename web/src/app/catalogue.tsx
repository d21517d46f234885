// The catalogue: scenarios by category, filtered by difficulty and a search, with a start
// button. An active session of the user is offered first (one per user by default).

import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { DIFFICULTIES, filterScenarios, groupByCategory, isActive, statusLabel } from '../logic';
import type { Categories, Me, ScenarioView, SessionView } from '../types';
import { Empty, ErrorBox, Link, navigate, Spinner, useTitle } from './ui';

export function Catalogue(_props: { me: Me }) {
  useTitle('Catalogue');
  const [scenarios, setScenarios] = useState<ScenarioView[] | null>(null);
  const [categories, setCategories] = useState<Categories>({});
  const [sessions, setSessions] = useState<SessionView[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [search, setSearch] = useState('');
  const [difficulty, setDifficulty] = useState('');
  const [category, setCategory] = useState('');
  const [starting, setStarting] = useState<string | null>(null);
  const [startError, setStartError] = useState<unknown>(null);

  const load = () => {
    setError(null);
    Promise.all([api.scenarios(), api.categories(), api.sessions()])
      .then(([s, c, mine]) => {
        setScenarios(s);
        setCategories(c ?? {});
        setSessions(mine.filter(isActive));
      })
      .catch(setError);
  };
  useEffect(load, []);

  const groups = useMemo(
    () => groupByCategory(filterScenarios(scenarios ?? [], { search, difficulty, category }), categories),
    [scenarios, categories, search, difficulty, category],
  );
  const titles = useMemo(() => new Map((scenarios ?? []).map((s) => [s.id, s.title])), [scenarios]);

  const start = async (id: string) => {
    setStarting(id);
    setStartError(null);
    try {
      const { data } = await api.createSession(id, crypto.randomUUID());
      navigate(`/lab/${data.sessionId}`);
    } catch (e) {
      setStartError(e);
      if (e instanceof ApiError && e.code === 'SESSION_LIMIT') api.sessions().then((s) => setSessions(s.filter(isActive)), () => undefined);
    } finally {
      setStarting(null);
    }
  };

  return (
    <div class="page">
      <h1>Scenarios</h1>
      {sessions.length > 0 && (
        <section class="resume" aria-label="Your active sessions">
          {sessions.map((s) => (
            <div class="resume-item" key={s.id}>
              <span>
                Your session <strong>{titles.get(s.scenarioId) ?? s.scenarioId}</strong> is {statusLabel(s).toLowerCase()}
                {s.queuePosition != null && ` (number ${s.queuePosition} in the queue)`}.
              </span>
              <Link href={`/lab/${s.id}`} class="btn btn-primary btn-small">
                Open the lab
              </Link>
            </div>
          ))}
        </section>
      )}
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          <span>Search</span>
          <input type="search" placeholder="Title, topic…" value={search} onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          <span>Category</span>
          <select value={category} onChange={(e) => setCategory((e.target as HTMLSelectElement).value)}>
            <option value="">All categories</option>
            {Object.entries(categories).map(([id, name]) => (
              <option value={id} key={id}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <label>
          <span>Difficulty</span>
          <select value={difficulty} onChange={(e) => setDifficulty((e.target as HTMLSelectElement).value)}>
            <option value="">Any difficulty</option>
            {DIFFICULTIES.map((d) => (
              <option value={d} key={d}>
                {d}
              </option>
            ))}
          </select>
        </label>
      </form>
      <ErrorBox error={startError} />
      <ErrorBox error={error} onRetry={load} />
      {!scenarios && !error && <Spinner label="Loading scenarios…" />}
      {scenarios && scenarios.length === 0 && <Empty>The catalogue has no scenarios yet. An administrator can add them under scenarios/.</Empty>}
      {scenarios && scenarios.length > 0 && groups.length === 0 && <Empty>No scenario matches these filters.</Empty>}
      {groups.map((g) => (
        <section class="category" key={g.id} aria-labelledby={`cat-${g.id || 'other'}`}>
          <h2 id={`cat-${g.id || 'other'}`}>{g.name}</h2>
          <ul class="cards">
            {g.scenarios.map((s) => (
              <li class="card" key={s.id} data-scenario={s.id}>
                <h3>{s.title}</h3>
                <p class="meta">
                  {s.difficulty && <span class={`pill pill-${s.difficulty}`}>{s.difficulty}</span>}
                  {s.timeEstimate && <span class="pill">{s.timeEstimate}</span>}
                  <span class="pill">
                    {s.tasks.length} task{s.tasks.length === 1 ? '' : 's'}
                  </span>
                </p>
                <p class="desc">{s.description}</p>
                {s.topics.length > 0 && <p class="topics">{s.topics.join(' · ')}</p>}
                <button
                  type="button"
                  class="btn btn-primary"
                  disabled={starting !== null}
                  aria-label={`Start ${s.title}`}
                  onClick={() => start(s.id)}
                >
                  {starting === s.id ? 'Starting…' : 'Start'}
                </button>
              </li>
            ))}
          </ul>
        </section>
      ))}
    </div>
  );
}
