import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../src/log.js';

/** A real pino logger whose JSON lines land in memory, so tests can search what would have been logged. */
export function capturedLogger(level = 'debug'): {
  log: Logger;
  text: () => string;
  lines: () => Record<string, unknown>[];
} {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger(level, sink);
  const text = () => chunks.join('');
  return {
    log,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
