import type { Redis } from "ioredis";
import { type Keys, keysFor } from "../store/keys.js";
import { ClosedError, InvalidArgumentError } from "./errors.js";
import { openRedis, type RedisLike } from "./redis.js";
import { type SubscribeOptions, type Subscription, subscribeStream } from "./subscribe.js";
import { type TrackResult, trackIds } from "./track.js";
import { type FinalJobEvent, type WaitOptions, waitForJob } from "./wait.js";

export interface ClientOptions {
  /** A `redis://` / `rediss://` URL, or an ioredis instance (Redis, Sentinel or Cluster). */
  redis: string | RedisLike;
  /** The daemon's `POLLER_KEY_PREFIX`. Default `idunox:jobs:`. */
  prefix?: string;
}

export interface JobPollerClient {
  /** The keys under the prefix (pending, events, alerts, ...), for logs and raw access. */
  readonly keys: Readonly<Keys>;
  /** Validates the ids as the daemon does and adds the valid ones with the intake hint. */
  track(ids: Iterable<string> | string): Promise<TrackResult>;
  /** Resolves with the job's ending event; see `FinalJobEvent`. */
  waitFor(jobId: string, options?: WaitOptions): Promise<FinalJobEvent>;
  /** Consumer-group reading of `events` or `alerts`; see `SubscribeOptions`. */
  subscribe(options: SubscribeOptions): Subscription;
  /**
   * Ends every subscription and wait of this client, then closes the connections the client
   * opened; an ioredis instance passed in stays open. Safe to call twice.
   */
  close(): Promise<void>;
}

export function createClient(options: ClientOptions): JobPollerClient {
  const prefix = options.prefix ?? "idunox:jobs:";
  if (typeof prefix !== "string" || prefix === "") {
    throw new InvalidArgumentError("prefix must be a non-empty string");
  }
  const owned = typeof options.redis === "string";
  const redis: RedisLike =
    typeof options.redis === "string" ? openRedis(options.redis) : options.redis;
  const keys = keysFor(prefix);
  const closing = new AbortController();
  const subscriptions = new Set<Subscription>();
  let closed: Promise<void> | undefined;

  const open = () => {
    if (closing.signal.aborted) throw new ClosedError();
  };

  return {
    keys,
    async track(ids) {
      open();
      return trackIds(redis, keys, ids);
    },
    async waitFor(jobId, waitOptions = {}) {
      open();
      return waitForJob(redis, keys, jobId, waitOptions, closing.signal);
    },
    subscribe(subscribeOptions) {
      open();
      const sub = subscribeStream(redis, keys, prefix, subscribeOptions, closing.signal);
      subscriptions.add(sub);
      const close = sub.close.bind(sub);
      return {
        ready: sub.ready,
        async close() {
          await close();
          subscriptions.delete(sub);
        },
      };
    },
    close() {
      closed ??= (async () => {
        closing.abort();
        await Promise.allSettled([...subscriptions].map((s) => s.close()));
        if (owned) {
          try {
            await (redis as Redis).quit();
          } catch {
            redis.disconnect();
          }
        }
      })();
      return closed;
    },
  };
}
