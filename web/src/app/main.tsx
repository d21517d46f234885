// The app: who is signed in, the header, and which page the path shows (catalogue, lab,
// admin, login). Navigation is history-based; the gateway answers every page path with
// index.html.

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import '../app.css';
import { api, ApiError } from '../api';
import { route, type Route } from '../logic';
import type { Me } from '../types';
import { Admin } from './admin';
import { Catalogue } from './catalogue';
import { Lab } from './lab';
import { Login } from './login';
import { ErrorBox, Link, navigate, Spinner, ThemeSwitch } from './ui';

// The saved theme applies before the first paint of the app.
const saved = localStorage.getItem('cks-theme');
if (saved === 'light' || saved === 'dark') document.documentElement.dataset.theme = saved;

function useRoute(): Route {
  const [r, setR] = useState(() => route(location.pathname, location.search));
  useEffect(() => {
    const on = () => setR(route(location.pathname, location.search));
    window.addEventListener('popstate', on);
    return () => window.removeEventListener('popstate', on);
  }, []);
  return r;
}

function App() {
  const r = useRoute();
  const [me, setMe] = useState<Me | null>(null);
  const [meError, setMeError] = useState<unknown>(null);
  const [loaded, setLoaded] = useState(false);

  const loadMe = () => {
    setMeError(null);
    api
      .me()
      .then((m) => setMe(m))
      .catch((e) => {
        setMe(null);
        setMeError(e);
      })
      .finally(() => setLoaded(true));
  };
  useEffect(loadMe, []);

  const unauthenticated = meError instanceof ApiError && meError.status === 401;
  useEffect(() => {
    if (unauthenticated && r.page !== 'login') navigate(`/login?next=${encodeURIComponent(location.pathname)}`);
  }, [unauthenticated, r.page]);

  let body;
  if (!loaded) body = <Spinner label="Loading…" />;
  else if (r.page === 'login') body = <Login next={r.next} me={me} onSignedIn={(m) => { setMe(m); setMeError(null); navigate(r.next); }} />;
  else if (!me) body = unauthenticated ? <Spinner label="Redirecting to sign-in…" /> : <ErrorBox error={meError} onRetry={loadMe} />;
  else if (r.page === 'catalogue') body = <Catalogue me={me} />;
  else if (r.page === 'lab') body = <Lab id={r.id} me={me} />;
  else if (r.page === 'admin')
    body = me.role === 'admin' ? <Admin /> : <ErrorBox error={new Error('The admin console needs the admin role.')} />;
  else
    body = (
      <div class="page">
        <h1>Page not found</h1>
        <p>
          Nothing lives at <code>{r.path}</code>. <Link href="/">Back to the catalogue</Link>.
        </p>
      </div>
    );

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/" class="brand">
          <span aria-hidden="true">▸_</span> cks-lab
        </Link>
        <nav aria-label="Main">
          {me && (
            <Link href="/" class={r.page === 'catalogue' ? 'active' : ''}>
              Catalogue
            </Link>
          )}
          {me?.role === 'admin' && (
            <Link href="/admin" class={r.page === 'admin' ? 'active' : ''}>
              Admin
            </Link>
          )}
        </nav>
        <div class="who">
          {me && (
            <span class="user" title={`Signed in as ${me.user} (${me.role})`} data-testid="user">
              {me.user}
              {me.role === 'admin' && <span class="badge">admin</span>}
            </span>
          )}
          {me?.auth === 'token' && (
            <button
              type="button"
              class="btn btn-quiet btn-small"
              onClick={async () => {
                await api.logout().catch(() => undefined);
                setMe(null);
                navigate('/login');
              }}
            >
              Sign out
            </button>
          )}
          <ThemeSwitch />
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {body}
      </main>
    </>
  );
}

const root = document.getElementById('app') as HTMLElement;
// The boot message goes: render() adds to what is there.
root.textContent = '';
render(<App />, root);
