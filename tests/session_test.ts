import assert from "node:assert/strict";
import type { CommandLine } from "../src/line_reader.ts";
import { Session, type Step } from "../src/session.ts";
import type { Store } from "../src/store.ts";
import { createTestDatabase, type TestDatabase } from "./helpers/database.ts";
import { latin1 } from "./helpers/smtp_client.ts";
import { testConfig } from "./helpers/server.ts";

const MAX_BYTES = 10 * 1024 * 1024;

function newSession(store: Store, maxRecipients = 3): Session {
  return new Session({
    config: testConfig({ maxMessageBytes: MAX_BYTES, maxRecipients }),
    store,
    clientAddress: "192.0.2.7",
    id: "test01",
  });
}

function commandLine(text: string): CommandLine {
  return { kind: "line", bytes: latin1(text) };
}

/** The reply as sent: code, then the enhanced status code when present. */
function summary(session: Session, step: Step): string {
  const lastLine = session.format(step.reply).trimEnd().split("\r\n").at(-1)!;
  const match = /^(\d{3}) (\d\.\d{1,3}\.\d{1,3} )?/.exec(lastLine)!;
  return match[2] === undefined ? match[1]! : `${match[1]} ${match[2].trim()}`;
}

/** Feeds the commands and returns the summary of each reply. */
async function run(
  session: Session,
  commands: readonly string[],
): Promise<string[]> {
  const replies: string[] = [];
  for (const command of commands) {
    replies.push(
      summary(session, await session.handleCommand(commandLine(command))),
    );
  }
  return replies;
}

const N = MAX_BYTES;
const MAIL = "MAIL FROM:<s@example.com>";

