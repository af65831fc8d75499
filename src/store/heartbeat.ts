/**
 * One replica's heartbeat, a field of the `<prefix>replicas` hash keyed by replica id, for
 * `status` and for operators looking at Redis directly. Written every few seconds by each
 * daemon, removed at a clean stop; entries of replicas that died without one are pruned.
 */
export interface ReplicaHeartbeat {
  /** When it was written (ms since the epoch). */
  at: number;
  pid: number;
  apiKeyAccepted: boolean;
  circuitOpen: boolean;
  /** Jobs the replica holds a lease on: queued, polling or with a decision being written. */
  leases: number;
}

export function encodeHeartbeat(beat: ReplicaHeartbeat): string {
  return JSON.stringify({
    at: beat.at,
    pid: beat.pid,
    apiKeyAccepted: beat.apiKeyAccepted,
    circuitOpen: beat.circuitOpen,
    leases: beat.leases,
  });
}

/** The heartbeat in `raw`, or null when it is not one (garbage, another version's layout). */
export function decodeHeartbeat(raw: string): ReplicaHeartbeat | null {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  if (typeof v["at"] !== "number" || !Number.isFinite(v["at"])) return null;
  return {
    at: v["at"],
    pid: typeof v["pid"] === "number" ? v["pid"] : 0,
    apiKeyAccepted: v["apiKeyAccepted"] === true,
    circuitOpen: v["circuitOpen"] === true,
    leases: typeof v["leases"] === "number" ? v["leases"] : 0,
  };
}
