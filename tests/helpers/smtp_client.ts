/**
 * A raw SMTP client for protocol tests: it sends exact bytes and parses
 * replies, and repairs nothing.
 */

/** One parsed reply. */
export interface ParsedReply {
  readonly code: number;
  /** The enhanced status code of the last line, when there is one. */
  readonly enhancedStatusCode: string | undefined;
  readonly lines: readonly string[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A client connection that reads replies line by line. */
export class RawClient {
  #conn: Deno.Conn;
  #buffered = "";
  #closed = false;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  static async connect(
    port: number,
    hostname = "127.0.0.1",
  ): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname, port }));
  }

  /** Connects and reads the greeting. */
  static async greeted(port: number): Promise<RawClient> {
    const client = await RawClient.connect(port);
    const greeting = await client.readReply();
    if (greeting.code !== 220) {
      throw new Error(
        `expected a 220 greeting, got ${greeting.lines.join(" | ")}`,
      );
    }
    return client;
  }

  /** Sends a string (as latin1, one byte a character) or bytes. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? latin1(data) : data;
    let offset = 0;
    while (offset < bytes.length) {
      offset += await this.#conn.write(bytes.subarray(offset));
    }
  }

  /** Sends one command with CRLF and reads its reply. */
  async command(line: string): Promise<ParsedReply> {
    await this.send(line + "\r\n");
    return await this.readReply();
  }

  /** Reads one reply, waiting at most `timeoutMs`. */
  async readReply(timeoutMs = 10_000): Promise<ParsedReply> {
    const lines: string[] = [];
    while (true) {
      const line = await this.#readLine(timeoutMs);
      if (line === null) {
        throw new Error(`connection closed after ${JSON.stringify(lines)}`);
      }
      const match = /^(\d{3})([ -])(.*)$/.exec(line);
      if (match === null) {
        throw new Error(`malformed reply line ${JSON.stringify(line)}`);
      }
      lines.push(line);
      if (match[2] === " ") {
        const enhanced = /^(\d\.\d{1,3}\.\d{1,3}) /.exec(match[3]!);
        return {
          code: Number(match[1]),
          enhancedStatusCode: enhanced?.[1],
          lines,
        };
      }
    }
  }

  /** Reads `count` replies and returns their codes. */
  async readCodes(count: number): Promise<number[]> {
    const codes: number[] = [];
    for (let index = 0; index < count; index++) {
      codes.push((await this.readReply()).code);
    }
    return codes;
  }

  /** Resolves true when the server closes the connection within the time. */
  async closedByServer(timeoutMs = 10_000): Promise<boolean> {
    try {
      return (await this.#readLine(timeoutMs)) === null;
    } catch {
      return false;
    }
  }

  async #readLine(timeoutMs: number): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const end = this.#buffered.indexOf("\r\n");
      if (end >= 0) {
        const line = this.#buffered.slice(0, end);
        this.#buffered = this.#buffered.slice(end + 2);
        return line;
      }
      const chunk = await this.#readChunk(deadline - Date.now());
      if (chunk === null) return null;
      this.#buffered += chunk;
    }
  }

  async #readChunk(timeoutMs: number): Promise<string | null> {
    if (timeoutMs <= 0) throw new Error("timed out waiting for a reply");
    const buffer = new Uint8Array(64 * 1024);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const read = this.#conn.read(buffer).catch(() => null);
    const result = await Promise.race([read, timeout]);
    clearTimeout(timer);
    if (result === "timeout") {
      this.close();
      await read;
      throw new Error("timed out waiting for a reply");
    }
    return result === null ? null : decoder.decode(buffer.subarray(0, result));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // The server closed it first.
    }
  }
}

/** Encodes a string one byte per character, for exact test bytes. */
export function latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let index = 0; index < text.length; index++) {
    bytes[index] = text.charCodeAt(index) & 0xff;
  }
  return bytes;
}

export { encoder };

/**
 * Matches the Return-Path: and Received: headers that the server prepends.
 * The Received: header ends with its RFC 5322 date in +0000, wherever it
 * was folded, so a message line that starts with whitespace is not taken
 * for part of it.
 */
export const TRACE_HEADERS =
  /^Return-Path: [^\r\n]*\r\nReceived: [\s\S]*?;\s+[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n/;
