import { sleep } from "../lib/signal.js";
import type { GateInput } from "./gate.js";
import type { BudgetView } from "./ports.js";

/**
 * The request budget as an input of the Gate: closed while a shared pause (a 429 seen by any
 * replica) runs, so nothing is claimed and jobs claimed but not started go back at once.
 */
export class BudgetPauseInput implements GateInput {
  readonly name = "budget";

  constructor(
    private readonly budget: BudgetView,
    private readonly clock: () => number,
    notifyClosed: () => void,
  ) {
    budget.onPause(notifyClosed);
  }

  closed(now: number): boolean {
    return this.budget.paused(now);
  }

  async recover(signal: AbortSignal): Promise<void> {
    await sleep(Math.max(1, this.budget.pausedUntil - this.clock()), signal);
  }
}
