/**
 * Errors of the client library, each with a stable `code` a caller can switch on (the message
 * may change). No message carries a job body or anything read from Redis but ids.
 */
export class ClientError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ClientError";
  }
}

/** `waitFor` saw no final event for the job within `timeoutMs`. */
export class WaitTimeoutError extends ClientError {
  constructor(
    readonly jobId: string,
    readonly timeoutMs: number,
  ) {
    super("WAIT_TIMEOUT", `job ${jobId} did not finish within ${timeoutMs} ms`);
    this.name = "WaitTimeoutError";
  }
}

/**
 * The job finished, but its final event is no longer in the events stream (trimmed by MAXLEN,
 * or written by a daemon older than the `finals` record). Its stored status is attached.
 */
export class FinalEventUnavailableError extends ClientError {
  constructor(
    readonly jobId: string,
    readonly status: string | null,
  ) {
    super(
      "FINAL_EVENT_UNAVAILABLE",
      `job ${jobId} finished (status ${status ?? "unknown"}) but its final event is no longer in the events stream`,
    );
    this.name = "FinalEventUnavailableError";
  }
}

/** An argument the library cannot work with (not a job id, a bad option). */
export class InvalidArgumentError extends ClientError {
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
    this.name = "InvalidArgumentError";
  }
}

/** The client (or the subscription) was closed while the call was under way. */
export class ClosedError extends ClientError {
  constructor(what = "client") {
    super("CLOSED", `the ${what} was closed`);
    this.name = "ClosedError";
  }
}

/** What an aborted call rejects with: the signal's reason, as fetch and timers do. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}
