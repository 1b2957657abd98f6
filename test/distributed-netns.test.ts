/**
 * Two hosts without a second machine: two network namespaces joined by a veth pair, one node of the launcher in
 * each (`--nnodes 2 --node-rank R --master-addr <the first namespace's address>`), so that the ranks meet over a
 * real interface rather than loopback. Needs root (to create namespaces) and iproute2; skipped with the reason
 * otherwise, or when the build has no distributed module.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as bce from '../lib';

const ROOT = path.resolve(__dirname, '..');
const LAUNCHER = path.join(ROOT, 'bin', 'bootstrapped-ce-run.js');
const WORKER = path.join(__dirname, 'fixtures', 'distributed-worker.ts');

const tag = String(process.pid % 100000);
const namespaces = [`bce-a-${tag}`, `bce-b-${tag}`];
const links = [`bcva${tag}`, `bcvb${tag}`];
const subnet = `10.${200 + (process.pid % 50)}.${process.pid % 250}`;
const addresses = [`${subnet}.1`, `${subnet}.2`];

function ip(args: string[]): { ok: boolean; text: string } {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: result.status === 0, text: `${result.error?.message ?? ''}${result.stderr ?? ''}`.trim() };
}

/** Creates the two namespaces and the veth pair; the reason it cannot, or undefined. */
function setUp(): string | undefined {
  if (!bce.distributed.isAvailable()) return bce.distributed.unavailableReason();
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const steps: string[][] = [
    ['netns', 'add', namespaces[0]],
    ['netns', 'add', namespaces[1]],
    ['link', 'add', links[0], 'type', 'veth', 'peer', 'name', links[1]],
    ['link', 'set', links[0], 'netns', namespaces[0]],
    ['link', 'set', links[1], 'netns', namespaces[1]],
    ...[0, 1].flatMap((i) => [
      ['-n', namespaces[i], 'addr', 'add', `${addresses[i]}/24`, 'dev', links[i]],
      ['-n', namespaces[i], 'link', 'set', links[i], 'up'],
      ['-n', namespaces[i], 'link', 'set', 'lo', 'up'],
    ]),
  ];
  for (const step of steps) {
    const result = ip(step);
    if (!result.ok) return `ip ${step.join(' ')} failed: ${result.text || 'no message'}`;
  }
  return undefined;
}

const reason = setUp();
if (reason) console.warn(`two-namespace distributed test skipped: ${reason}`);

afterAll(() => {
  for (const ns of namespaces) ip(['netns', 'delete', ns]);
});

/** Runs one node of the launcher inside a namespace; resolves with its exit code and output. */
function node(index: number, port: number, syncDir: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      namespaces[index],
      process.execPath,
      LAUNCHER,
      '--nnodes',
      '2',
      '--node-rank',
      String(index),
      '--nproc-per-node',
      '1',
      '--master-addr',
      addresses[0],
      '--master-port',
      String(port),
      WORKER,
      'collectives',
    ],
    // GLOO_SOCKET_IFNAME names the interface Gloo binds, as in PyTorch: the namespace's hostname resolves to
    // nothing inside it.
    { cwd: ROOT, env: { ...process.env, DISTRIBUTED_TEST_SYNC_DIR: syncDir, GLOO_SOCKET_IFNAME: links[index] } },
  );
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}

(reason ? test.skip : test)(
  'two hosts over a veth pair: the collectives give the values computed by hand',
  async () => {
    const syncDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-netns-'));
    // A fresh namespace has no listener at all: any port is free there.
    const port = 29500 + (process.pid % 1000);
    const [first, second] = await Promise.all([node(0, port, syncDir), node(1, port, syncDir)]);
    expect({ code: first.code, output: first.code === 0 ? '' : first.output }).toEqual({ code: 0, output: '' });
    expect({ code: second.code, output: second.code === 0 ? '' : second.output }).toEqual({ code: 0, output: '' });
    const results = fs
      .readdirSync(syncDir)
      .filter((name) => /^result-\d+-\d+\.json$/.test(name))
      .map((name) => JSON.parse(fs.readFileSync(path.join(syncDir, name), 'utf8')) as Record<string, unknown>)
      .sort((a, b) => (a.rank as number) - (b.rank as number));
    fs.rmSync(syncDir, { recursive: true, force: true });
    expect(results.map((r) => r.rank)).toEqual([0, 1]);
    for (const result of results) {
      // Ranks 0 and 1: sum of [r + 1, 2(r + 1), -r], max/min of [r, -r], broadcast from rank 1 of [10r + 1, 10r + 2].
      expect(result.sum).toEqual([3, 6, -1]);
      expect(result.max).toEqual([1, 0]);
      expect(result.min).toEqual([0, -1]);
      expect(result.broadcast).toEqual([11, 12]);
      expect(result.allGather).toEqual([
        [0, 0],
        [1, 1],
      ]);
    }
  },
  120_000,
);
