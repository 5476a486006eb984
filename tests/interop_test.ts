/**
 * Interoperability tests: the clients people send mail with (Python's
 * smtplib, nodemailer and swaks) deliver real messages to an in-process
 * server, and the stored rows are read back with SQL. python3 and swaks run
 * as subprocesses. When one of them is missing, its tests fail and name it.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { format } from "node:util";
import nodemailer from "nodemailer";
import PostalMime from "postal-mime";
import { type TestServer, withServer } from "./helpers/server.ts";
import { TRACE_HEADERS } from "./helpers/smtp_client.ts";

const CLIENT_HELO = "client.example";

// ---------------------------------------------------------------------------
// Server and stored rows

/** A `messages` row with its recipients, as the tests compare it. */
interface StoredMessage {
  readonly id: number;
  readonly sender: string;
  readonly recipients: string[];
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
  readonly raw: Uint8Array;
  readonly helo: string;
  readonly clientAddress: string;
  readonly size: number;
}

/** Reads every stored message, oldest first. */
async function storedMessages(server: TestServer): Promise<StoredMessage[]> {
  const rows = await server.database.query(
    "SELECT id, sender, subject, date, body, raw, helo, client_address, size" +
      " FROM messages ORDER BY id",
  );
  const messages: StoredMessage[] = [];
  for (const row of rows) {
    const recipients = await server.database.query(
      "SELECT address FROM message_recipients WHERE message_id = ?" +
        " ORDER BY address",
      [row.id],
    );
    messages.push({
      id: Number(row.id),
      sender: row.sender as string,
      recipients: recipients.map((recipient) => recipient.address as string),
      subject: row.subject as string,
      date: row.date as Date | null,
      body: row.body as string,
      raw: new Uint8Array(row.raw as Buffer),
      helo: row.helo as string,
      clientAddress: row.client_address as string,
      size: Number(row.size),
    });
  }
  return messages;
}

/** Reads the one stored message, failing when there is not exactly one. */
async function onlyStoredMessage(server: TestServer): Promise<StoredMessage> {
  const messages = await storedMessages(server);
  assert.equal(messages.length, 1, "exactly one message is stored");
  return messages[0]!;
}

/** Decodes bytes one character per byte, so any byte sequence survives. */
function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("latin1");
}

/**
 * Checks that raw starts with the two trace headers for this sender and the
 * client's HELO name, and returns the bytes after them: what the client
 * sent, after dot-unstuffing.
 */
function clientBytes(message: StoredMessage, sender: string): Uint8Array {
  const text = latin1(message.raw);
  const start = `Return-Path: <${sender}>\r\n` +
    `Received: from ${CLIENT_HELO} ([127.0.0.1])`;
  assert.ok(
    text.startsWith(start),
    `raw starts with ${JSON.stringify(start)}: ` +
      JSON.stringify(text.slice(0, 200)),
  );
  const trace = TRACE_HEADERS.exec(text);
  assert.ok(trace, "raw has a complete Received: header");
  return message.raw.subarray(trace[0].length);
}

/** Returns the unfolded value of the first header field `name`, or undefined. */
function headerValue(message: Uint8Array, name: string): string | undefined {
  const text = latin1(message);
  const headerEnd = text.indexOf("\r\n\r\n");
  const header = text.slice(0, headerEnd < 0 ? text.length : headerEnd + 2);
  const pattern = new RegExp(
    `^${name}:[ \\t]*((?:[^\\r\\n]*\\r\\n[ \\t])*[^\\r\\n]*)\\r\\n`,
    "im",
  );
  const match = pattern.exec(header);
  return match?.[1]?.replace(/\r\n/g, "");
}

/** Asserts the columns every stored message has from these tests. */
function assertSessionColumns(message: StoredMessage): void {
  assert.equal(message.helo, CLIENT_HELO);
  assert.equal(message.clientAddress, "127.0.0.1");
  assert.equal(message.size, message.raw.length);
}

/**
 * Asserts that the date column is the message's Date header in UTC, and
 * returns the header value.
 */
