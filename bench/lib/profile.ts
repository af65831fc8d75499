import { readFileSync, writeFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
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

function frameName(frame: ProfileNode["callFrame"]): { fn: string; where: string } {
  const url = frame.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, "$1/");
  const where = url === "" ? "(native)" : `${url}:${frame.lineNumber + 1}`;
  const fn = frame.functionName === "" ? "(anonymous)" : frame.functionName;
  return { fn, where };
}

/**
 * Writes the profile as folded stacks (`root;caller;callee <µs>` per line), the input of
 * flamegraph.pl, speedscope and most flame-graph tools, next to it; returns the new path.
 */
export function writeFoldedStacks(file: string): string {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);
  const byNode = new Map<number, ProfileNode>(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((nodeId, i) => {
    selfUs.set(nodeId, (selfUs.get(nodeId) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const lines: string[] = [];
  for (const [nodeId, us] of selfUs) {
    const stack: string[] = [];
    for (let id: number | undefined = nodeId; id !== undefined; id = parent.get(id)) {
      const node = byNode.get(id);
      if (node === undefined || node.callFrame.functionName === "(root)") continue;
      const { fn, where } = frameName(node.callFrame);
      stack.push(`${fn} ${where}`.replaceAll(";", ","));
    }
    if (stack.length > 0 && us > 0) lines.push(`${stack.reverse().join(";")} ${Math.round(us)}`);
  }
  const out = file.replace(/\.cpuprofile$/, ".folded");
  writeFileSync(out, `${lines.join("\n")}\n`);
  return out;
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
    const { fn, where } = frameName(frame);
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