/** [name, commands, expected reply of the last command]. */
const COMMAND_CASES: [string, string[], string][] = [
  ["unknown verb", ["FOO bar"], "500"],
  ["empty line", [""], "500"],
  ["line of spaces", ["   "], "500"],
  ["NUL in a command", ["NO\0OP"], "500"],
  ["non-ASCII byte", ["NOOP \xe9"], "500"],
  ["non-ASCII after EHLO", ["EHLO c.example", "VRFY \xe9"], "500 5.5.2"],
  ["SEND", ["SEND FROM:<a@b.example>"], "502"],
  ["SOML", ["SOML FROM:<a@b.example>"], "502"],
  ["SAML", ["SAML FROM:<a@b.example>"], "502"],
  ["TURN", ["TURN"], "502"],
  ["STARTTLS without TLS", ["EHLO c.example", "STARTTLS"], "502 5.5.1"],
  ["AUTH not offered", ["EHLO c.example", "AUTH PLAIN"], "502 5.5.1"],
  ["BDAT not offered", ["EHLO c.example", "BDAT 10 LAST"], "502 5.5.1"],
  ["lowercase verb", ["helo c.example"], "250"],
  ["HELO without argument", ["HELO"], "501"],
  ["HELO with a bad domain", ["HELO bad_domain!"], "501"],
  ["HELO with two words", ["HELO a.example b.example"], "501"],
  ["HELO with bad IPv4 literal", ["HELO [192.0.2.300]"], "501"],
  ["HELO with IPv4 literal", ["HELO [192.0.2.1]"], "250"],
  ["EHLO with IPv6 literal", ["EHLO [ipv6:2001:db8::1]"], "250"],
  ["EHLO single label", ["EHLO localhost"], "250"],
  ["second HELO", ["HELO c.example", "HELO c.example"], "503"],
  ["second EHLO", ["EHLO c.example", "EHLO c.example"], "503 5.5.1"],
  ["HELO after EHLO, no argument", ["EHLO c.example", "HELO"], "503 5.5.1"],
  ["MAIL before HELO", [MAIL], "503"],
  ["nested MAIL", ["EHLO c.example", MAIL, MAIL], "503 5.5.1"],
  [
    "nested MAIL with bad path",
    ["EHLO c.example", MAIL, "MAIL FROM:<bad"],
    "503 5.5.1",
  ],
  [
    "MAIL with bad path",
    ["EHLO c.example", "MAIL FROM:<bad address>"],
    "501 5.1.7",
  ],
  [
    "MAIL without FROM",
    ["EHLO c.example", "MAIL <s@example.com>"],
    "501 5.1.7",
  ],
  ["MAIL null sender", ["EHLO c.example", "MAIL FROM:<>"], "250 2.1.0"],
  [
    "MAIL space after colon",
    ["EHLO c.example", "MAIL FROM: <s@example.com>"],
    "250 2.1.0",
  ],
  [
    "MAIL without brackets",
    ["EHLO c.example", "MAIL FROM:s@example.com"],
    "250 2.1.0",
  ],
  ["MAIL source route", [
    "EHLO c.example",
    "MAIL FROM:<@a.example,@b.example:u@c.example>",
  ], "250 2.1.0"],
  ["MAIL SIZE at limit", ["EHLO c.example", `${MAIL} SIZE=${N}`], "250 2.1.0"],
  [
    "MAIL SIZE over limit",
    ["EHLO c.example", `${MAIL} SIZE=${N + 1}`],
    "552 5.3.4",
  ],
  [
    "MAIL SIZE not a number",
    ["EHLO c.example", `${MAIL} SIZE=abc`],
    "501 5.5.4",
  ],
  ["MAIL SIZE without value", ["EHLO c.example", `${MAIL} SIZE`], "501 5.5.4"],
  ["MAIL SIZE twice", ["EHLO c.example", `${MAIL} SIZE=1 SIZE=2`], "501 5.5.4"],
  [
    "MAIL BODY=8BITMIME",
    ["EHLO c.example", "MAIL FROM:<> BODY=8BITMIME"],
    "250 2.1.0",
  ],
  [
    "MAIL BODY=8bitMIME",
    ["EHLO c.example", `${MAIL} BODY=8bitMIME`],
    "250 2.1.0",
  ],
  ["MAIL body=7bit", ["EHLO c.example", `${MAIL} body=7bit`], "250 2.1.0"],
  [
    "MAIL BODY=BINARYMIME",
    ["EHLO c.example", `${MAIL} BODY=BINARYMIME`],
    "555 5.5.4",
  ],
  ["MAIL BODY=unknown", ["EHLO c.example", `${MAIL} BODY=9BIT`], "501 5.5.4"],
  [
    "MAIL DSN parameters",
    ["EHLO c.example", `${MAIL} RET=FULL ENVID=abc`],
    "555 5.5.4",
  ],
  ["MAIL parameter after HELO", ["HELO c.example", `${MAIL} SIZE=10`], "555"],
  [
    "MAIL SIZE of 21 digits",
    ["EHLO c.example", `${MAIL} SIZE=999999999999999999999`],
    "552 5.3.4",
  ],
  [
    "MAIL bad SIZE after unknown",
    ["EHLO c.example", `${MAIL} FOO=1 SIZE=abc`],
    "501 5.5.4",
  ],
  [
    "MAIL bad SIZE before unknown",
    ["EHLO c.example", `${MAIL} SIZE=abc FOO=1`],
    "501 5.5.4",
  ],
  [
    "MAIL BINARYMIME after bad BODY",
    ["EHLO c.example", `${MAIL} BODY=BINARYMIME SIZE=x`],
    "501 5.5.4",
  ],
  [
    "MAIL unknown and SIZE over limit",
    ["EHLO c.example", `${MAIL} SIZE=${N + 1} FOO=1`],
    "555 5.5.4",
  ],
  ["RCPT before HELO", ["RCPT TO:<r@example.net>"], "503"],
  [
    "RCPT before MAIL",
    ["EHLO c.example", "RCPT TO:<r@example.net>"],
    "503 5.5.1",
  ],
  ["RCPT null path", ["EHLO c.example", MAIL, "RCPT TO:<>"], "501 5.1.3"],
  [
    "RCPT postmaster",
    ["EHLO c.example", MAIL, "RCPT TO:<Postmaster>"],
    "250 2.1.5",
  ],
  [
    "RCPT bad address",
    ["EHLO c.example", MAIL, "RCPT TO:<bad address>"],
    "501 5.1.3",
  ],
  ["RCPT 64-octet local part", [
    "EHLO c.example",
    MAIL,
    `RCPT TO:<${"a".repeat(64)}@example.net>`,
  ], "250 2.1.5"],
  ["RCPT 65-octet local part", [
    "EHLO c.example",
    MAIL,
    `RCPT TO:<${"b".repeat(65)}@example.net>`,
  ], "501 5.1.3"],
  ["RCPT with parameter", [
    "EHLO c.example",
    MAIL,
    "RCPT TO:<r@example.net> NOTIFY=NEVER",
  ], "555 5.5.4"],
  ["RCPT over the limit", [
    "EHLO c.example",
    MAIL,
    "RCPT TO:<a@x.example>",
    "RCPT TO:<b@x.example>",
    "RCPT TO:<c@x.example>",
    "RCPT TO:<d@x.example>",
  ], "452 4.5.3"],
  ["RCPT duplicate at the limit", [
    "EHLO c.example",
    MAIL,
    "RCPT TO:<a@x.example>",
    "RCPT TO:<b@x.example>",
    "RCPT TO:<c@x.example>",
    "RCPT TO:<A@x.example>",
  ], "250 2.1.5"],
  ["DATA before MAIL", ["EHLO c.example", "DATA"], "503 5.5.1"],
  ["DATA before RCPT", ["EHLO c.example", MAIL, "DATA"], "503 5.5.1"],
  ["DATA before HELO", ["DATA"], "503"],
  ["DATA with argument", [
    "EHLO c.example",
    MAIL,
    "RCPT TO:<r@example.net>",
    "DATA x",
  ], "501 5.5.4"],
  ["DATA", ["EHLO c.example", MAIL, "RCPT TO:<r@example.net>", "DATA"], "354"],
  ["RSET", ["EHLO c.example", MAIL, "RSET"], "250 2.0.0"],
  ["RSET clears the envelope", [
    "EHLO c.example",
    MAIL,
    "RSET",
    "RCPT TO:<r@example.net>",
  ], "503 5.5.1"],
  ["RSET keeps the greeting", ["EHLO c.example", "RSET", MAIL], "250 2.1.0"],
  ["RSET with argument", ["RSET x"], "500"],
  ["NOOP", ["NOOP"], "250"],
  ["NOOP with argument", ["EHLO c.example", "NOOP x"], "500 5.5.4"],
  ["QUIT with argument", ["QUIT now"], "500"],
  ["session open after QUIT with argument", ["QUIT now", "NOOP"], "250"],
  ["QUIT", ["EHLO c.example", "QUIT"], "221 2.0.0"],
  ["HELP", ["HELP"], "214"],
  ["HELP MAIL", ["EHLO c.example", "HELP mail"], "214 2.0.0"],
  ["HELP unknown topic", ["HELP bogus"], "214"],
  ["VRFY without argument", ["VRFY"], "501"],
  ["EXPN without argument", ["EXPN"], "501"],
];