function assertDateColumn(message: StoredMessage, sent: Uint8Array): string {
  const header = headerValue(sent, "Date");
  assert.ok(header !== undefined, "the client sent a Date header");
  const expected = new Date(Date.parse(header));
  assert.ok(!Number.isNaN(expected.getTime()), `Date header ${header} parses`);
  assert.ok(message.date !== null, "date column is set");
  assert.equal(message.date.toISOString(), expected.toISOString());
  return header;
}

function countMatches(text: string, search: string): number {
  return text.split(search).length - 1;
}

// ---------------------------------------------------------------------------
// Recording what goes over the wire

/** One read from one side of a recorded session. */
interface WireEvent {
  readonly from: "client" | "server";
  readonly text: string;
}

/**
 * Delay before the recorder forwards each chunk of replies. A pipelining
 * client sends its whole group of commands within it, even with one write
 * a command as swaks does, so the groups do not depend on how fast the
 * server replies.
 */
const REPLY_DELAY_MS = 50;

/**
 * A proxy on 127.0.0.1 that forwards each connection to the server and
 * records the bytes of each side in order: client bytes when they arrive,
 * server bytes when they are forwarded. A test can then tell whether a
 * client waited for each reply or pipelined its commands.
 */
class WireRecorder {
  readonly port: number;
  readonly events: WireEvent[] = [];
  readonly #targetPort: number;
  readonly #listener: Deno.Listener;
  readonly #sessions: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(targetPort: number) {
    this.#targetPort = targetPort;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  /**
   * Groups the client's command lines by the server replies between them,
   * up to and including the group that has DATA. A client that waits for
   * each reply sends one line a group, and a pipelining client several.
   */
  commandGroups(): string[][] {
    const groups: string[][] = [];
    let pending = "";
    const end: WireEvent = { from: "server", text: "" };
    for (const event of [...this.events, end]) {
      if (event.from === "client") {
        pending += event.text;
        continue;
      }
      if (pending === "") continue;
      const lines = pending.split("\r\n").filter((line) => line !== "");
      groups.push(lines);
      pending = "";
      if (lines.some((line) => line.toUpperCase() === "DATA")) break;
    }
    return groups;
  }

  /**
   * Returns the first message's data as the client sent it: its bytes after
   * the 354 reply up to the line with the single dot, dot-unstuffed.
   */
  messageData(): Uint8Array {
    let text = "";
    let started = false;
    for (const event of this.events) {
      if (event.from === "server") {
        started ||= /(?:^|\n)354 /.test(event.text);
      } else if (started) {
        text += event.text;
      }
    }
    const end = text.indexOf("\r\n.\r\n");
    assert.ok(started, "the server sent 354");
    assert.ok(end >= 0, "the client ended the message data");
    const data = text.slice(0, end + 2).replace(/(^|\r\n)\./g, "$1");
    return new Uint8Array(Buffer.from(data, "latin1"));
  }

  async close(): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    await Promise.all(this.#sessions);
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        this.#sessions.push(this.#forward(client));
      }
    } catch {
      // close() closed the listener.
    }
  }

  async #forward(client: Deno.Conn): Promise<void> {
    const server = await Deno.connect({
      hostname: "127.0.0.1",
      port: this.#targetPort,
    });
    await Promise.all([
      this.#pump(client, server, "client"),
      this.#pump(server, client, "server"),
    ]);
  }

  async #pump(
    from: Deno.Conn,
    to: Deno.Conn,
    side: WireEvent["from"],
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const count = await from.read(buffer);
        if (count === null) break;
        const chunk = buffer.slice(0, count);
        if (side === "server") {
          await new Promise((resolve) => setTimeout(resolve, REPLY_DELAY_MS));
        }
        this.events.push({ from: side, text: latin1(chunk) });
        for (let offset = 0; offset < chunk.length;) {
          offset += await to.write(chunk.subarray(offset));
        }
      }
    } catch {
      // The other side closed both connections first.
    }
    closeQuietly(from);
    closeQuietly(to);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Returns the verb of each command line, upper-cased. */
function verbs(groups: string[][]): string[][] {
  return groups.map((group) =>
    group.map((line) => line.split(/[ :]/)[0]!.toUpperCase())
  );
}

