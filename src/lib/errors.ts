/**
 * Turns anything thrown into an Error, once, at catch points (a string, a rejected non-Error...).
 * A thrown non-Error is described by its type only: its contents could be a response body or
 * patient data, and the result is logged.
 */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === "string") return new Error(value);
  return new Error(`non-error thrown: ${typeof value}`);
}
