// Sign-in for the gateway's `token` mode: the token is posted once to /api/v1/auth/login, which
// answers with an HttpOnly, SameSite=Strict cookie. The page never keeps the token.

import { useState } from 'preact/hooks';
import { api } from '../api';
import type { Me } from '../types';
import { ErrorBox, useTitle } from './ui';

export function Login(props: { next: string; me: Me | null; onSignedIn: (me: Me) => void }) {
  useTitle('Sign in');
  const [token, setToken] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <div class="page narrow">
      <h1>Sign in</h1>
      {props.me && <p>You are signed in as {props.me.user}.</p>}
      <p>Paste the access token your course administrator gave you.</p>
      <form
        class="login"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            const { data } = await api.login(token.trim());
            setToken('');
            props.onSignedIn(data);
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="token">Access token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          required
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
        />
        <button class="btn btn-primary" type="submit" disabled={busy || !token.trim()}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
      <ErrorBox error={error} />
    </div>
  );
}