// ---------------------------------------------------------------------------
// Running python3 and swaks

/** Output of a finished subprocess. */
interface ToolOutput {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command-line tool to completion. A tool that is not installed fails
 * the test with its name, because skipping would count it as passed.
 */
async function runTool(
  tool: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
): Promise<ToolOutput> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(tool, {
      args,
      env: options.env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        `${tool} is missing: it was not found on PATH, and these ` +
          `interoperability tests need it. .ci/run installs it ` +
          `(apt-get install ${tool}).`,
      );
    }
    throw error;
  }

  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(options.stdin ?? ""));
  await writer.close();
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * The helpers every smtplib script runs with: `port` from the command line,
 * `inputs` from the JSON on stdin, `connect()` for a client that records the
 * bytes it passed to DATA and the reply, and `report()` to print JSON.
 */
const SMTPLIB_PRELUDE = `
import base64, json, smtplib, sys, textwrap
from email.message import EmailMessage
from email.utils import make_msgid

port = int(sys.argv[1])
inputs = json.loads(sys.stdin.buffer.read())

class RecordingSMTP(smtplib.SMTP):
    message_bytes = None
    data_reply = None

    def data(self, msg):
        self.message_bytes = msg
        code, text = super().data(msg)
        self.data_reply = [code, text.decode("ascii")]
        return code, text

def connect():
    return RecordingSMTP(
        "127.0.0.1", port, local_hostname="${CLIENT_HELO}", timeout=30)

def b64(data):
    return base64.b64encode(data).decode("ascii")

def report(**fields):
    json.dump(fields, sys.stdout)

exec(textwrap.dedent(sys.argv[2]))
`;

/**
 * Runs a Python script that uses smtplib against `port`, with `inputs` as
 * its input, and returns what the script reported.
 */
async function runSmtplib(
  port: number,
  script: string,
  inputs: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  const output = await runTool(
    "python3",
    ["-c", SMTPLIB_PRELUDE, String(port), script],
    { stdin: JSON.stringify(inputs) },
  );
  assert.equal(
    output.code,
    0,
    `python3 exited with ${output.code}: ${output.stderr}`,
  );
  assert.equal(output.stderr, "", "python3 printed no warning");
  return JSON.parse(output.stdout);
}

function fromBase64(value: unknown): Uint8Array {
  assert.equal(typeof value, "string");
  return new Uint8Array(Buffer.from(value as string, "base64"));
}

/**
 * Runs swaks against `port` with the client's HELO name and `args`, and
 * checks that it succeeded without an error or warning line (`***` or
 * `<**` in its transcript). `timeZone` is a POSIX TZ value for the Date
 * header swaks writes in local time.
 */
async function runSwaks(
  port: number,
  args: string[],
  timeZone = "UTC0",
): Promise<ToolOutput> {
  const output = await runTool("swaks", [
    "--server",
    `127.0.0.1:${port}`,
    "--helo",
    CLIENT_HELO,
    "--timeout",
    "30",
    ...args,
  ], { env: { TZ: timeZone } });
  const transcript = output.stdout + output.stderr;
  assert.equal(
    output.code,
    0,
    `swaks exited with ${output.code}: ${transcript}`,
  );
  assert.equal(output.stderr, "", "swaks printed nothing on stderr");
  assert.doesNotMatch(output.stdout, /^(\*\*\*|<\*\*)/m);
  return output;
}

/** Returns the last line of each reply in a swaks transcript. */
function swaksReplies(transcript: string): string[] {
  return transcript.split("\n")
    .filter((line) => /^<- {2}\d{3} /.test(line))
    .map((line) => line.slice("<-  ".length));
}

// ---------------------------------------------------------------------------
// nodemailer

/**
 * Creates an SMTP transport of nodemailer to 127.0.0.1:port, greeting as
 * CLIENT_HELO, that adds each warning or error it logs to `warnings`.
 */
function nodemailerTransport(port: number, warnings: string[]) {
  const ignore = () => {};
  const keep = (_entry: unknown, message: string, ...args: unknown[]) => {
    warnings.push(format(message, ...args));
  };
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    name: CLIENT_HELO,
    connectionTimeout: 30_000,
    socketTimeout: 30_000,
    logger: {
      trace: ignore,
      debug: ignore,
      info: ignore,
      warn: keep,
      error: keep,
      fatal: keep,
    },
  });
}

