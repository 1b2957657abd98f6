/** How the benchmark prints: one log line at a time, and numbers formatted for its tables. */

export function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Milliseconds with about three significant digits. */
export function fmtMs(v: number | undefined | null): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return 'n/a';
  if (v < 1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return v.toFixed(0);
}

export function fmtNum(v: number | undefined | null, digits = 2): string {
  return v === undefined || v === null || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits);
}

/** Bytes as megabytes (10^6). */
export function fmtMB(bytes: number | undefined | null): string {
  if (bytes === undefined || bytes === null) return 'n/a';
  return (bytes / 1e6).toFixed(bytes < 10e6 ? 1 : 0);
}
