/**
 * A cap on the message bytes that all sessions together hold in memory,
 * so that many large messages at once cannot exhaust the process.
 */

/** The shared count of bytes in use, up to a capacity. */
export class ByteBudget {
  readonly capacity: number;
  #used = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** Bytes taken by reservations now. */
  get used(): number {
    return this.#used;
  }

  /** Opens a reservation that grows in steps and is released at once. */
  open(): Reservation {
    return new Reservation(this);
  }

  /** Takes `bytes` when that many are free, and reports whether it did. */
  take(bytes: number): boolean {
    if (this.#used + bytes > this.capacity) return false;
    this.#used += bytes;
    return true;
  }

  /** Returns bytes taken before. */
  give(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }
}

/** The bytes one message holds, from its first data byte to its reply. */
export class Reservation {
  #budget: ByteBudget;
  #bytes = 0;

  constructor(budget: ByteBudget) {
    this.#budget = budget;
  }

  /** Adds `bytes` to the reservation when the budget has them. */
  grow(bytes: number): boolean {
    if (!this.#budget.take(bytes)) return false;
    this.#bytes += bytes;
    return true;
  }

  /** Gives every byte back; later calls do nothing. */
  release(): void {
    this.#budget.give(this.#bytes);
    this.#bytes = 0;
  }
}
