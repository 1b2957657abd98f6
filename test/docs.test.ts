/**
 * Docs that run: every TypeScript/JavaScript fenced block of README.md and docs/*.md runs as a program against
 * this package (its `import ... from 'bootstrapped-ce'` pointed at lib/), each in its own child process with a
 * time limit, in a scratch folder that sees the repository's models/. A block that cannot run as it stands (it
 * needs a GPU, or is a fragment or a list of signatures) says so in the Markdown, on the line before its fence:
 * `<!-- not run: the reason -->`; this test lists those blocks and checks each gives a reason. A block that is a
 * script for several ranks says how it is started, `<!-- run with: bootstrapped-ce-run --nproc-per-node N -->`,
 * and runs under the package's launcher on 127.0.0.1.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as bce from '../lib';

const root = path.join(__dirname, '..');
const LANGUAGES = new Set(['ts', 'typescript', 'js', 'javascript', 'mjs', 'cjs']);
const TIME_LIMIT_MS = 90_000;

interface Block {
  file: string;
  line: number;
  code: string;
  notRun?: string;
  /** Ranks to start it with under bin/bootstrapped-ce-run.js (`<!-- run with: ... -->`). */
  ranks?: number;
}

function markdownFiles(): string[] {
  const docs = fs
    .readdirSync(path.join(root, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => path.join('docs', name));
  return ['README.md', ...docs];
}

/** The fenced code blocks of one Markdown file in a language of LANGUAGES, with their not-run markers. */
function extractBlocks(file: string): Block[] {
  const lines = fs.readFileSync(path.join(root, file), 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, language] = open;
    let end = i + 1;
    while (end < lines.length && !lines[end].trimStart().startsWith(fence)) end++;
    if (LANGUAGES.has(language.toLowerCase())) {
      let previous = i - 1;
      while (previous >= 0 && lines[previous].trim() === '') previous--;
      const marker = previous >= 0 ? /<!--\s*not run:?\s*(.*?)\s*-->/.exec(lines[previous]) : null;
      const launcher =
        previous >= 0
          ? /<!--\s*run with: bootstrapped-ce-run --nproc-per-node (\d+)\s*-->/.exec(lines[previous])
          : null;
      blocks.push({
        file,
        line: i + 1,
        code: lines
          .slice(i + 1, end)
          .map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l))
          .join('\n'),
        notRun: marker ? marker[1] : undefined,
        ranks: launcher ? Number(launcher[1]) : undefined,
      });
    }
    i = end;
  }
  return blocks;
}

const blocks = markdownFiles().flatMap(extractBlocks);
const runnable = blocks.filter((b) => b.notRun === undefined);
const notRun = blocks.filter((b) => b.notRun !== undefined);
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-docs-'));
fs.symlinkSync(path.join(root, 'models'), path.join(scratch, 'models'));

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('docs', () => {
  it('has code blocks to run', () => {
    expect(runnable.length).toBeGreaterThan(0);
  });

  it('marks every block it does not run with a reason', () => {
    console.log(
      `docs blocks: ${runnable.length} run, ${notRun.length} not run:\n` +
        notRun.map((b) => `  ${b.file}:${b.line}: ${b.notRun}`).join('\n'),
    );
    for (const block of notRun)
      expect({ at: `${block.file}:${block.line}`, reason: block.notRun }).toEqual({
        at: `${block.file}:${block.line}`,
        reason: expect.stringMatching(/\S{3,}/),
      });
  });

  // Multi-rank blocks need the distributed module, which a build without Gloo lacks (PyPI's LibTorch ships no
  // Gloo headers): they are skipped there, with the reason.
  const distributedAvailable = bce.distributed.isAvailable();
  if (!distributedAvailable && runnable.some((b) => b.ranks !== undefined)) {
    console.warn(`multi-rank docs blocks skipped: ${bce.distributed.unavailableReason()}`);
  }
  const cases = (list: Block[]) => list.map((b) => [`${b.file}:${b.line}`, b] as const);
  const singleProcess = runnable.filter((b) => b.ranks === undefined);
  const multiRank = runnable.filter((b) => b.ranks !== undefined);
  it.each(cases(singleProcess))('%s runs', (_, block) => runBlock(block));
  if (multiRank.length > 0) {
    (distributedAvailable ? it : it.skip).each(cases(multiRank))('%s runs on its ranks', (_, block) => runBlock(block));
  }
});

function runBlock(block: Block): void {
  const lib = path.join(root, 'lib', 'index.ts');
  const code = block.code.replace(/(['"])bootstrapped-ce\1/g, JSON.stringify(lib));
  const file = path.join(scratch, `${block.file.replace(/[^\w]/g, '_')}_${block.line}.ts`);
  fs.writeFileSync(file, code);
  const command =
    block.ranks === undefined
      ? [require.resolve('ts-node/dist/bin.js'), '--transpile-only', file]
      : [path.join(root, 'bin', 'bootstrapped-ce-run.js'), '--nproc-per-node', String(block.ranks), file];
  const child = spawnSync(process.execPath, command, {
    // The launcher finds ts-node from its working directory: the repository's (which has models/ too).
    cwd: block.ranks === undefined ? scratch : root,
    encoding: 'utf8',
    timeout: TIME_LIMIT_MS,
    env: {
      ...process.env,
      TS_NODE_PROJECT: path.join(root, 'tsconfig.json'),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(29500 + (process.pid % 20000)),
    },
  });
  const failure = child.error ? `${child.error.message}` : `exit ${child.status} signal ${child.signal}`;
  expect({
    ok: child.status === 0,
    output: child.status === 0 ? '' : `${failure}\n${child.stderr.slice(-3000)}`,
  }).toEqual({
    ok: true,
    output: '',
  });
}
