// What the demo shows while it works. On a terminal: one line per step, a spinner and the time so far
// while it runs, ✔ and its time when done, then what it found, beneath. Elsewhere (CI, a pipe): plain lines, one
// `[n/N] …` marker when a step starts and one when it ends, so a log reads (and is checked) in order.

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export interface StepResult {
  title: string;
  ms: number;
  /** The same work done without the driver, measured in the same run, when there is such a thing. */
  raw?: { what: string; ms: number };
  ok: boolean;
}

export const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

export class Progress {
  readonly results: StepResult[] = [];
  private timer: NodeJS.Timeout | undefined;
  private current:
    { n: number; title: string; started: number; offClockMs: number; waiting?: string; details: string[] } | undefined;

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number } = process.stdout,
    private readonly tty = !!out.isTTY && process.env.TERM !== 'dumb',
  ) {}

  /** Run one step: its title, a spinner while `work` runs, then ✔ or ✖ with its time. */
  async step<T>(n: number, title: string, work: (s: StepHandle) => Promise<T>): Promise<T> {
    this.current = { n, title, started: performance.now(), offClockMs: 0, details: [] };
    if (this.tty) {
      let i = 0;
      this.timer = setInterval(() => this.redraw(SPINNER[i++ % SPINNER.length]!), 100);
      this.redraw(SPINNER[0]!);
    } else this.out.write(`[${n}/${this.total}] ${title} ...\n`);
    const handle: StepHandle = {
      detail: (line) => this.detail(line),
      waiting: (what) => {
        if (this.current) this.current.waiting = what;
      },
      raw: (what, ms) => {
        rawOf = { what, ms };
      },
      offClock: async (work) => {
        const t = performance.now();
        try {
          return await work();
        } finally {
          if (this.current) this.current.offClockMs += performance.now() - t;
        }
      },
    };
    let rawOf: StepResult['raw'];
    try {
      const value = await work(handle);
      this.finish(true, rawOf);
      return value;
    } catch (e) {
      this.finish(false, rawOf);
      throw e;
    }
  }

  private label(): string {
    return this.current ? `${this.current.n}/${this.total} ${this.current.title}` : '';
  }

  private redraw(mark: string): void {
    if (!this.current) return;
    const took = seconds(performance.now() - this.current.started);
    const line = `${mark} ${this.label()}${this.current.waiting ? ` — ${this.current.waiting}` : ''} ${took}`;
    this.out.write(`\r\x1b[2K${line.slice(0, (this.out.columns ?? 120) - 1)}`);
  }

  private detail(line: string): void {
    // on a terminal they wait under the spinner's line until the step ends
    if (this.tty) this.current?.details.push(line);
    else this.out.write(`      ${line}\n`);
  }

  private finish(ok: boolean, raw: StepResult['raw']): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const c = this.current!;
    const ms = performance.now() - c.started - c.offClockMs;
    this.results.push({ title: c.title, ms, raw, ok });
    if (this.tty)
      this.out.write(
        `\r\x1b[2K${ok ? '\x1b[32m✔\x1b[0m' : '\x1b[31m✖\x1b[0m'} ${this.label()} ${seconds(ms)}\n${c.details.map((d) => `      ${d}\n`).join('')}`,
      );
    else this.out.write(`[${c.n}/${this.total}] ${ok ? 'ok' : 'FAILED'} in ${seconds(ms)}\n`);
    this.current = undefined;
  }

  /** A line outside any step. */
  say(line: string): void {
    this.out.write(`${line}\n`);
  }

  /** The closing table: each step, its time, and the raw operation's where there is one. */
  table(): string {
    const rows = this.results.map((r, i) => [
      `${i + 1}. ${r.title}`,
      seconds(r.ms),
      r.raw ? `${seconds(r.raw.ms)}  ${r.raw.what}` : '—',
    ]);
    const head = ['step', 'time', 'raw operation, same run'];
    const w = [0, 1].map((c) => Math.max(head[c]!.length, ...rows.map((r) => r[c]!.length)));
    const fmt = (r: string[]) => `${r[0]!.padEnd(w[0]!)}  ${r[1]!.padStart(w[1]!)}  ${r[2]}`;
    return [fmt(head), fmt(head.map((h, i) => '-'.repeat(i < 2 ? w[i]! : h.length))), ...rows.map(fmt)].join('\n');
  }
}

export interface StepHandle {
  /** A line of what the step found or did (ids, sizes, codes). */
  detail(line: string): void;
  /** What the step waits for now, shown beside the spinner. */
  waiting(what: string): void;
  /** The time the same work takes without the driver, for the table. */
  raw(what: string, ms: number): void;
  /** Work that is not the step's own (the raw counterpart, its set-up): its time is not the step's. */
  offClock<T>(work: () => Promise<T>): Promise<T>;
}
