import assert from "node:assert/strict";
import { ByteBudget } from "../src/byte_budget.ts";
import {
  type ByteSource,
  LineReader,
  type MailData,
} from "../src/line_reader.ts";
import { latin1 } from "./helpers/smtp_client.ts";

/** A source that hands out the given chunks, reusing one buffer as TCP does. */
function chunkSource(chunks: Uint8Array[]): ByteSource {
  const shared = new Uint8Array(64 * 1024);
  let index = 0;
  return {
    read() {
      const chunk = chunks[index++];
      if (chunk === undefined) return Promise.resolve(null);
      shared.set(chunk);
      return Promise.resolve(shared.subarray(0, chunk.length));
    },
  };
}

function splitEvery(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let start = 0; start < bytes.length; start += size) {
    chunks.push(bytes.slice(start, start + size));
  }
  return chunks;
}

function text(data: MailData | null): string {
  if (data === null) return "<end of stream>";
  if (data.kind !== "data") return `<${data.kind}>`;
  return String.fromCharCode(...data.bytes);
}

async function readData(
  input: string,
  maxBytes = 1_000_000,
  chunkSize?: number,
) {
  const bytes = latin1(input);
  const chunks = chunkSize === undefined
    ? [bytes]
    : splitEvery(bytes, chunkSize);
  const reader = new LineReader(chunkSource(chunks));
  return await reader.readData({ maxBytes });
}

