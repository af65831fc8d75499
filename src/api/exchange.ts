import type { IncomingHttpHeaders } from "node:http";
import type { Dispatcher } from "undici";

/** One answer of the API, with its body when it was worth keeping. */
export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  /** Whether `keep` wanted the body (decided once, from the status and headers). */
  kept: boolean;
  /** The whole body when it was kept and fit its cap; otherwise null. */
  body: Buffer | null;
  /** The body passed its cap: reading stopped there and the connection was dropped. */
  overCap: boolean;
}

export interface ExchangeLimits {
  /** Whether a body is worth reading, from the status and headers. */
  keep: (status: number, headers: IncomingHttpHeaders) => boolean;
  /** Cap on a kept body. */
  maxBodyBytes: number;
  /** Bodies not kept are read and dropped up to this size to keep the connection, then cut off. */
  drainLimitBytes: number;
}

/**
 * One request over undici's dispatch API: the body is collected straight from the parser's
 * chunks, with no Readable stream, no per-request AbortController and no timer. The owner
 * enforces the deadline by calling `abort` (see JobsClient's sweep), which settles the
 * promise at once: a request under way loses its connection, one still waiting for a
 * connection is failed when undici gets to it.
 *
 * Settles exactly once; whatever undici reports after that is ignored.
 */
export class Exchange implements Dispatcher.DispatchHandler {
  readonly promise: Promise<Answer>;
  /** performance.now() past which the owner aborts the exchange. */
  readonly deadline: number;
  #resolve!: (answer: Answer) => void;
  #reject!: (err: Error) => void;
  #settled = false;
  #controller: Dispatcher.DispatchController | null = null;
  #abortReason: Error | null = null;
  readonly #limits: ExchangeLimits;
  readonly #onSettled: (exchange: Exchange) => void;
  #status = 0;
  #headers: IncomingHttpHeaders = {};
  #keep = false;
  #chunks: Buffer[] = [];
  #size = 0;

  constructor(limits: ExchangeLimits, deadline: number, onSettled: (exchange: Exchange) => void) {
    this.#limits = limits;
    this.deadline = deadline;
    this.#onSettled = onSettled;
    this.promise = new Promise<Answer>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  get settled(): boolean {
    return this.#settled;
  }

  /**
   * Ends the exchange with `reason` (see #fail) and drops its connection, now or when undici
   * gets to the request.
   */
  abort(reason: Error): void {
    if (this.#settled) return;
    this.#fail(reason);
    if (this.#controller === null) this.#abortReason = reason;
    else if (!this.#controller.aborted) this.#controller.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    // Aborted while it waited for a connection. Throwing here makes undici fail just this
    // request and keep the socket; controller.abort() would destroy a healthy connection.
    if (this.#abortReason !== null) throw this.#abortReason;
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    status: number,
    headers: IncomingHttpHeaders,
  ): void {
    // 1xx answers are informational: the real one follows on the same request.
    if (status < 200 || this.#settled) return;
    this.#status = status;
    this.#headers = headers;
    this.#keep = this.#limits.keep(status, headers);
    const cap = this.#keep ? this.#limits.maxBodyBytes : this.#limits.drainLimitBytes;
    if (Number(headers["content-length"]) > cap) this.#overCap(controller);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    this.#size += chunk.length;
    if (this.#keep) {
      if (this.#size > this.#limits.maxBodyBytes) this.#overCap(controller);
      else this.#chunks.push(chunk);
    } else if (this.#size > this.#limits.drainLimitBytes) {
      this.#overCap(controller);
    }
  }

  onResponseEnd(): void {
    if (this.#settled) return;
    const chunks = this.#chunks;
    let body: Buffer | null = null;
    if (this.#keep) {
      body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.#size);
    }
    this.#settle();
    this.#resolve(this.#answer(body, false));
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.#fail(err);
  }

  #overCap(controller: Dispatcher.DispatchController): void {
    this.#settle();
    this.#resolve(this.#answer(null, true));
    // Reading stops here; the socket goes with the request, as nothing past the cap is wanted.
    controller.abort(new Error("response body over its cap"));
  }

  /**
   * A failure (network error, deadline, abort) rejects, unless the status and headers were in
   * and only a body nobody reads was left: the answer is then what they said. A 404, 401 or 429
   * whose body stalls is still a 404, 401 or 429 (with its Retry-After).
   */
  #fail(err: Error): void {
    if (this.#settled) return;
    this.#settle();
    if (this.#status >= 200 && !this.#keep) {
      this.#resolve(this.#answer(null, false));
    } else {
      this.#reject(err);
    }
  }

  #answer(body: Buffer | null, overCap: boolean): Answer {
    return { status: this.#status, headers: this.#headers, kept: this.#keep, body, overCap };
  }

  #settle(): void {
    this.#settled = true;
    this.#chunks = [];
    this.#onSettled(this);
  }
}
