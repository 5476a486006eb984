/**
 * A bounded reader over a connection's bytes. It yields command lines and
 * mail data, and never keeps more than one command line or the message
 * size limit, however much a client sends.
 */

/**
 * The source of the reader's bytes. A chunk is valid only until the next
 * `read()`, so the reader copies what it keeps.
 */
export interface ByteSource {
  /** The next chunk, or null at the end of the stream. */
  read(): Promise<Uint8Array | null>;
}

import type { Reservation } from "./byte_budget.ts";

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/** RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF. */
export const MAX_COMMAND_LINE_OCTETS = 512;

/** RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF. */
export const MAX_DATA_LINE_OCTETS = 1000;

/** A command line without its CRLF, or the reason it cannot be used. */
export type CommandLine =
  | { readonly kind: "line"; readonly bytes: Uint8Array }
  | { readonly kind: "tooLong" }
  | { readonly kind: "bareLineEnding" };

/** The mail data after dot-unstuffing, or the first reason it is rejected. */
export type MailData =
  | { readonly kind: "data"; readonly bytes: Uint8Array }
  | { readonly kind: "tooBig" }
  | { readonly kind: "bareLineEnding" }
  | { readonly kind: "lineTooLong" }
  | { readonly kind: "insufficientStorage" };

export interface ReadDataOptions {
  /** Largest message kept, in octets after dot-unstuffing. */
  readonly maxBytes: number;
  /**
   * The budget share that counts the buffer's memory. Data that it cannot
   * cover is read and dropped.
   */
  readonly reservation?: Reservation;
}

/** Reads CRLF-ended lines; only CRLF ends a line, and a lone CR or LF is flagged. */
export class LineReader {
  #source: ByteSource;
  #chunk: Uint8Array = new Uint8Array(0);
  #position = 0;
  #ended = false;

  constructor(source: ByteSource) {
    this.#source = source;
  }

