// Rolling latency statistics (median, p95) over the most recent samples.

export function quantile(sorted, q) {
  if (!sorted.length) return null;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export class Rolling {
  constructor(size = 200) {
    this.size = size;
    this.values = [];
  }

  push(v) {
    if (!Number.isFinite(v)) return;
    this.values.push(v);
    if (this.values.length > this.size) this.values.shift();
  }

  get count() {
    return this.values.length;
  }

  summary() {
    const s = [...this.values].sort((a, b) => a - b);
    return { median: quantile(s, 0.5), p95: quantile(s, 0.95), count: s.length };
  }

  clear() {
    this.values = [];
  }
}