Deno.test("session command replies", async (t) => {
  const database = await createTestDatabase();
  try {
    for (const [name, commands, expected] of COMMAND_CASES) {
      await t.step(name, async () => {
        const replies = await run(newSession(database.store), commands);
        assert.equal(replies.at(-1), expected);
      });
    }
  } finally {
    await database.close();
  }
});

Deno.test("session over-long and bare-ending lines get 500", async () => {
  const database = await createTestDatabase();
  try {
    const session = newSession(database.store);
    await run(session, ["EHLO c.example"]);
    const tooLong = await session.handleCommand({ kind: "tooLong" });
    assert.equal(summary(session, tooLong), "500 5.5.2");
    const bare = await session.handleCommand({ kind: "bareLineEnding" });
    assert.equal(summary(session, bare), "500 5.5.2");
    assert.equal(bare.next, "command");
  } finally {
    await database.close();
  }
});

Deno.test("session QUIT closes and others continue", async () => {
  const database = await createTestDatabase();
  try {
    const session = newSession(database.store);
    const quit = await session.handleCommand(commandLine("QUIT"));
    assert.equal(quit.next, "close");
    const quitWithArgument = await session.handleCommand(commandLine("QUIT x"));
    assert.equal(quitWithArgument.next, "command");
    const data = await (async () => {
      await run(session, ["HELO c.example", MAIL, "RCPT TO:<r@example.net>"]);
      return await session.handleCommand(commandLine("DATA"));
    })();
    assert.equal(data.next, "data");
  } finally {
    await database.close();
  }
});

Deno.test("EHLO lists the offered extensions", async () => {
  const database = await createTestDatabase();
  try {
    const session = newSession(database.store);
    const step = await session.handleCommand(commandLine("EHLO c.example"));
    const lines = session.format(step.reply).trimEnd().split("\r\n");
    assert.match(lines[0]!, /^250-mx\.test\.example /);
    assert.deepEqual(lines.slice(1), [
      "250-PIPELINING",
      `250-SIZE ${MAX_BYTES}`,
      "250-8BITMIME",
      "250-ENHANCEDSTATUSCODES",
      "250 HELP",
    ]);
  } finally {
    await database.close();
  }
});

async function openTransaction(session: Session): Promise<void> {
  await run(session, [
    "EHLO c.example",
    MAIL,
    "RCPT TO:<r@example.net>",
    "DATA",
  ]);
}