/**
 * Runs one client against the server through a WireRecorder, and returns
 * the client's result with the recorder, which keeps what it saw.
 */
async function recorded<T>(
  serverPort: number,
  work: (port: number) => Promise<T>,
): Promise<[T, WireRecorder]> {
  const recorder = new WireRecorder(serverPort);
  try {
    return [await work(recorder.port), recorder];
  } finally {
    await recorder.close();
  }
}

/** Sends one message with nodemailer through a WireRecorder. */
async function sendWithNodemailer(
  serverPort: number,
  mail: Parameters<ReturnType<typeof nodemailerTransport>["sendMail"]>[0],
) {
  const warnings: string[] = [];
  const [info, recorder] = await recorded(serverPort, async (port) => {
    const transport = nodemailerTransport(port, warnings);
    try {
      return await transport.sendMail(mail);
    } finally {
      transport.close();
    }
  });
  return { info, recorder, warnings };
}

// ---------------------------------------------------------------------------
// Python's smtplib

Deno.test("smtplib send_message stores every field", async () => {
  await withServer({}, async (server) => {
    const [result, recorder] = await recorded(
      server.port,
      (port) =>
        runSmtplib(
          port,
          `
        message = EmailMessage()
        message["From"] = "Alice Example <alice@example.com>"
        message["To"] = "Bob <bob@example.net>, carol@example.org"
        message["Cc"] = "dave@example.com"
        message["Bcc"] = "erin@example.net"
        message["Subject"] = inputs["subject"]
        message["Date"] = inputs["date"]
        message["Message-ID"] = make_msgid(domain="client.example")
        message.set_content(inputs["body"])
        with connect() as client:
            refused = client.send_message(message)
        report(
            refused=refused,
            message_id=message["Message-ID"],
            data=b64(client.message_bytes),
            data_reply=client.data_reply,
        )
        `,
          {
            subject: "Grüße 🎉",
            date: "Fri, 01 Mar 2024 10:04:05 +0200",
            body:
              "Hello Bob,\n.a line that starts with a dot\n..and two\nBye\n",
          },
        ),
    );

    assert.deepEqual(result.refused, {});
    const sent = fromBase64(result.data);
    const message = await onlyStoredMessage(server);
    assert.deepEqual(result.data_reply, [
      250,
      `2.0.0 OK stored as ${message.id}`,
    ]);
    assert.equal(message.sender, "alice@example.com");
    assert.deepEqual(message.recipients, [
      "bob@example.net",
      "carol@example.org",
      "dave@example.com",
      "erin@example.net",
    ]);
    assert.equal(message.subject, "Grüße 🎉");
    assert.equal(message.date?.toISOString(), "2024-03-01T08:04:05.000Z");
    assertDateColumn(message, sent);
    assert.equal(
      message.body,
      "Hello Bob,\n.a line that starts with a dot\n..and two\nBye\n",
    );
    assertSessionColumns(message);

    // smtplib RFC 2047-encodes the subject and drops Bcc from the header.
    const sentText = latin1(sent);
    assert.match(sentText, /^Subject: =\?utf-8\?[bq]\?/im);
    assert.doesNotMatch(sentText, /^Bcc:/im);
    assert.deepEqual(clientBytes(message, "alice@example.com"), sent);
    assert.equal(
      headerValue(message.raw, "Message-ID"),
      result.message_id as string,
    );
    const rawText = latin1(message.raw);
    assert.equal(countMatches(rawText, "\r\n.a line that starts"), 1);
    assert.equal(countMatches(rawText, "\r\n..and two\r\n"), 1);

    // smtplib does not pipeline: each command waits for its reply. Its
    // verbs are lower case, and it declares the size it is about to send.
    const groups = recorder.commandGroups();
    assert.deepEqual(groups, [
      ["ehlo client.example"],
      [`mail FROM:<alice@example.com> size=${sent.length}`],
      ["rcpt TO:<bob@example.net>"],
      ["rcpt TO:<carol@example.org>"],
      ["rcpt TO:<erin@example.net>"],
      ["rcpt TO:<dave@example.com>"],
      ["data"],
    ]);
  });
});

