// Small shared pieces of the app: navigation without reloads, error and empty states, a
// two-step confirm button, the theme switch.

import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError } from '../api';

export function navigate(path: string): void {
  if (location.pathname + location.search === path) return;
  history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

export function Link(props: { href: string; class?: string; children: ComponentChildren }) {
  return (
    <a
      href={props.href}
      class={props.class}
      onClick={(e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

export function message(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export function ErrorBox(props: { error: unknown; onRetry?: () => void }) {
  if (!props.error) return null;
  return (
    <div class="alert alert-error" role="alert">
      <span>{message(props.error)}</span>
      {props.onRetry && (
        <button type="button" class="btn btn-small" onClick={props.onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <p class="empty">{props.children}</p>;
}

export function Spinner(props: { label: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> {props.label}
    </p>
  );
}

/** A button that asks once more before acting; Escape or Cancel goes back. */
export function ConfirmButton(props: {
  label: string;
  confirm: string;
  onConfirm: () => Promise<void> | void;
  danger?: boolean;
  disabled?: boolean;
  small?: boolean;
  testid?: string;
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const cls = `btn${props.danger ? ' btn-danger' : ''}${props.small ? ' btn-small' : ''}`;
  if (!asking) {
    return (
      <button type="button" class={cls} disabled={props.disabled || busy} data-testid={props.testid} onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  }
  return (
    <span class="confirm" role="group" aria-label={props.confirm} onKeyDown={(e) => e.key === 'Escape' && setAsking(false)}>
      <span class="confirm-text">{props.confirm}</span>
      <button
        type="button"
        class={cls}
        autoFocus
        disabled={busy}
        data-testid={props.testid && `${props.testid}-yes`}
        onClick={async () => {
          setBusy(true);
          try {
            await props.onConfirm();
          } finally {
            setBusy(false);
            setAsking(false);
          }
        }}
      >
        Yes
      </button>
      <button type="button" class={`btn btn-quiet${props.small ? ' btn-small' : ''}`} onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

type Theme = 'light' | 'dark' | 'system';

function applyTheme(t: Theme) {
  if (t === 'system') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
}

export function ThemeSwitch() {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem('cks-theme') as Theme) || 'system');
  useEffect(() => {
    applyTheme(theme);
    localStorage.setItem('cks-theme', theme);
  }, [theme]);
  return (
    <label class="theme">
      <span class="sr-only">Colour theme</span>
      <select value={theme} onChange={(e) => setTheme((e.target as HTMLSelectElement).value as Theme)}>
        <option value="system">System theme</option>
        <option value="light">Light</option>
        <option value="dark">Dark</option>
      </select>
    </label>
  );
}

/** `document.title` for the page. */
export function useTitle(title: string) {
  useEffect(() => {
    document.title = title ? `${title} · cks-lab` : 'cks-lab';
  }, [title]);
}

/** Arrow keys, Home and End move between the tabs of a tablist (the WAI-ARIA tabs pattern). */
export function onTabKeys(e: KeyboardEvent, index: number, count: number, select: (i: number) => void) {
  const next =
    e.key === 'ArrowRight' || e.key === 'ArrowDown'
      ? (index + 1) % count
      : e.key === 'ArrowLeft' || e.key === 'ArrowUp'
        ? (index - 1 + count) % count
        : e.key === 'Home'
          ? 0
          : e.key === 'End'
            ? count - 1
            : -1;
  if (next < 0) return;
  e.preventDefault();
  select(next);
  const list = (e.currentTarget as HTMLElement).closest('[role="tablist"]');
  (list?.querySelectorAll<HTMLElement>('[role="tab"]')[next])?.focus();
}
