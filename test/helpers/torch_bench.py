#!/usr/bin/env python3
"""
The PyTorch side of `npm run bench` (scripts/bench/main.ts): a long-lived worker that runs the widely used
eager PyTorch implementation of bootstrapped cross-entropy (STCN's BootstrappedCE) on request, so that Python's
start-up and `import torch` are never timed.

Protocol: one JSON object per line on stdin, one JSON object per line on stdout (nothing else is written to
stdout; stray prints go to stderr). Every reply has "ok": true, or "ok": false and "error".

  {"cmd": "info"}                                   -> versions, CPU, parallel info
  {"cmd": "bandwidth", "threads": t, "mb": 256}     -> copy and read bandwidth of a preallocated buffer (GB/s)
  {"cmd": "data", "shape": [N,C,H,W], "seed": s, "device": "cpu"}
                                                    -> makes logits (randn) and labels (randint, int64)
  {"cmd": "time", "p": 0.25, "mode": "fwd"|"fwdbwd", "threads": t, "reps": r}
                                                    -> per-repetition milliseconds, loss, k
  {"cmd": "mem", "p": ..., "mode": ..., "threads": t}
                                                    -> peak memory of one call (use in a fresh process)
  {"cmd": "pin", "pids": [pid], "cpus": t}         -> every thread of that process and of this worker on the same t
                                                    CPUs, or on all without "cpus" (Linux; see cmd_pin)
  {"cmd": "quit"}

Timing: perf_counter_ns around the op only (data creation excluded). "fwd": that forward on logits that
do not require grad. "fwdbwd": a fresh leaf (logits.detach().requires_grad_(), no copy) per repetition, then
forward + loss.backward(); the gradient is a fresh tensor each time, as in a training step with
zero_grad(set_to_none=True). On CUDA, torch.cuda.synchronize() before starting and before stopping the clock.

Run stand-alone for a smoke test:  /usr/bin/python3 test/helpers/torch_bench.py --selftest
"""
import gc
import json
import os
import platform
import sys
import time

PROTOCOL_OUT = sys.stdout
sys.stdout = sys.stderr  # keep the protocol channel clean

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def stcn_bootstrapped_ce(inputs, targets, p):
    """STCN's eager implementation (BootstrappedCE.forward after warm-up)."""
    raw_loss = F.cross_entropy(inputs, targets, reduction='none').view(-1)
    num_pixels = raw_loss.numel()
    loss, _ = torch.topk(raw_loss, int(num_pixels * p), sorted=False)
    return loss.mean()


STATE = {'x': None, 'y': None, 'device': 'cpu'}


def sync():
    if STATE['device'].startswith('cuda'):
        torch.cuda.synchronize()


def proc_status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return None