Deno.test("smtplib null sender with 8BITMIME UTF-8 body", async () => {
  await withServer({}, async (server) => {
    const [result, recorder] = await recorded(
      server.port,
      (port) =>
        runSmtplib(
          port,
          `
        message = EmailMessage()
        message["From"] = "Mail Delivery System <mailer-daemon@example.com>"
        message["To"] = "alice@example.com"
        message["Subject"] = "Zustellbericht"
        message["Date"] = "Sat, 02 Mar 2024 23:30:00 -0500"
        message.set_content(inputs["body"], cte="8bit")
        data = message.as_bytes(policy=message.policy.clone(linesep="\\r\\n"))
        with connect() as client:
            refused = client.sendmail(
                "", ["alice@example.com"], data,
                mail_options=["BODY=8BITMIME"])
        report(refused=refused, data=b64(client.message_bytes))
        `,
          { body: "Grüße aus Köln 🎉\nЗдравствуйте, мир\n" },
        ),
    );

    assert.deepEqual(result.refused, {});
    const sent = fromBase64(result.data);
    const sentText = latin1(sent);
    assert.match(sentText, /^Content-Transfer-Encoding: 8bit\r$/im);
    assert.ok(
      Buffer.from(sent).includes(Buffer.from("Grüße aus Köln 🎉\r\n")),
      "the body went out as raw UTF-8",
    );

    const message = await onlyStoredMessage(server);
    assert.equal(message.sender, "");
    assert.deepEqual(message.recipients, ["alice@example.com"]);
    assert.equal(message.subject, "Zustellbericht");
    assert.equal(message.date?.toISOString(), "2024-03-03T04:30:00.000Z");
    assertDateColumn(message, sent);
    assert.equal(message.body, "Grüße aus Köln 🎉\nЗдравствуйте, мир\n");
    assert.deepEqual(clientBytes(message, ""), sent);
    assertSessionColumns(message);

    const groups = recorder.commandGroups();
    assert.deepEqual(groups[1], [
      `mail FROM:<> size=${sent.length} BODY=8BITMIME`,
    ]);
  });
});

Deno.test("smtplib gets 552 over MAX_MESSAGE_BYTES", async () => {
  await withServer({ maxMessageBytes: 2000 }, async (server) => {
    const result = await runSmtplib(
      server.port,
      `
      line = b"0123456789" * 7 + b"\\r\\n"
      big = b"Subject: too big\\r\\n\\r\\n" + line * 50
      small = b"Subject: small enough\\r\\n\\r\\nfits\\r\\n"
      outcome = {}

      # After EHLO, smtplib declares SIZE on MAIL and the server rejects it.
      with connect() as client:
          try:
              client.sendmail("alice@example.com", ["bob@example.net"], big)
              outcome["ehlo_big"] = "accepted"
          except smtplib.SMTPSenderRefused as error:
              outcome["ehlo_big"] = [
                  "SMTPSenderRefused", error.smtp_code,
                  error.smtp_error.decode("ascii"), error.sender]
          client.sendmail("alice@example.com", ["bob@example.net"], small)

      # After HELO, there is no SIZE, so the 552 comes at the end of DATA.
      with connect() as client:
          client.helo("${CLIENT_HELO}")
          try:
              client.sendmail("alice@example.com", ["carol@example.org"], big)
              outcome["helo_big"] = "accepted"
          except smtplib.SMTPDataError as error:
              outcome["helo_big"] = [
                  "SMTPDataError", error.smtp_code,
                  error.smtp_error.decode("ascii")]
          outcome["helo_big_sent"] = len(client.message_bytes)
          client.sendmail("alice@example.com", ["carol@example.org"], small)

      report(**outcome)
      `,
    );

    const refused = result.ehlo_big as unknown[];
    assert.ok(Array.isArray(refused), `ehlo_big: ${refused}`);
    assert.equal(refused[0], "SMTPSenderRefused");
    assert.equal(refused[1], 552);
    assert.match(refused[2] as string, /^5\.3\.4 /);
    assert.equal(refused[3], "alice@example.com");

    const dataError = result.helo_big as unknown[];
    assert.ok(Array.isArray(dataError), `helo_big: ${dataError}`);
    assert.equal(dataError[0], "SMTPDataError");
    assert.equal(dataError[1], 552);
    // No enhanced status code after HELO.
    assert.doesNotMatch(dataError[2] as string, /^\d\.\d/);
    assert.ok(
      (result.helo_big_sent as number) > 2000,
      "the whole message went out before the 552",
    );

    // Only the two small messages after each rejection are stored.
    const messages = await storedMessages(server);
    assert.deepEqual(
      messages.map((message) => [message.subject, message.recipients]),
      [
        ["small enough", ["bob@example.net"]],
        ["small enough", ["carol@example.org"]],
      ],
    );
    assert.equal(messages[0]!.body, "fits\n");
  });
});