  /**
   * Reports whether a whole line, ended by CRLF, is waiting to be read. A
   * part of a line does not count: the client may wait for replies before
   * it sends the rest.
   */
  get hasBufferedLine(): boolean {
    const chunk = this.#chunk;
    let index = chunk.indexOf(LF, this.#position + 1);
    while (index >= 0) {
      if (chunk[index - 1] === CR) return true;
      index = chunk.indexOf(LF, index + 1);
    }
    return false;
  }

  /** Drops buffered bytes, as after STARTTLS, and reads from a new source. */
  replaceSource(source: ByteSource): void {
    this.#source = source;
    this.#chunk = new Uint8Array(0);
    this.#position = 0;
  }

  /** Ensures unread bytes are buffered; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#position < this.#chunk.length) return true;
    if (this.#ended) return false;
    const chunk = await this.#source.read();
    if (chunk === null) {
      this.#ended = true;
      return false;
    }
    this.#chunk = chunk;
    this.#position = 0;
    return true;
  }

  /**
   * Reads the next command line. An over-long line is read to its CRLF and
   * dropped. Returns null when the stream ends before a CRLF.
   */
  async readCommandLine(): Promise<CommandLine | null> {
    const line = new Uint8Array(MAX_COMMAND_LINE_OCTETS);
    let length = 0;
    let tooLong = false;
    let bareLineEnding = false;
    let pendingCr = false;

    while (await this.#fill()) {
      const chunk = this.#chunk;
      while (this.#position < chunk.length) {
        const byte = chunk[this.#position++]!;
        if (pendingCr) {
          pendingCr = false;
          if (byte === LF) {
            if (tooLong) return { kind: "tooLong" };
            if (bareLineEnding) return { kind: "bareLineEnding" };
            return { kind: "line", bytes: line.slice(0, length) };
          }
          bareLineEnding = true;
        }
        if (byte === CR) {
          pendingCr = true;
          continue;
        }
        if (byte === LF) bareLineEnding = true;
        // The CRLF takes two of the 512 octets.
        if (length < MAX_COMMAND_LINE_OCTETS - 2) {
          line[length++] = byte;
        } else {
          tooLong = true;
        }
      }
    }
    return null;
  }

  /**
   * Reads mail data up to the line that is a single dot, removing the first
   * dot of lines that start with one (RFC 5321 4.5.2). Only CRLF . CRLF ends
   * the data. Data beyond `maxBytes` is read and dropped. Returns null when
   * the stream ends first.
   */
  async readData(options: ReadDataOptions): Promise<MailData | null> {
    const output = new GrowableBuffer(options.maxBytes, options.reservation);
    let atLineStart = true;
    let lineIsDot = false;
    let pendingCr = false;
    let lineOctets = 0;
    let bareLineEnding = false;
    let lineTooLong = false;

    while (await this.#fill()) {
      const chunk = this.#chunk;
      let runStart = this.#position;
      while (this.#position < chunk.length) {
        const index = this.#position++;
        const byte = chunk[index]!;
        lineOctets++;
        if (pendingCr) {
          pendingCr = false;
          if (byte === LF) {
            if (lineOctets > MAX_DATA_LINE_OCTETS) lineTooLong = true;
            if (lineIsDot) {
              return finishData(output, bareLineEnding, lineTooLong);
            }
            output.append(chunk, runStart, index + 1);
            runStart = index + 1;
            atLineStart = true;
            lineOctets = 0;
            continue;
          }
          // A CR not followed by LF: the line can no longer be the end.
          bareLineEnding = true;
          lineIsDot = false;
        }
        if (atLineStart) {
          atLineStart = false;
          if (byte === DOT) {
            // Dot-unstuffing: this dot is dropped, and the line may be the end.
            lineIsDot = true;
            runStart = index + 1;
            continue;
          }
        }
        if (byte === CR) {
          pendingCr = true;
          continue;
        }
        lineIsDot = false;
        if (byte === LF) bareLineEnding = true;
      }
      // A CR at the end of a chunk may start the CRLF that ends the data, so
      // it stays out of the output until the next byte decides.
      const end = pendingCr ? chunk.length - 1 : chunk.length;
      output.append(chunk, runStart, end);
      if (pendingCr) output.holdCarriageReturn();
    }
    return null;
  }
}

function finishData(
  output: GrowableBuffer,
  bareLineEnding: boolean,
  lineTooLong: boolean,
): MailData {
  // One reply at the end of data, the first that applies: size, then a
  // bare CR or LF, then an over-long line, then the shared memory budget.
  if (output.overflowed) return { kind: "tooBig" };
  if (bareLineEnding) return { kind: "bareLineEnding" };
  if (lineTooLong) return { kind: "lineTooLong" };
  if (output.outOfBudget) return { kind: "insufficientStorage" };
  return { kind: "data", bytes: output.bytes() };
}

/** The first allocation of a message buffer, in bytes. */
const INITIAL_CAPACITY = 16 * 1024;

/**
 * Collects message bytes up to a limit and counts, without keeping, any
 * beyond it or beyond what the reservation can cover.
 */
class GrowableBuffer {
  #buffer = new Uint8Array(0);
  #length = 0;
  #limit: number;
  #reservation: Reservation | undefined;
  #heldCr = false;
  /** More than the limit arrived. */
  overflowed = false;
  /** The reservation could not grow, so the data is being dropped. */
  outOfBudget = false;

  constructor(limit: number, reservation: Reservation | undefined) {
    this.#limit = limit;
    this.#reservation = reservation;
  }

  /** Marks a CR that ended a chunk; it is written before the next bytes. */
  holdCarriageReturn(): void {
    this.#heldCr = true;
  }

  append(source: Uint8Array, start: number, end: number): void {
    if (this.#heldCr) {
      this.#heldCr = false;
      this.#push(new Uint8Array([CR]), 0, 1);
    }
    this.#push(source, start, end);
  }

  #push(source: Uint8Array, start: number, end: number): void {
    const count = end - start;
    if (count <= 0 || this.overflowed) return;
    if (this.#length + count > this.#limit) {
      this.overflowed = true;
      return;
    }
    const needed = this.#length + count;
    if (needed > this.#buffer.length && !this.outOfBudget) this.#grow(needed);
    if (!this.outOfBudget) {
      this.#buffer.set(source.subarray(start, end), this.#length);
    }
    // The length still counts dropped bytes, so the size limit holds.
    this.#length = needed;
  }

  #grow(needed: number): void {
    let size = Math.max(this.#buffer.length * 2, INITIAL_CAPACITY);
    while (size < needed) size *= 2;
    size = Math.min(size, this.#limit);
    if (this.#reservation?.grow(size - this.#buffer.length) === false) {
      // The rest is dropped, so what was kept can go back to the budget.
      this.outOfBudget = true;
      this.#buffer = new Uint8Array(0);
      this.#reservation.release();
      return;
    }
    const grown = new Uint8Array(size);
    grown.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = grown;
  }

  bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }
}