Deno.test("rejected data keeps the envelope", async (t) => {
  const database = await createTestDatabase();
  try {
    const rejections = [
      ["tooBig", "552 5.3.4"],
      ["bareLineEnding", "550 5.6.0"],
      ["lineTooLong", "500 5.5.2"],
    ] as const;
    for (const [kind, expected] of rejections) {
      await t.step(kind, async () => {
        const session = newSession(database.store);
        await openTransaction(session);
        const step = await session.receiveData({ kind });
        assert.equal(summary(session, step), expected);
        assert.deepEqual(await run(session, ["DATA"]), ["354"]);
      });
    }
    const [{ count }] = await database.query(
      "SELECT COUNT(*) AS count FROM messages",
    ) as [{ count: number }];
    assert.equal(Number(count), 0);
  } finally {
    await database.close();
  }
});

Deno.test("stored data consumes the envelope", async () => {
  const database = await createTestDatabase();
  try {
    const session = newSession(database.store);
    await openTransaction(session);
    const step = await session.receiveData({
      kind: "data",
      bytes: latin1("Subject: hi\r\n\r\nbody\r\n"),
    });
    assert.equal(summary(session, step), "250 2.0.0");
    assert.match(step.reply.lines[0]!, /\d+/);
    assert.equal(session.messagesStored, 1);
    assert.deepEqual(await run(session, ["DATA"]), ["503 5.5.1"]);
    assert.deepEqual(await run(session, [MAIL]), ["250 2.1.0"]);
  } finally {
    await database.close();
  }
});

async function seedDirectory(database: TestDatabase): Promise<void> {
  await database.query(
    "INSERT INTO users (address, name) VALUES (?, ?), (?, ?), (?, ?), (?, ?)",
    [
      "ann@example.com",
      "Ann Smith",
      "bob@example.com",
      "Bob Jones",
      "bob@example.org",
      "Robert Jones",
      "zoe@example.com",
      "Zoë Ünger",
    ],
  );
  await database.query(
    "INSERT INTO mail_groups (name) VALUES ('staff'), ('empty')",
  );
  await database.query(
    "INSERT INTO group_members (group_id, address) SELECT id, ? FROM mail_groups WHERE name = 'staff'",
    ["ann@example.com"],
  );
  await database.query(
    "INSERT INTO group_members (group_id, address) SELECT id, ? FROM mail_groups WHERE name = 'staff'",
    ["outside@example.net"],
  );
}

Deno.test("VRFY and EXPN look users and groups up", async (t) => {
  const database = await createTestDatabase();
  try {
    await seedDirectory(database);
    const cases: [string, string, string[]][] = [
      ["VRFY full address", "VRFY ann@example.com", [
        "250 2.1.5 Ann Smith <ann@example.com>",
      ]],
      ["VRFY local part", "VRFY Ann", [
        "250 2.1.5 Ann Smith <ann@example.com>",
      ]],
      ["VRFY full name", "VRFY ann smith", [
        "250 2.1.5 Ann Smith <ann@example.com>",
      ]],
      ["VRFY quoted name", 'VRFY "Ann Smith"', [
        "250 2.1.5 Ann Smith <ann@example.com>",
      ]],
      ["VRFY non-ASCII name", "VRFY zoe", [
        "250 2.1.5 =?UTF-8?B?Wm/DqyDDnG5nZXI=?= <zoe@example.com>",
      ]],
      ["VRFY ambiguous", "VRFY bob", ["553 5.1.4"]],
      ["VRFY no match", "VRFY nobody", ["550 5.1.1"]],
      ["EXPN group", "EXPN Staff", [
        "250-2.1.5 Ann Smith <ann@example.com>",
        "250 2.1.5 <outside@example.net>",
      ]],
      ["EXPN empty group", "EXPN empty", ["550 5.1.1"]],
      ["EXPN unknown group", "EXPN nothing", ["550 5.1.1"]],
    ];
    for (const [name, command, expected] of cases) {
      await t.step(name, async () => {
        const session = newSession(database.store);
        await run(session, ["EHLO c.example"]);
        const step = await session.handleCommand(commandLine(command));
        const lines = session.format(step.reply).trimEnd().split("\r\n");
        if (expected.length === 1 && !expected[0]!.includes("<")) {
          assert.equal(summary(session, step), expected[0]);
        } else {
          assert.deepEqual(lines, expected);
        }
      });
    }
  } finally {
    await database.close();
  }
});