// ---------------------------------------------------------------------------
// nodemailer

Deno.test("nodemailer multipart/alternative stores the text part", async () => {
  await withServer({}, async (server) => {
    const text = "Hello team,\n.dot line\n..two dots\nSee you\n";
    const { info, recorder, warnings } = await sendWithNodemailer(server.port, {
      from: '"Alice Example" <alice@example.com>',
      to: ["Bob <bob@example.net>", "carol@example.org"],
      cc: "dave@example.com",
      bcc: "erin@example.net",
      subject: "Grüße 🎉",
      date: new Date("2024-05-06T07:08:09Z"),
      text,
      html: "<p>Hello team,</p><p>See <b>you</b></p>",
    });

    assert.deepEqual(warnings, []);
    assert.deepEqual(info.accepted, [
      "bob@example.net",
      "carol@example.org",
      "dave@example.com",
      "erin@example.net",
    ]);
    assert.deepEqual(info.rejected, []);
    const message = await onlyStoredMessage(server);
    assert.equal(info.response, `250 2.0.0 OK stored as ${message.id}`);
    assert.equal(message.sender, "alice@example.com");
    assert.deepEqual(message.recipients, [
      "bob@example.net",
      "carol@example.org",
      "dave@example.com",
      "erin@example.net",
    ]);
    assert.equal(message.subject, "Grüße 🎉");
    assert.equal(message.date?.toISOString(), "2024-05-06T07:08:09.000Z");
    assert.equal(message.body, text);
    assertSessionColumns(message);

    const sent = recorder.messageData();
    const sentText = latin1(sent);
    assertDateColumn(message, sent);
    assert.match(sentText, /^Content-Type: multipart\/alternative;/im);
    assert.match(sentText, /^Subject: =\?UTF-8\?[BQ]\?/im);
    assert.deepEqual(clientBytes(message, "alice@example.com"), sent);
    assert.equal(headerValue(message.raw, "Message-ID"), info.messageId);
    const rawText = latin1(message.raw);
    assert.equal(countMatches(rawText, "\r\n.dot line\r\n"), 1);
    assert.equal(countMatches(rawText, "\r\n..two dots\r\n"), 1);

    // nodemailer pipelines: the whole envelope and DATA go out at once.
    assert.deepEqual(verbs(recorder.commandGroups()), [
      ["EHLO"],
      ["MAIL", "RCPT", "RCPT", "RCPT", "RCPT", "DATA"],
    ]);
  });
});

