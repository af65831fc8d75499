/**
 * The client library of idunox-job-poller, for the services around the daemon: producers
 * (`track`, `waitFor`) and consumers (`subscribe`). Its runtime imports are ioredis and
 * node: built-ins only (test/unit/client/imports.test.ts holds it to that).
 */

export type { Job, JobStatus, JobType } from "../api/schema.js";
export { dataSchemaUri } from "../events/cloudevents.js";
export type {
  CloudEvent,
  DeadLetteredData,
  EventDataByKind,
  EventKind,
  NotFoundData,
  PollFailedData,
  RejectedData,
  SlaBreachedData,
  StatusChangedData,
} from "../events/types.js";
export { EVENT_KINDS } from "../events/types.js";
export { isJobId } from "../lib/job-id.js";
export { type ClientOptions, createClient, type JobPollerClient } from "./client.js";
export {
  ClientError,
  ClosedError,
  FinalEventUnavailableError,
  InvalidArgumentError,
  WaitTimeoutError,
} from "./errors.js";
export type { RedisLike } from "./redis.js";
export type { DeliveryInfo, JobEvent, SubscribeOptions, Subscription } from "./subscribe.js";
export type { TrackResult } from "./track.js";
export type { FinalJobEvent, WaitOptions } from "./wait.js";
