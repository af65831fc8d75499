/**
 * A wake-up that a sleeping loop can wait on and any event can fire. Firing before anyone waits
 * is remembered, so a wake-up between "nothing to do" and "sleep" is never lost.
 */
export class Wakeup {
  private fired = false;
  private waiter: (() => void) | null = null;

  fire(): void {
    this.fired = true;
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Resolves after `ms` or on `fire()`, whichever comes first. */
  wait(ms: number): Promise<void> {
    if (this.fired) {
      this.fired = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      const self = this;
      function done(): void {
        clearTimeout(timer);
        if (self.waiter === done) self.waiter = null;
        self.fired = false;
        resolve();
      }
      this.waiter = done;
    });
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(finish, ms);
    function finish(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", finish);
      resolve();
    }
    signal?.addEventListener("abort", finish, { once: true });
  });
}