Deno.test("nodemailer HTML-only message stores the HTML's text", async () => {
  await withServer({}, async (server) => {
    const { info, recorder, warnings } = await sendWithNodemailer(server.port, {
      from: "reports@example.com",
      to: "bob@example.net",
      subject: "Quarterly report",
      html: "<html><head><title>Report</title><style>p{}</style></head>" +
        "<body><h1>Quarterly report</h1>" +
        "<p>Revenue &amp; costs<br>rose by 5&nbsp;%</p>" +
        "<ul><li>North</li><li>South</li></ul></body></html>",
    });

    assert.deepEqual(warnings, []);
    const message = await onlyStoredMessage(server);
    assert.equal(info.response, `250 2.0.0 OK stored as ${message.id}`);
    assert.equal(message.sender, "reports@example.com");
    assert.deepEqual(message.recipients, ["bob@example.net"]);
    assert.equal(message.subject, "Quarterly report");
    assert.equal(
      message.body,
      "Quarterly report\nRevenue & costs\nrose by 5\u00a0%\nNorth\nSouth",
    );
    const sent = recorder.messageData();
    assert.match(latin1(sent), /^Content-Type: text\/html/im);
    assertDateColumn(message, sent);
    assert.deepEqual(clientBytes(message, "reports@example.com"), sent);
    assert.equal(headerValue(message.raw, "Message-ID"), info.messageId);
    assertSessionColumns(message);
  });
});

Deno.test("nodemailer null sender from the envelope", async () => {
  await withServer({}, async (server) => {
    const { info, recorder, warnings } = await sendWithNodemailer(server.port, {
      from: "Mail Delivery System <mailer-daemon@example.com>",
      to: "alice@example.com",
      envelope: { from: "", to: ["alice@example.com"] },
      subject: "Undelivered Mail Returned to Sender",
      text: "Your message could not be delivered.\n",
    });

    assert.deepEqual(warnings, []);
    assert.deepEqual(info.envelope, { from: "", to: ["alice@example.com"] });
    const message = await onlyStoredMessage(server);
    assert.equal(message.sender, "");
    assert.deepEqual(message.recipients, ["alice@example.com"]);
    assert.equal(message.subject, "Undelivered Mail Returned to Sender");
    assert.equal(message.body, "Your message could not be delivered.\n");
    assertSessionColumns(message);
    const sent = recorder.messageData();
    assertDateColumn(message, sent);
    assert.deepEqual(clientBytes(message, ""), sent);
    assert.equal(headerValue(message.raw, "Message-ID"), info.messageId);
  });
});

Deno.test("nodemailer 5 MB attachment is stored byte-exact", async () => {
  await withServer({}, async (server) => {
    const attachment = new Uint8Array(5 * 1024 * 1024);
    for (let offset = 0; offset < attachment.length; offset += 65536) {
      crypto.getRandomValues(attachment.subarray(offset, offset + 65536));
    }
    const { info, recorder, warnings } = await sendWithNodemailer(server.port, {
      from: "alice@example.com",
      to: "bob@example.net",
      subject: "Backup",
      text: "The archive is attached.\n",
      attachments: [{
        filename: "backup.bin",
        content: Buffer.from(attachment),
        contentType: "application/octet-stream",
      }],
    });

    assert.deepEqual(warnings, []);
    const message = await onlyStoredMessage(server);
    assert.equal(info.response, `250 2.0.0 OK stored as ${message.id}`);
    assert.equal(message.sender, "alice@example.com");
    assert.deepEqual(message.recipients, ["bob@example.net"]);
    assert.equal(message.subject, "Backup");
    assert.equal(message.body, "The archive is attached.\n");
    assertSessionColumns(message);

    const sent = recorder.messageData();
    assertDateColumn(message, sent);
    assert.ok(sent.length > attachment.length, `sent ${sent.length} bytes`);
    assert.ok(
      Buffer.from(clientBytes(message, "alice@example.com")).equals(
        Buffer.from(sent),
      ),
      "raw holds the client's message bytes exactly",
    );

    const parsed = await PostalMime.parse(message.raw);
    assert.equal(parsed.attachments.length, 1);
    const stored = parsed.attachments[0]!;
    assert.equal(stored.filename, "backup.bin");
    assert.ok(
      Buffer.from(stored.content as ArrayBuffer).equals(
        Buffer.from(attachment),
      ),
      "the attachment decoded from raw equals the bytes sent",
    );
  });
});

// ---------------------------------------------------------------------------
// swaks