def reset_hwm():
    """Resets VmHWM to the current RSS (Linux >= 4.0). Returns False where not permitted."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def cmd_info(req):
    info = {
        'torch': torch.__version__,
        'python': platform.python_version(),
        'executable': sys.executable,
        'cpu': cpu_model(),
        'cores': os.cpu_count(),
        'parallel_info': torch.__config__.parallel_info(),
        'cuda_available': torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info['cuda_device'] = torch.cuda.get_device_name(0)
    return info


def cmd_bandwidth(req):
    torch.set_num_threads(int(req.get('threads', 1)))
    device = req.get('device', 'cpu')
    nbytes = int(req.get('mb', 256)) * 1000 * 1000
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.fill_(0)  # first touch outside the clock
    copy_s, read_s = [], []
    for _ in range(int(req.get('reps', 5))):
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        t0 = time.perf_counter_ns()
        dst.copy_(src)
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        t1 = time.perf_counter_ns()
        s = src.sum()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        t2 = time.perf_counter_ns()
        del s
        copy_s.append((t1 - t0) / 1e9)
        read_s.append((t2 - t1) / 1e9)
    del src, dst
    gc.collect()
    return {
        'bytes': n * 4,
        'copy_gbps': 2 * n * 4 / min(copy_s) / 1e9,  # read + write
        'read_gbps': n * 4 / min(read_s) / 1e9,
    }


def cmd_data(req):
    STATE['x'] = STATE['y'] = None
    gc.collect()
    device = req.get('device', 'cpu')
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
    shape = [int(s) for s in req['shape']]
    # The same generator calls, in the same order, as the Node side: with the same LibTorch and seed the CPU
    # data are identical, so the losses can be compared.
    torch.manual_seed(int(req.get('seed', 0)))
    x = torch.randn(shape)
    y = torch.randint(0, shape[1], [shape[0]] + shape[2:])
    STATE['x'] = x.to(device)
    STATE['y'] = y.to(device)
    STATE['device'] = device
    return {'numel': x.numel()}


def one_call(p, mode):
    """Runs one timed call; returns (ms, loss value)."""
    x, y = STATE['x'], STATE['y']
    if mode == 'fwd':
        sync()
        t0 = time.perf_counter_ns()
        loss = stcn_bootstrapped_ce(x, y, p)
        sync()
        t1 = time.perf_counter_ns()
    else:
        leaf = x.detach().requires_grad_()
        sync()
        t0 = time.perf_counter_ns()
        loss = stcn_bootstrapped_ce(leaf, y, p)
        loss.backward()
        sync()
        t1 = time.perf_counter_ns()
        del leaf  # frees the gradient
    return (t1 - t0) / 1e6, float(loss.detach())


def cmd_time(req):
    torch.set_num_threads(int(req['threads']))
    p, mode = float(req['p']), req['mode']
    times = []
    value = None
    for _ in range(int(req['reps'])):
        ms, value = one_call(p, mode)
        times.append(ms)
    numel = STATE['y'].numel()
    return {'times_ms': times, 'loss': value, 'k': int(numel * p), 'threads': torch.get_num_threads()}


def warm_up(p, mode):
    """One call on a tiny input first, so that one-time initialisation (thread pool, kernels) is not counted."""
    x, y = STATE['x'], STATE['y']
    small_x = torch.randn([1, x.shape[1], 8, 8], device=x.device, requires_grad=(mode == 'fwdbwd'))
    small_y = torch.randint(0, x.shape[1], [1, 8, 8], device=y.device)
    loss = stcn_bootstrapped_ce(small_x, small_y, p)
    if mode == 'fwdbwd':
        loss.backward()
    sync()


def cmd_mem(req):
    """Peak memory of one call, meant for a fresh process (first call: includes first-touch page faults)."""
    torch.set_num_threads(int(req['threads']))
    p, mode = float(req['p']), req['mode']
    warm_up(p, mode)
    gc.collect()
    if STATE['device'].startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ms, value = one_call(p, mode)
        peak = torch.cuda.max_memory_allocated() - base
        return {'peak_bytes': peak, 'method': 'torch.cuda.max_memory_allocated() - memory_allocated() before',
                'first_ms': ms, 'loss': value}
    reset = reset_hwm()
    rss0 = proc_status_kb('VmRSS')
    hwm0 = proc_status_kb('VmHWM')
    ms, value = one_call(p, mode)
    hwm1 = proc_status_kb('VmHWM')
    base = rss0 if reset else hwm0
    return {'peak_bytes': max(0, hwm1 - base) * 1024,
            'method': 'VmHWM after - VmRSS before (HWM reset via clear_refs)' if reset
            else 'VmHWM after - VmHWM before (clear_refs not permitted: a lower bound)',
            'first_ms': ms, 'loss': value, 'rss_before_bytes': rss0 * 1024}


# The CPUs this worker may use, read before cmd_pin narrows its mask.
ALLOWED_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else []


def cmd_pin(req):
    """Every thread of each process in req['pids'] and of this worker on the same req['cpus'] CPUs, the lowest
    this worker may use (all of them without 'cpus'): a workload with t threads runs both sides on the same t
    CPUs. On a VM one vCPU can run these kernels ~1.5x slower than another for seconds at a time; left to the
    scheduler, the two processes landed on either for many rounds and single medians moved by 30-60 % (see
    docs/performance.md). Whole processes, not main threads alone: threads started later (the fused kernel starts
    its workers per call, OpenMP its pool once) inherit the mask of the thread that starts them, so a main thread
    alone on one CPU would pull them onto it."""
    if not hasattr(os, 'sched_setaffinity'):
        return {'pinned': False, 'reason': 'no sched_setaffinity on this platform'}
    cpus = ALLOWED_CPUS[:max(1, int(req['cpus']))] if req.get('cpus') else ALLOWED_CPUS
    threads = 0
    for pid in list(req['pids']) + [os.getpid()]:
        for name in os.listdir('/proc/%d/task' % pid):
            try:
                os.sched_setaffinity(int(name), set(cpus))
                threads += 1
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
    return {'pinned': True, 'cpus': cpus, 'threads': threads}


HANDLERS = {'info': cmd_info, 'bandwidth': cmd_bandwidth, 'data': cmd_data, 'time': cmd_time, 'mem': cmd_mem, 'pin': cmd_pin}


def serve():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if req.get('cmd') == 'quit':
                break
            reply = HANDLERS[req['cmd']](req)
            reply['ok'] = True
        except Exception as error:  # reported to the Node side, which decides
            reply = {'ok': False, 'error': '%s: %s' % (type(error).__name__, error)}
        PROTOCOL_OUT.write(json.dumps(reply) + '\n')
        PROTOCOL_OUT.flush()


def selftest():
    print(json.dumps(cmd_info({})['torch']))
    cmd_data({'shape': [1, 19, 32, 32], 'seed': 0})
    for mode in ('fwd', 'fwdbwd'):
        r = cmd_time({'p': 0.25, 'mode': mode, 'threads': 1, 'reps': 3})
        print(mode, r['loss'], ['%.3f' % t for t in r['times_ms']])
    print(cmd_mem({'p': 0.25, 'mode': 'fwdbwd', 'threads': 1}))


if __name__ == '__main__':
    if '--selftest' in sys.argv:
        selftest()
    else:
        serve()
