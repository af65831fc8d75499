import { randomUUID } from "node:crypto";

/** The settings the driver passes to the ceiling and peer subjects. */
export interface SubjectEnv {
  simUrl: string;
  apiKey: string;
  concurrency: number;
  redisUrl: string;
  prefix: string;
  minIntervalMs: number;
  maxIntervalMs: number;
  /** Ids for the ceiling loop, which has no pending set to read. */
  ids: string[];
}

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is required`);
  return value;
}

export function subjectEnv(): SubjectEnv {
  const idCount = Number(process.env["BENCH_IDS"] ?? "0");
  return {
    simUrl: required("BENCH_SIM_URL"),
    apiKey: required("BENCH_API_KEY"),
    concurrency: Number(required("BENCH_CONCURRENCY")),
    redisUrl: process.env["BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379",
    prefix: process.env["BENCH_PREFIX"] ?? "",
    minIntervalMs: Number(process.env["BENCH_MIN_INTERVAL_MS"] ?? "10"),
    maxIntervalMs: Number(process.env["BENCH_MAX_INTERVAL_MS"] ?? "10"),
    ids: Array.from({ length: idCount }, () => randomUUID()),
  };
}