Deno.test("swaks sends a message without pipelining", async () => {
  await withServer({}, async (server) => {
    const [output, recorder] = await recorded(
      server.port,
      (port) =>
        runSwaks(port, [
          "--from",
          "alice@example.com",
          "--to",
          "bob@example.net,carol@example.org",
          "--header",
          "Subject: Hello from swaks",
          "--add-header",
          "Cc: carol@example.org",
          "--body",
          "First line\n.starts with a dot\nLast line",
        ], "IST-5:30"),
    );

    const message = await onlyStoredMessage(server);
    const replies = swaksReplies(output.stdout);
    assert.equal(replies.at(-2), `250 2.0.0 OK stored as ${message.id}`);
    assert.match(replies.at(-1) ?? "", /^221 2\.0\.0 /);
    assert.equal(message.sender, "alice@example.com");
    assert.deepEqual(message.recipients, [
      "bob@example.net",
      "carol@example.org",
    ]);
    assert.equal(message.subject, "Hello from swaks");
    // swaks ends the body with two empty lines of its own.
    assert.equal(
      message.body,
      "First line\n.starts with a dot\nLast line\n\n\n",
    );
    assertSessionColumns(message);

    assert.match(output.stdout, /^ -> \.\.starts with a dot$/m);
    const rawText = latin1(message.raw);
    assert.equal(countMatches(rawText, "\r\n.starts with a dot\r\n"), 1);

    // swaks wrote the Date header in local time, here UTC+05:30.
    const sent = recorder.messageData();
    assert.match(assertDateColumn(message, sent), / \+0530$/);
    assert.deepEqual(clientBytes(message, "alice@example.com"), sent);
    const messageId = /^ -> Message-Id: (.*)$/m.exec(output.stdout)?.[1];
    assert.ok(messageId !== undefined, "swaks showed its Message-Id");
    assert.equal(headerValue(message.raw, "Message-Id"), messageId);

    assert.deepEqual(verbs(recorder.commandGroups()), [
      ["EHLO"],
      ["MAIL"],
      ["RCPT"],
      ["RCPT"],
      ["DATA"],
    ]);
  });
});

Deno.test("swaks --pipeline sends the null sender", async () => {
  await withServer({}, async (server) => {
    const [output, recorder] = await recorded(
      server.port,
      (port) =>
        runSwaks(port, [
          "--pipeline",
          "--from",
          "<>",
          "--to",
          "postmaster@example.net",
          "--header",
          "Subject: Delivery report",
          "--body",
          "pipelined body",
        ]),
    );

    const message = await onlyStoredMessage(server);
    assert.equal(message.sender, "");
    assert.deepEqual(message.recipients, ["postmaster@example.net"]);
    assert.equal(message.subject, "Delivery report");
    assert.equal(message.body, "pipelined body\n\n\n");
    assertSessionColumns(message);
    assert.deepEqual(
      swaksReplies(output.stdout).map((line) => line.slice(0, 3)),
      ["220", "250", "250", "250", "354", "250", "221"],
    );
    const sent = recorder.messageData();
    assertDateColumn(message, sent);
    assert.deepEqual(clientBytes(message, ""), sent);

    assert.deepEqual(verbs(recorder.commandGroups()), [
      ["EHLO"],
      ["MAIL", "RCPT", "DATA"],
    ]);
  });
});

Deno.test("swaks --quit-after RCPT stores nothing", async () => {
  await withServer({}, async (server) => {
    const quit = await runSwaks(server.port, [
      "--quit-after",
      "RCPT",
      "--from",
      "alice@example.com",
      "--to",
      "bob@example.net",
    ]);
    const codes = swaksReplies(quit.stdout).map((line) => line.slice(0, 3));
    assert.deepEqual(codes, ["220", "250", "250", "250", "221"]);
    assert.deepEqual(await storedMessages(server), []);

    // The same server stores the next full message, so the empty table
    // above comes from the quit and not from a broken store.
    const full = await runSwaks(server.port, [
      "--from",
      "alice@example.com",
      "--to",
      "bob@example.net",
      "--header",
      "Subject: after the quit",
    ]);
    const message = await onlyStoredMessage(server);
    assert.ok(
      swaksReplies(full.stdout).includes(
        `250 2.0.0 OK stored as ${message.id}`,
      ),
    );
    assert.equal(message.subject, "after the quit");
    assert.deepEqual(message.recipients, ["bob@example.net"]);
  });
});
