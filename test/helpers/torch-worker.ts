/**
 * The long-lived PyTorch worker of the benchmark (torch_bench.py beside this file; scripts/bench/main.ts) seen from Node: JSON lines over stdin/stdout, one request at a
 * time, so the worker is idle while the addon is timed.
 */
import { spawn, ChildProcess } from 'child_process';
import * as path from 'path';
import * as readline from 'readline';

export const TORCH_BENCH = path.join(__dirname, 'torch_bench.py');

export type Reply = { ok: true; [key: string]: unknown } | { ok: false; error: string };

export class PythonWorker {
  private readonly child: ChildProcess;
  private readonly pending: { resolve: (reply: Reply) => void; reject: (error: Error) => void }[] = [];
  private exited = false;
  private stderrTail = '';

  constructor(python: string, env: NodeJS.ProcessEnv = process.env) {
    this.child = spawn(python, ['-u', TORCH_BENCH], { stdio: ['pipe', 'pipe', 'pipe'], env });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const waiter = this.pending.shift();
      if (!waiter) return;
      try {
        waiter.resolve(JSON.parse(line) as Reply);
      } catch {
        waiter.reject(new Error(`torch_bench.py wrote a line that is not JSON: ${line.slice(0, 200)}`));
      }
    });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString()).slice(-4000);
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      const error = new Error(
        `torch_bench.py exited (code ${code}, signal ${signal}); stderr: ${this.stderrTail.trim()}`,
      );
      for (const waiter of this.pending.splice(0)) waiter.reject(error);
    });
    this.child.on('error', (error) => {
      this.exited = true;
      for (const waiter of this.pending.splice(0)) waiter.reject(error);
    });
  }

  /** Sends one command; resolves with the reply (ok false replies are turned into errors). */
  async request<T = Record<string, unknown>>(command: Record<string, unknown>): Promise<T> {
    if (this.exited) throw new Error(`torch_bench.py is not running; stderr: ${this.stderrTail.trim()}`);
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.child.stdin!.write(`${JSON.stringify(command)}\n`);
    });
    if (!reply.ok) throw new Error(`torch_bench.py ${String(command.cmd)}: ${reply.error}`);
    return reply as unknown as T;
  }

  get alive(): boolean {
    return !this.exited;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end(`${JSON.stringify({ cmd: 'quit' })}\n`);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(timer);
  }
}
