import { describe, expect, it } from 'vitest';
import { renderMarkdown } from './markdown';

describe('task Markdown', () => {
  it('renders Markdown', () => {
    const html = renderMarkdown('## Goal\n\nRun `kubectl get pods`\n\n```sh\nls\n```');
    expect(html).toContain('<h2');
    expect(html).toContain('<code>kubectl get pods</code>');
    expect(html).toContain('<pre>');
  });
  it('can never run script', () => {
    const html = renderMarkdown(
      'Hi <script>window.pwned=1</script> <img src=x onerror="window.pwned=1"> [x](javascript:alert(1)) <a href="#" onclick="x()">a</a> <iframe src="https://evil.example"></iframe> <svg><script>1</script></svg>',
    );
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/onerror|onclick/i);
    expect(html).not.toMatch(/javascript:/i);
    expect(html).not.toMatch(/<iframe/i);
    expect(html).toContain('<img src="x" alt="">');
  });
  it('opens links elsewhere without a way back', () => {
    expect(renderMarkdown('[docs](https://kubernetes.io)')).toContain('target="_blank" rel="noopener noreferrer"');
  });
});
