/**
 * The benchmark's CPU pinning (scripts/bench/torch_bench.py, cmd "pin"): the main threads of the Node process and
 * of the PyTorch worker go on one CPU, every other thread of both back on all CPUs. Checked on a throwaway Node
 * process (never on the jest worker itself) by reading each thread's Cpus_allowed_list. Skipped, with the reason
 * in the title, off Linux or where no Python imports torch (the worker imports it).
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import { PythonWorker, findPython } from '../scripts/bench/python';

const python = process.platform === 'linux' ? findPython().python : undefined;
const skip =
  process.platform !== 'linux'
    ? 'not Linux (pinning uses sched_setaffinity)'
    : python === undefined
      ? 'no Python that imports torch'
      : os.cpus().length < 2
        ? 'one CPU: nothing to tell apart'
        : undefined;

function allowedCpus(pid: number, tid: number): number[] {
  const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(status)![1];
  return list.split(',').flatMap((part) => {
    const [a, b] = part.split('-').map(Number);
    return b === undefined ? [a] : Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
}

function threadIds(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map(Number);
}

(skip ? describe.skip : describe)(`bench CPU pinning${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let child: ChildProcess;
  let worker: PythonWorker;

  beforeAll(async () => {
    // A Node process with its usual helper threads (V8's platform workers), idle until killed.
    child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    worker = new PythonWorker(python!);
    await worker.request({ cmd: 'info' });
  }, 60_000);

  afterAll(async () => {
    child?.kill();
    await worker?.close();
  });

  test('main threads share the lowest allowed CPU; other threads get every allowed CPU again', async () => {
    const everyCpu = allowedCpus(child.pid!, child.pid!);
    expect(everyCpu.length).toBeGreaterThan(1);
    // A helper thread first narrowed to one CPU, as threads started after the main thread was pinned would be.
    const helper = threadIds(child.pid!).find((tid) => tid !== child.pid)!;
    expect(helper).toBeDefined();
    const narrowed = spawn('taskset', ['-p', '-c', String(everyCpu[everyCpu.length - 1]), String(helper)], { stdio: 'ignore' });
    const tasksetOk = await new Promise<boolean>((resolve) => {
      narrowed.on('exit', (code) => resolve(code === 0));
      narrowed.on('error', () => resolve(false));
    });

    const reply = await worker.request<{ pinned: boolean; cpu: number; threads: number }>({ cmd: 'pin', pids: [child.pid] });
    expect(reply.pinned).toBe(true);
    expect(reply.cpu).toBe(Math.min(...everyCpu));
    expect(allowedCpus(child.pid!, child.pid!)).toEqual([reply.cpu]);
    for (const tid of threadIds(child.pid!)) {
      if (tid !== child.pid) expect(allowedCpus(child.pid!, tid)).toEqual(everyCpu);
    }
    if (tasksetOk) expect(allowedCpus(child.pid!, helper)).toEqual(everyCpu);
    // The worker's own main thread too.
    const workerPid = (worker as unknown as { child: ChildProcess }).child.pid!;
    expect(allowedCpus(workerPid, workerPid)).toEqual([reply.cpu]);
    expect(reply.threads).toBeGreaterThanOrEqual(threadIds(child.pid!).length + 1);
  });
});