const DATA_CASES: [string, string, string][] = [
  ["plain lines", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"],
  ["empty message", ".\r\n", ""],
  [
    "dot-stuffed lines",
    "..key..value\r\n..\r\n.single\r\nend\r\n.\r\n",
    ".key..value\r\n.\r\nsingle\r\nend\r\n",
  ],
  ["dot line with trailing space", ". \r\nx\r\n.\r\n", " \r\nx\r\n"],
  ["LF dot LF does not end", "a\n.\nb\r\n.\r\n", "<bareLineEnding>"],
  ["CR dot CR does not end", "a\r.\rb\r\n.\r\n", "<bareLineEnding>"],
  [
    "LF dot CRLF does not end",
    "first\n.\r\nMAIL FROM:<x@example.com>\r\n.\r\n",
    "<bareLineEnding>",
  ],
  ["CRLF dot LF does not end", "a\r\n.\nb\r\n.\r\n", "<bareLineEnding>"],
  ["dot CR CR LF does not end", "a\r\n.\r\r\nb\r\n.\r\n", "<bareLineEnding>"],
  ["bare CR in a line", "be\rfore\r\n.\r\n", "<bareLineEnding>"],
  ["bare LF in a line", "be\nfore\r\n.\r\n", "<bareLineEnding>"],
  ["CR CR LF", "a\r\r\n.\r\n", "<bareLineEnding>"],
  ["never ended", "a\r\nb\r\n", "<end of stream>"],
  [
    "line without header section",
    "  indented\r\nsecond\r\n.\r\n",
    "  indented\r\nsecond\r\n",
  ],
];

Deno.test("readData parses end of data and dot-stuffing", async (t) => {
  for (const [name, input, expected] of DATA_CASES) {
    await t.step(name, async () => {
      assert.equal(text(await readData(input)), expected);
    });
  }
});

Deno.test("readData gives the same result at every chunk split", async (t) => {
  for (const [name, input, expected] of DATA_CASES) {
    await t.step(name, async () => {
      for (const size of [1, 2, 3, 5, 7]) {
        assert.equal(
          text(await readData(input, 1_000_000, size)),
          expected,
          `chunks of ${size}`,
        );
      }
    });
  }
});

Deno.test("readData line length limit counts octets with CRLF", async () => {
  const line1000 = "x".repeat(998) + "\r\n";
  const line1001 = "x".repeat(999) + "\r\n";
  assert.equal(text(await readData(line1000 + ".\r\n")), line1000);
  assert.equal(text(await readData(line1001 + ".\r\n")), "<lineTooLong>");
  // The stuffing dot counts, since lines are measured as received.
  const stuffed1000 = "." + "x".repeat(997) + "\r\n";
  const stuffed1001 = "." + "x".repeat(998) + "\r\n";
  assert.equal(
    text(await readData(stuffed1000 + ".\r\n")),
    stuffed1000.slice(1),
  );
  assert.equal(text(await readData(stuffed1001 + ".\r\n")), "<lineTooLong>");
});

Deno.test("readData size limit applies after unstuffing", async () => {
  assert.equal(text(await readData("abc\r\n.\r\n", 5)), "abc\r\n");
  assert.equal(text(await readData("..bc\r\n.\r\n", 5)), ".bc\r\n");
  assert.equal(text(await readData("abcd\r\n.\r\n", 5)), "<tooBig>");
});

Deno.test("readData reports size before bare LF before long line", async () => {
  const long = "y".repeat(1200) + "\r\n";
  assert.equal(
    text(await readData("a\nb\r\n" + long + ".\r\n", 100)),
    "<tooBig>",
  );
  assert.equal(
    text(await readData("a\nb\r\n" + long + ".\r\n")),
    "<bareLineEnding>",
  );
});

Deno.test("readData leaves pipelined commands after the end", async () => {
  const reader = new LineReader(chunkSource([latin1("hi\r\n.\r\nNOOP\r\n")]));
  assert.equal(text(await reader.readData({ maxBytes: 100 })), "hi\r\n");
  assert.equal(reader.hasBufferedLine, true);
  const line = await reader.readCommandLine();
  assert.equal(line?.kind, "line");
  assert.equal(
    line?.kind === "line" && String.fromCharCode(...line.bytes),
    "NOOP",
  );
});

Deno.test("readData keeps memory to the limit on a large message", async () => {
  const chunk = latin1(("z".repeat(998) + "\r\n").repeat(64));
  let remaining = 800; // 800 chunks of 64,000 octets: 51 MB in all.
  const source: ByteSource = {
    read() {
      if (remaining-- > 0) return Promise.resolve(chunk);
      if (remaining === -1) return Promise.resolve(latin1(".\r\n"));
      return Promise.resolve(null);
    },
  };
  const before = Deno.memoryUsage().rss;
  const data = await new LineReader(source).readData({ maxBytes: 1024 * 1024 });
  const grown = Deno.memoryUsage().rss - before;
  assert.equal(data?.kind, "tooBig");
  assert.ok(grown < 20 * 1024 * 1024, `RSS grew by ${grown} bytes`);
});

async function readCommand(input: string, chunkSize?: number) {
  const bytes = latin1(input);
  const chunks = chunkSize === undefined
    ? [bytes]
    : splitEvery(bytes, chunkSize);
  const line = await new LineReader(chunkSource(chunks)).readCommandLine();
  if (line === null) return "<end of stream>";
  if (line.kind !== "line") return `<${line.kind}>`;
  return String.fromCharCode(...line.bytes);
}

const COMMAND_CASES: [string, string, string][] = [
  ["a command", "NOOP\r\n", "NOOP"],
  ["an empty line", "\r\n", ""],
  ["a bare LF", "NOOP\nNOOP\r\n", "<bareLineEnding>"],
  ["a bare CR", "NO\rOP\r\n", "<bareLineEnding>"],
  ["510 octets and CRLF", "N".repeat(510) + "\r\n", "N".repeat(510)],
  ["511 octets and CRLF", "N".repeat(511) + "\r\n", "<tooLong>"],
  ["no CRLF before the end", "NOOP", "<end of stream>"],
];

Deno.test("readCommandLine splits lines at CRLF only", async (t) => {
  for (const [name, input, expected] of COMMAND_CASES) {
    await t.step(name, async () => {
      assert.equal(await readCommand(input), expected);
      assert.equal(await readCommand(input, 1), expected, "one byte a chunk");
    });
  }
});

Deno.test("readCommandLine goes on at the next CRLF after a long line", async () => {
  const input = "X".repeat(2_000_000) + "\r\nNOOP\r\n";
  const reader = new LineReader(chunkSource(splitEvery(latin1(input), 60_000)));
  assert.equal((await reader.readCommandLine())?.kind, "tooLong");
  const next = await reader.readCommandLine();
  assert.equal(
    next?.kind === "line" && String.fromCharCode(...next.bytes),
    "NOOP",
  );
});

Deno.test("readData drops data beyond the shared budget", async () => {
  const budget = new ByteBudget(40 * 1024);
  const holder = budget.open();
  assert.equal(holder.grow(30 * 1024), true);

  const line = "m".repeat(98) + "\r\n";
  const message = latin1(line.repeat(200) + ".\r\n");
  const reservation = budget.open();
  const reader = new LineReader(chunkSource(splitEvery(message, 4096)));
  const data = await reader.readData({ maxBytes: 1_000_000, reservation });
  assert.equal(data?.kind, "insufficientStorage");
  assert.equal(budget.used, 30 * 1024, "dropped data gives its bytes back");

  holder.release();
  const retry = new LineReader(chunkSource(splitEvery(message, 4096)));
  const stored = await retry.readData({ maxBytes: 1_000_000, reservation });
  assert.equal(stored?.kind, "data");
  assert.ok(budget.used >= 20_000, "the kept message is counted");
  reservation.release();
  assert.equal(budget.used, 0);
});

Deno.test("readData reports size before the budget", async () => {
  const budget = new ByteBudget(16 * 1024);
  const message = latin1(("q".repeat(998) + "\r\n").repeat(40) + ".\r\n");
  const reader = new LineReader(chunkSource([message]));
  const data = await reader.readData({
    maxBytes: 20_000,
    reservation: budget.open(),
  });
  assert.equal(data?.kind, "tooBig");
});

Deno.test("hasBufferedLine counts only CRLF-ended lines", async (t) => {
  const cases: [string, boolean][] = [
    ["NOOP\r\nNO", false],
    ["NOOP\r\n\n", false],
    ["NOOP\r\nX\rY\n", false],
    ["NOOP\r\nNOOP\r\n", true],
    ["NOOP\r\n\r\n", true],
    ["NOOP\r\nA\nB\r\n", true],
  ];
  for (const [input, expected] of cases) {
    await t.step(JSON.stringify(input), async () => {
      const reader = new LineReader(chunkSource([latin1(input)]));
      await reader.readCommandLine();
      assert.equal(reader.hasBufferedLine, expected);
    });
  }
});
