#!/usr/bin/env node
// bootstrapped-ce-run: starts the ranks of a data-parallel job, with torchrun's contract.
//
//   npx bootstrapped-ce-run --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]
//                           script.js [script arguments...]
//
// Starts N copies of `node script.js ...` on this machine, each with RANK (node-rank * N + local rank),
// LOCAL_RANK, WORLD_SIZE (M * N), LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (what
// distributed.initProcessGroup() reads). A script ending in .ts runs under ts-node when it can be found.
// SIGINT, SIGTERM and SIGHUP are forwarded to every rank. When a rank fails (non-zero exit or a signal), the others
// get SIGTERM (SIGKILL after --grace-ms) and the launcher exits with the failed rank's code (128 + signal number
// for a signal); when every rank succeeds it exits 0.
'use strict';

const { spawn } = require('child_process');
const os = require('os');
const path = require('path');

const USAGE = `usage: bootstrapped-ce-run --nproc-per-node N [--nnodes M] [--node-rank R] [--master-addr A]
                           [--master-port P] [--grace-ms MS] script.js [args...]`;

function fail(message) {
  process.stderr.write(`bootstrapped-ce-run: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parse(argv) {
  const options = {
    nprocPerNode: undefined,
    nnodes: 1,
    nodeRank: 0,
    masterAddr: '127.0.0.1',
    masterPort: 29500,
    graceMs: 5000,
  };
  const integers = {
    '--nproc-per-node': 'nprocPerNode',
    '--nnodes': 'nnodes',
    '--node-rank': 'nodeRank',
    '--master-port': 'masterPort',
    '--grace-ms': 'graceMs',
  };
  let i = 0;
  for (; i < argv.length; ++i) {
    let arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (arg === '--') {
      ++i;
      break;
    }
    if (!arg.startsWith('--')) break;
    let value;
    const eq = arg.indexOf('=');
    if (eq >= 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    } else {
      value = argv[++i];
    }
    arg = arg.replace(/_/g, '-');
    if (value === undefined) fail(`${arg} needs a value`);
    if (arg === '--master-addr') {
      if (value === '') fail('--master-addr must not be empty');
      options.masterAddr = value;
    } else if (integers[arg] !== undefined) {
      const number = Number(value);
      if (!Number.isSafeInteger(number)) fail(`${arg} must be an integer, got '${value}'`);
      options[integers[arg]] = number;
    } else {
      fail(`unknown option ${arg}`);
    }
  }
  const rest = argv.slice(i);
  if (options.nprocPerNode === undefined) fail('--nproc-per-node is required');
  if (options.nprocPerNode < 1) fail('--nproc-per-node must be at least 1');
  if (options.nnodes < 1) fail('--nnodes must be at least 1');
  if (options.nodeRank < 0 || options.nodeRank >= options.nnodes) fail('--node-rank must be in [0, nnodes)');
  if (options.masterPort < 1 || options.masterPort > 65535) fail('--master-port must be in [1, 65535]');
  if (options.graceMs < 0) fail('--grace-ms must be at least 0');
  if (rest.length === 0) fail('no script given');
  return { options, script: rest[0], args: rest.slice(1) };
}

// node's own arguments for the script: ts-node's register hook for TypeScript, when it can be found.
function nodeArguments(script) {
  if (!/\.(c|m)?ts$/.test(script)) return [];
  try {
    return ['-r', require.resolve('ts-node/register/transpile-only', { paths: [process.cwd(), path.dirname(script)] })];
  } catch {
    fail(`${script} is TypeScript but ts-node was not found; compile it to JavaScript or install ts-node`);
  }
  return [];
}

function main() {
  const { options, script, args } = parse(process.argv.slice(2));
  const worldSize = options.nnodes * options.nprocPerNode;
  const children = [];
  let failure = null; // { rank, code }
  let remaining = options.nprocPerNode;
  let killTimer = null;

  const stopOthers = () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    killTimer = setTimeout(() => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, options.graceMs);
    killTimer.unref();
  };

  for (let local = 0; local < options.nprocPerNode; ++local) {
    const rank = options.nodeRank * options.nprocPerNode + local;
    const env = {
      ...process.env,
      RANK: String(rank),
      LOCAL_RANK: String(local),
      WORLD_SIZE: String(worldSize),
      LOCAL_WORLD_SIZE: String(options.nprocPerNode),
      GROUP_RANK: String(options.nodeRank),
      MASTER_ADDR: options.masterAddr,
      MASTER_PORT: String(options.masterPort),
    };
    const child = spawn(process.execPath, [...nodeArguments(script), script, ...args], { env, stdio: 'inherit' });
    child.on('error', (error) => {
      process.stderr.write(`bootstrapped-ce-run: rank ${rank} could not start: ${error.message}\n`);
    });
    child.on('exit', (code, signal) => {
      remaining -= 1;
      const status = signal ? 128 + (os.constants.signals[signal] || 0) : code;
      if (status !== 0 && failure === null) {
        failure = { rank, code: status || 1 };
        const how = signal ? `signal ${signal}` : `exit code ${code}`;
        process.stderr.write(`bootstrapped-ce-run: rank ${rank} failed (${how}); stopping the other ranks\n`);
        stopOthers();
      }
      if (remaining === 0) {
        if (killTimer) clearTimeout(killTimer);
        process.exit(failure === null ? 0 : failure.code);
      }
    });
    children.push(child);
  }

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    });
  }
}

main();
