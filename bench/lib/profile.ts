import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  fn: string;
  where: string;
  ms: number;
  percent: number;
}

/** Self time per function of a `node --cpu-prof` profile, largest first. */
export function topSelfTime(file: string, limit = 25): SelfTime[] {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byNode = new Map<number, ProfileNode>(profile.nodes.map((n) => [n.id, n]));
  const totals = new Map<string, { fn: string; where: string; us: number }>();
  let all = 0;
  profile.samples.forEach((nodeId, i) => {
    // The delta before sample i is the time attributed to it (the V8 convention).
    const us = profile.timeDeltas[i] ?? 0;
    const frame = byNode.get(nodeId)?.callFrame;
    if (frame === undefined) return;
    all += us;
    const url = frame.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, "$1/");
    const where = url === "" ? "(native)" : `${url}:${frame.lineNumber + 1}`;
    const fn = frame.functionName === "" ? "(anonymous)" : frame.functionName;
    const key = `${fn} ${where}`;
    const entry = totals.get(key) ?? { fn, where, us: 0 };
    entry.us += us;
    totals.set(key, entry);
  });
  return [...totals.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, limit)
    .map((e) => ({
      fn: e.fn,
      where: e.where,
      ms: Math.round(e.us / 1000),
      percent: Math.round((e.us / all) * 1000) / 10,
    }));
}
