/**
 * The benchmark's CPU pinning (test/helpers/torch_bench.py, cmd "pin", as scripts/bench/main.ts uses it): every thread of the Node process and of
 * the PyTorch worker goes on the same first t CPUs for a t-thread workload, and back on all of them for the memory
 * probes. Checked on a throwaway Node process (never on the jest worker itself) by reading each thread's
 * Cpus_allowed_list. Skipped, with the reason
 * in the title, off Linux or where no Python imports torch (the worker imports it).
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import { findTorchPython } from './helpers/torch-python';
import { PythonWorker } from './helpers/torch-worker';

const python = process.platform === 'linux' ? (findTorchPython().path ?? undefined) : undefined;
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

  test('every thread of both processes goes on the first t allowed CPUs, and back on all of them', async () => {
    const everyCpu = allowedCpus(child.pid!, child.pid!);
    expect(everyCpu.length).toBeGreaterThan(1);
    const workerPid = (worker as unknown as { child: ChildProcess }).child.pid!;
    const expectEvery = (pid: number, cpus: number[]) => {
      for (const tid of threadIds(pid)) expect({ tid, cpus: allowedCpus(pid, tid) }).toEqual({ tid, cpus });
    };

    const one = await worker.request<{ pinned: boolean; cpus: number[]; threads: number }>({
      cmd: 'pin',
      pids: [child.pid],
      cpus: 1,
    });
    expect(one.pinned).toBe(true);
    expect(one.cpus).toEqual([everyCpu[0]]);
    expect(threadIds(child.pid!).length).toBeGreaterThan(1); // the main thread and V8's helpers
    expectEvery(child.pid!, [everyCpu[0]]);
    expectEvery(workerPid, [everyCpu[0]]);
    expect(one.threads).toBeGreaterThanOrEqual(threadIds(child.pid!).length + 1);

    const two = await worker.request<{ cpus: number[] }>({ cmd: 'pin', pids: [child.pid], cpus: 2 });
    expect(two.cpus).toEqual(everyCpu.slice(0, 2));
    expectEvery(child.pid!, everyCpu.slice(0, 2));
    expectEvery(workerPid, everyCpu.slice(0, 2));

    await worker.request({ cmd: 'pin', pids: [child.pid] });
    expectEvery(child.pid!, everyCpu);
    expectEvery(workerPid, everyCpu);
  });
});
