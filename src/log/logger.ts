import { pino } from "pino";

const CENSOR = "[redacted]";

// Fields of the job body that may carry patient data. They belong in events (the partner's own
// data) but never in logs, wherever a log call nests a job.
const PATIENT_FIELDS = ["partnerSubjectId", "lastError", "errorDetail"] as const;

/** Paths pino replaces with "[redacted]" before a line is written. */
export const REDACT_PATHS: readonly string[] = [
  "apiKey",
  "*.apiKey",
  'headers["x-api-key"]',
  'headers["X-Api-Key"]',
  'req.headers["x-api-key"]',
  'req.headers["X-Api-Key"]',
  '*.headers["x-api-key"]',
  '*.headers["X-Api-Key"]',
  ...PATIENT_FIELDS.flatMap((f) => [f, `*.${f}`, `job.${f}`, `*.job.${f}`, `data.job.${f}`]),
];

// Errors nest causes; a cycle or a long chain must not make one log line unbounded.
const MAX_CAUSE_DEPTH = 5;
const MAX_AGGREGATED = 10;
const MAX_MESSAGE_CHARS = 4096;
const MAX_STACK_CHARS = 8192;

let secrets: string[] = [];

/**
 * Values that must never appear in a log line, such as the current API key. Error messages and
 * stacks can embed them (a library echoing a header, a URL with credentials), so they are
 * replaced wherever this module turns text into a log field. Call again after a key rotation.
 */
export function setSecretsForScrubbing(values: string[]): void {
  const forms = new Set<string>();
  for (const value of values) {
    if (value === "") continue;
    forms.add(value);
    // The form the value takes inside a JSON string (a key with a quote or a backslash).
    forms.add(JSON.stringify(value).slice(1, -1));
  }
  // Longest first, so a secret that contains another is replaced whole.
  secrets = [...forms].sort((a, b) => b.length - a.length);
}

function scrub(text: string): string {
  let out = text;
  for (const secret of secrets) {
    if (out.includes(secret)) out = out.split(secret).join(CENSOR);
  }
  return out;
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}...[truncated]` : text;
}

/**
 * Turns anything thrown into a log field. Only an allow-list of properties is copied: errors of
 * HTTP and Redis clients carry response bodies, request headers and command arguments, which
 * may hold the API key or patient data, and none of that is ever logged.
 */
export function serializeError(err: unknown): Record<string, unknown> {
  return serialize(err, 0);
}

function serialize(err: unknown, depth: number): Record<string, unknown> {
  if (typeof err !== "object" || err === null) {
    return { type: typeof err, message: clip(scrub(String(err)), MAX_MESSAGE_CHARS) };
  }
  const out: Record<string, unknown> = {};
  try {
    const source = err as Record<string, unknown>;
    out.type = (err as { constructor?: { name?: unknown } }).constructor?.name ?? "Object";
    const { name, message, stack, code, statusCode, status, errno, syscall, cause, errors } =
      source;
    if (typeof name === "string") out.name = name;
    if (typeof message === "string") out.message = clip(scrub(message), MAX_MESSAGE_CHARS);
    if (typeof stack === "string") out.stack = clip(scrub(stack), MAX_STACK_CHARS);
    if (typeof code === "string" || typeof code === "number") out.code = code;
    if (typeof statusCode === "number") out.statusCode = statusCode;
    if (typeof status === "number") out.status = status;
    if (typeof errno === "number" || typeof errno === "string") out.errno = errno;
    if (typeof syscall === "string") out.syscall = syscall;
    if (cause !== undefined && depth < MAX_CAUSE_DEPTH) out.cause = serialize(cause, depth + 1);
    if (Array.isArray(errors) && depth < MAX_CAUSE_DEPTH) {
      out.errors = errors.slice(0, MAX_AGGREGATED).map((e) => serialize(e, depth + 1));
    }
  } catch {
    // A throwing getter (a proxy, a closed handle) must not turn logging into a crash.
    out.serializeFailed = true;
  }
  return out;
}

export function createLogger(opts: {
  level: string;
  destination?: pino.DestinationStream;
  base?: Record<string, unknown>;
}): pino.Logger {
  const options: pino.LoggerOptions = {
    level: opts.level,
    redact: { paths: [...REDACT_PATHS], censor: CENSOR },
    serializers: { err: serializeError, error: serializeError },
    timestamp: pino.stdTimeFunctions.isoTime,
    hooks: {
      logMethod(args, method) {
        // The message and its format arguments are free text; an object argument is covered
        // by redact and the err serializer.
        const cleaned = args.map((a) => (typeof a === "string" ? scrub(a) : a));
        return method.apply(this, cleaned as Parameters<pino.LogFn>);
      },
    },
  };
  if (opts.base !== undefined) options.base = opts.base;
  return opts.destination === undefined ? pino(options) : pino(options, opts.destination);
}
