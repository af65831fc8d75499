/** Turns anything thrown into an Error, once, at catch points (a string, a rejected non-Error...). */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === "string") return new Error(value);
  return new Error(`non-error thrown: ${typeof value}`);
}
