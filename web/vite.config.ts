// Two pages: the app (catalogue, lab, admin) and the embeddable terminal page. Everything is
// emitted as files the gateway serves from --web-dir; nothing is inlined into the HTML, so the
// gateway's Content-Security-Policy can forbid inline scripts.
import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  base: '/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // No data: URIs and no inline module-preload polyfill: the CSP allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, 'index.html'),
        terminal: resolve(import.meta.dirname, 'terminal.html'),
      },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.ts'],
  },
});
